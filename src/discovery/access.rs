//! What `preflight` asks of AWS before any discovery: which credentials the
//! SDK's chain found (their source only, never a secret), and each Describe
//! call discovery makes, once, to tell a denied action from a granted one.

use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use super::aws::Clients;

/// Where the SDK's credential chain found credentials, in an operator's words.
///
/// # Errors
/// The chain's failure, one line.
pub async fn credentials_source(config: &crate::config::AwsConfig) -> Result<String, String> {
    let sdk = super::aws::sdk_config(config).await;
    let provider = sdk.credentials_provider().ok_or("no credentials provider is configured")?;
    let credentials = tokio::time::timeout(config.call_timeout.as_std(), provider.provide_credentials())
        .await
        .map_err(|_| format!("the credential chain did not answer within aws.call_timeout ({})", config.call_timeout))?
        .map_err(|e| super::aws::one_line(&e))?;
    let features = credentials.get_property::<Vec<AwsCredentialFeature>>().cloned().unwrap_or_default();
    Ok(features.iter().find_map(describe).unwrap_or("the SDK's default chain").to_string())
}

fn describe(feature: &AwsCredentialFeature) -> Option<&'static str> {
    use AwsCredentialFeature as F;
    Some(match feature {
        F::CredentialsEnvVars => "environment variables (AWS_ACCESS_KEY_ID)",
        F::CredentialsImds => "the instance role (IMDS)",
        F::CredentialsEnvVarsStsWebIdToken | F::CredentialsStsAssumeRoleWebId => "a web identity token (IRSA / EKS)",
        F::CredentialsProfile | F::CredentialsProfileSourceProfile | F::CredentialsProfileNamedProvider => {
            "a profile in ~/.aws/config or ~/.aws/credentials"
        }
        F::CredentialsProfileSso | F::CredentialsSso => "an SSO session",
        F::CredentialsProfileProcess | F::CredentialsProcess => "a credential_process",
        F::CredentialsHttp => "a container credentials endpoint (ECS)",
        F::CredentialsStsAssumeRole => "an assumed role",
        _ => return None,
    })
}

/// What one Describe call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Answered (a "not found" for a probe's placeholder ARN counts: the
    /// action was authorized).
    Granted,
    /// Refused by IAM: its code and message.
    Denied(String),
    /// Another failure (endpoint, throttling): the action is not proven either way.
    Failed(String),
}

/// Every action discovery needs, in `infra/iam-policy.json`'s spelling.
pub const ACTIONS: [&str; 7] = [
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribePolicies",
    "ec2:DescribeInstances",
];

/// A syntactically valid ARN that names nothing: a granted call answers
/// "not found", a denied one AccessDenied.
const PLACEHOLDER_LB: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/fleetscrape-preflight/0000000000000000";
const PLACEHOLDER_TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/fleetscrape-preflight/0000000000000000";

fn access<E, R>(result: Result<impl Sized, SdkError<E, R>>) -> Access
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let Err(error) = result else { return Access::Granted };
    match error.as_service_error().and_then(ProvideErrorMetadata::code) {
        Some(code) if is_denial(code) => {
            let message = error.as_service_error().and_then(ProvideErrorMetadata::message).unwrap_or_default();
            Access::Denied(format!("{code}: {message}"))
        }
        // Any other answer of the service: the request was authorized.
        Some(_) => Access::Granted,
        None => Access::Failed(super::aws::one_line(&error)),
    }
}

/// IAM's refusals, as the three services spell them.
fn is_denial(code: &str) -> bool {
    matches!(code, "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedAccess")
}

/// Makes each call of [`ACTIONS`] once, in that order.
pub async fn probe(clients: &Clients) -> Vec<(&'static str, Access)> {
    let elb = &clients.elbv2;
    let results = [
        access(elb.describe_load_balancers().page_size(1).send().await),
        access(elb.describe_listeners().load_balancer_arn(PLACEHOLDER_LB).send().await),
        access(elb.describe_target_groups().page_size(1).send().await),
        access(elb.describe_target_health().target_group_arn(PLACEHOLDER_TG).send().await),
        access(clients.autoscaling.describe_auto_scaling_groups().max_records(1).send().await),
        access(clients.autoscaling.describe_policies().max_records(1).send().await),
        access(clients.ec2.describe_instances().max_results(5).send().await),
    ];
    ACTIONS.into_iter().zip(results).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iam_refusals_are_told_from_other_errors() {
        for code in ["AccessDenied", "AccessDeniedException", "UnauthorizedOperation"] {
            assert!(super::is_denial(code), "{code}");
        }
        for code in ["LoadBalancerNotFound", "TargetGroupNotFound", "Throttling", "ValidationError"] {
            assert!(!super::is_denial(code), "{code}");
        }
    }
}
