//! AWS SDK set-up: one shared configuration (region, endpoint, retries,
//! timeouts) and the three clients discovery uses.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use super::Error;
use crate::config::AwsConfig;

/// The clients for the three APIs discovery reads.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Elastic Load Balancing v2.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// EC2 Auto Scaling.
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// Where the calls go, for error messages.
    pub endpoint: String,
    /// Requests sent, by operation, since the counter was last taken.
    pub(super) calls: ApiCallCounter,
    /// `aws.call_timeout`, for error messages.
    pub call_timeout: crate::duration::PromDuration,
}

impl Clients {
    /// Builds the clients from `config`, falling back to the SDK's usual
    /// chains (environment, profile, IMDS) for what the config leaves unset.
    ///
    /// # Errors
    /// [`Error::NoRegion`] when no region is configured anywhere.
    pub async fn new(config: &AwsConfig) -> Result<Self, Error> {
        let sdk = sdk_config(config).await;
        let region = sdk.region().ok_or(Error::NoRegion)?.to_string();
        let endpoint = match sdk.endpoint_url() {
            Some(url) => format!("{url} (region {region})"),
            None => format!("AWS region {region}"),
        };
        Ok(Self {
            elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk).interceptor(WholeResponse).build(),
            ),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&sdk).interceptor(WholeResponse).build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&sdk).interceptor(WholeResponse).build(),
            ),
            endpoint,
            calls: ApiCallCounter::default(),
            call_timeout: config.call_timeout,
        })
    }
}

/// Refuses a successful answer whose XML document is cut short. The SDK's
/// XML reader takes a truncated `DescribeLoadBalancers` answer as a complete
/// one with fewer (or no) load balancers, and discovery would publish a
/// topology without them: every target dropped by one bad response (found by
/// the fault-injection test, tests/faults.rs). Every answer of the three
/// Query-protocol services is one `<…Response>` element.
#[derive(Debug)]
struct WholeResponse;

impl aws_sdk_ec2::config::Intercept for WholeResponse {
    fn name(&self) -> &'static str {
        "fleetscrape::WholeResponse"
    }

    // After deserialization: only then is the body read into memory.
    fn read_after_deserialization(
        &self,
        context: &aws_sdk_ec2::config::interceptors::AfterDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_ec2::config::RuntimeComponents,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), Box<dyn StdError + Send + Sync>> {
        let response = context.response();
        if !response.status().is_success() {
            return Ok(());
        }
        match response.body().bytes() {
            Some(body) if !is_whole_response(body) => {
                Err(format!("truncated response ({} bytes, the XML document does not end)", body.len()).into())
            }
            _ => Ok(()),
        }
    }
}

/// Whether `body` ends with the closing tag of a `…Response` element.
fn is_whole_response(body: &[u8]) -> bool {
    body.trim_ascii_end().ends_with(b"Response>")
}

/// The SDK configuration discovery's clients are built from.
pub(super) async fn sdk_config(config: &AwsConfig) -> SdkConfig {
    let retry = RetryConfig::standard().with_max_attempts(config.max_attempts);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout.as_std())
        // The whole call, retries included: an endpoint that accepts and
        // never answers fails after call_timeout, not max_attempts of them.
        .operation_timeout(config.call_timeout.as_std())
        .operation_attempt_timeout(config.call_timeout.as_std())
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry).timeout_config(timeouts);
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Counts the API requests discovery makes (one per page, retries aside),
/// for logs and for fleetscrape's own metrics.
#[derive(Debug, Clone, Default)]
pub(super) struct ApiCallCounter(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl ApiCallCounter {
    pub(super) fn record(&self, operation: &'static str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
        }
    }

    /// Returns the counts so far and resets them.
    pub(super) fn take(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().map(|mut counts| std::mem::take(&mut *counts)).unwrap_or_default()
    }
}

/// Turns an SDK error into one line naming the operation: the service's code
/// and message for a service error, else the chain of causes.
pub(super) fn api_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> Error
where
    E: StdError + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    if no_credentials(&error) {
        return Error::NoCredentials;
    }
    if matches!(error, SdkError::TimeoutError(_)) {
        return Error::CallTimeout { operation, limit: None };
    }
    let message = match error.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(text)) => format!("{code}: {text}"),
            (Some(code), None) => code.to_string(),
            _ => causes(&error),
        },
        None => causes(&error),
    };
    Error::Api { operation, message }
}

/// Whether the SDK's credential chain found nothing: the one cause that
/// retrying cannot mend and whose chain text is a paragraph.
fn no_credentials(error: &(dyn StdError + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(CredentialsError::CredentialsNotLoaded(_)) = current.downcast_ref::<CredentialsError>() {
            return true;
        }
        next = current.source();
    }
    false
}

/// An error and its causes on one line (for the credential chain's
/// multi-line messages).
pub(super) fn one_line(error: &(dyn StdError + 'static)) -> String {
    causes(error)
}

/// The error and its sources joined with ": ", skipping a cause whose text
/// the previous one already contains.
fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        // Some causes (the credential chain) span lines; the message must not.
        let text = current.to_string().lines().map(str::trim).collect::<Vec<_>>().join(" ");
        if !parts.last().is_some_and(|previous| previous.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_response_cut_short_is_not_whole() {
        let whole = b"<DescribeLoadBalancersResponse xmlns=\"x\"><DescribeLoadBalancersResult/></DescribeLoadBalancersResponse>\n";
        assert!(super::is_whole_response(whole));
        assert!(!super::is_whole_response(&whole[..whole.len() / 2]));
        assert!(!super::is_whole_response(b""));
    }
}
