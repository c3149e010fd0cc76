//! Issue #11, item 1: the exposition corpus (`tests/data/exposition/`, plus
//! the large hostile payloads built here) served over loopback HTTP to
//! fleetscrape's scrape client and parser and to Debian's Prometheus 2.42,
//! with the same limits. Accept/reject and the samples kept must agree, but
//! for the differences listed in [`DIFFERENCES`] (each justified in
//! docs/reliability.md). Never a panic; every accepted payload reads back
//! the same from its own rendering.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use fleetscrape::exposition::{self, check};
use fleetscrape::scrape::{ConvertOptions, Fetch, FetchRequest, HttpClient};

/// Cases where fleetscrape and Prometheus 2.42 decide differently, on purpose.
/// `(case, what fleetscrape does)`; docs/reliability.md says why.
const DIFFERENCES: &[(&str, &str)] = &[
    ("hostile_binary_garbage", "rejects a body that is not UTF-8 (Prometheus: up, 0 samples)"),
    ("hostile_invalid_utf8_comment", "rejects a body that is not UTF-8, even in a comment"),
    ("hostile_nul_line", "rejects a NUL outside a label value (Prometheus's lexer ends the payload there)"),
    ("hostile_nul_after_newline", "the same, after a good line"),
    ("label_missing_comma", "rejects `a{x=\"1\" y=\"2\"}`, which promparse lets through"),
    ("label_raw_newline", "rejects a raw line feed inside a label value (the format says escape it as \\n)"),
    (
        "hostile_many_labels_64",
        "label_limit counts the payload's labels; Prometheus adds __name__ and the target's labels",
    ),
];

/// One payload and how it is served.
struct Case {
    name: String,
    body: Vec<u8>,
    gzip: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/exposition")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The committed files, then the payloads too large to commit.
fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "prom"))
        .map(|path| Case {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            body: std::fs::read(&path).unwrap(),
            gzip: false,
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    let big_value = format!("a{{x=\"{}\"}} 1\n", "v".repeat(1 << 20)).into_bytes();
    let million: String = (0..1_000_000).map(|i| format!("a{{i=\"{i}\"}} 1\n")).collect();
    let node =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/node_exporter-1.5.0-full.prom"))
            .unwrap();
    let crlf_node = String::from_utf8(node.clone()).unwrap().replace('\n', "\r\n").into_bytes();
    cases.extend([
        Case { name: "big_label_value_1mb".into(), body: big_value, gzip: false },
        Case { name: "big_series_1e6".into(), body: million.into_bytes(), gzip: false },
        // 256 MiB of one byte: about 250 KiB on the wire, 16× the body limit decoded.
        Case { name: "big_gzip_bomb".into(), body: gzip(&vec![b'a'; 256 << 20]), gzip: true },
        Case { name: "big_gzip_node_exporter".into(), body: gzip(&node), gzip: true },
        Case { name: "big_gzip_truncated".into(), body: gzip(&node)[..4000].to_vec(), gzip: true },
        Case { name: "big_gzip_not_gzip".into(), body: node.clone(), gzip: true },
        Case { name: "big_node_exporter".into(), body: node, gzip: false },
        Case { name: "big_node_exporter_crlf".into(), body: crlf_node, gzip: false },
    ]);
    cases
}

/// Serves `/c/NAME` for every case, as node_exporter would (text/plain 0.0.4).
async fn serve(cases: &Arc<Vec<Case>>) -> String {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/c/{name}",
            axum::routing::get(|State(cases): State<Arc<Vec<Case>>>, UrlPath(name): UrlPath<String>| async move {
                let Some(case) = cases.iter().find(|c| c.name == name) else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                let mut response =
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], case.body.clone())
                        .into_response();
                if case.gzip {
                    response.headers_mut().insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
                }
                response
            }),
        )
        .with_state(Arc::clone(cases));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// A sample as both sides report it: name, labels, value (NaN equal to NaN).
type Series = (String, BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Default)]
struct Verdict {
    accepted: bool,
    /// Series and value bits of an accepted payload's samples without a timestamp.
    samples: BTreeMap<Series, u64>,
    /// Some sample carried a timestamp: Prometheus keeps those only inside
    /// its head block's time range, so only accept/reject compares.
    timestamped: bool,
}

fn bits(value: f64) -> u64 {
    if value.is_nan() { f64::NAN.to_bits() } else { value.to_bits() }
}

/// The instance the payloads are attributed to (attribution itself is not
/// what this test is about).
fn target() -> fleetscrape::discovery::Target {
    use fleetscrape::discovery::model::Instance;
    fleetscrape::discovery::Target {
        instance: Instance {
            state: fleetscrape::discovery::model::InstanceState::Running,
            ..Instance::not_found("i-0abc1234def567890")
        },
        role: fleetscrape::discovery::Role::Basic,
        asg: None,
        paths: vec![],
        discovered_labels: Default::default(),
        labels: Some(Default::default()),
        skip: None,
    }
}

/// fleetscrape: its scrape client (body limit, gzip, UTF-8) and its parser
/// (sample and label limits), with the limits of the example config.
async fn fleetscrape_verdicts(cases: &[Case], server: &str, config: &fleetscrape::config::Config) -> Vec<Verdict> {
    let client = HttpClient::new(&config.scrape).unwrap();
    let limits = config.scrape.limits();
    let mut verdicts = Vec::new();
    let mut previous_text = String::new();
    for case in cases {
        let url = format!("http://{server}/c/{}", case.name);
        let request = FetchRequest {
            url: &url,
            timeout: Duration::from_secs(10),
            quick_connect: false,
            cookie: None,
            node: fleetscrape::scrape::client::Node::Any,
        };
        let verdict = match client.fetch(request).await {
            Err(_) => Verdict::default(),
            Ok(fetched) => {
                // The oracles of the fuzz target, on every payload of the
                // corpus: its own rendering, and parsing with known series
                // (its own, and the previous case's).
                check::round_trip(&fetched.text, &limits).unwrap_or_else(|e| panic!("{}: {e}", case.name));
                for previous in [fetched.text.as_str(), previous_text.as_str()] {
                    check::known_agrees(previous, &fetched.text, &limits)
                        .unwrap_or_else(|e| panic!("{} (known series of another payload): {e}", case.name));
                }
                previous_text.clone_from(&fetched.text);
                match exposition::parse(&fetched.text, &limits) {
                    Err(_) => Verdict::default(),
                    Ok(payload) => {
                        let timestamped = payload.samples.iter().any(|s| s.timestamp_ms.is_some());
                        // What the store gets: the conversion's series, the
                        // first sample of a series in one scrape kept (the
                        // store's primary key; Prometheus keeps the first too).
                        let options = ConvertOptions::default();
                        let record = fleetscrape::scrape::convert::to_record(&payload, &target(), 0.0, &options);
                        let mut samples = BTreeMap::new();
                        for sample in record.samples() {
                            let labels: BTreeMap<String, String> = serde_json::from_str(sample.labels).unwrap();
                            samples.entry((sample.metric.to_string(), labels)).or_insert(bits(sample.value));
                        }
                        Verdict { accepted: true, samples, timestamped }
                    }
                }
            }
        };
        verdicts.push(verdict);
    }
    verdicts
}

/// Debian's Prometheus 2.42 scraping every case.
async fn start_prometheus(cases: &[Case], server: &str, config: &fleetscrape::config::Config) -> Prometheus {
    let limits = config.scrape.limits();
    let mut yaml = format!(
        "global: {{scrape_interval: 2s, scrape_timeout: 1500ms}}\nscrape_configs:\n  - job_name: corpus\n    \
         sample_limit: {}\n    label_limit: {}\n    label_name_length_limit: {}\n    label_value_length_limit: {}\n    \
         body_size_limit: {}B\n    static_configs:\n",
        limits.sample_limit,
        limits.label_limit,
        limits.label_name_length_limit,
        limits.label_value_length_limit,
        config.scrape.body_size_limit.0
    );
    for case in cases {
        yaml.push_str(&format!(
            "      - targets: ['{server}']\n        labels: {{__metrics_path__: /c/{0}, case: {0}}}\n",
            case.name
        ));
    }
    Prometheus::start(&yaml).await
}

async fn prometheus_verdicts(cases: &[Case], prometheus: &mut Prometheus) -> Vec<Verdict> {
    // Every target scraped at least once: `up` is written with the samples.
    let deadline = Instant::now() + Duration::from_secs(120);
    let ups = loop {
        assert!(!prometheus.has_exited(), "prometheus exited");
        let ups = prometheus.query("up{job=\"corpus\"}").await;
        if ups.len() == cases.len() {
            break ups;
        }
        assert!(Instant::now() < deadline, "Prometheus scraped {} of {} cases", ups.len(), cases.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let up: BTreeMap<String, bool> = ups
        .iter()
        .map(|r| (r["metric"]["case"].as_str().unwrap().to_string(), r["value"][1].as_str() == Some("1")))
        .collect();
    let mut samples: BTreeMap<String, BTreeMap<Series, u64>> = BTreeMap::new();
    for row in prometheus.query("{job=\"corpus\",__name__!~\"up|scrape_.+\"}").await {
        let mut labels: BTreeMap<String, String> = serde_json::from_value(row["metric"].clone()).unwrap();
        let case = labels.remove("case").unwrap();
        labels.remove("job");
        labels.remove("instance");
        let name = labels.remove("__name__").unwrap_or_default();
        let value: f64 = row["value"][1].as_str().unwrap().parse().unwrap();
        samples.entry(case).or_default().insert((name, labels), bits(value));
    }
    cases
        .iter()
        .map(|case| {
            let accepted = up[&case.name];
            let kept = if accepted { samples.remove(&case.name).unwrap_or_default() } else { BTreeMap::new() };
            Verdict { accepted, samples: kept, timestamped: false }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_corpus_is_judged_as_prometheus_2_42_judges_it() {
    common::set_test_env();
    let cases = Arc::new(corpus());
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let server = serve(&cases).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        fleetscrape::config::Config::load(&common::write_config(dir.path(), "aws:\n  region: ap-northeast-2\n"))
            .unwrap();
    let mut prometheus = start_prometheus(&cases, &server, &config).await;
    let ours = fleetscrape_verdicts(&cases, &server, &config).await;
    let theirs = prometheus_verdicts(&cases, &mut prometheus).await;

    let mut differences = BTreeSet::new();
    let mut report = String::new();
    for ((case, ours), theirs) in cases.iter().zip(&ours).zip(&theirs) {
        let same = ours.accepted == theirs.accepted && (ours.timestamped || ours.samples == theirs.samples);
        if !same {
            differences.insert(case.name.as_str());
            report.push_str(&format!(
                "{}: fleetscrape {} ({} samples), Prometheus {} ({} samples)\n",
                case.name,
                if ours.accepted { "accepts" } else { "rejects" },
                ours.samples.len(),
                if theirs.accepted { "accepts" } else { "rejects" },
                theirs.samples.len()
            ));
        }
    }
    let expected: BTreeSet<&str> = DIFFERENCES.iter().map(|(name, _)| *name).collect();
    assert_eq!(differences, expected, "differences from Prometheus 2.42:\n{report}");
    let accepted = ours.iter().filter(|v| v.accepted).count();
    eprintln!("{} cases: fleetscrape accepts {accepted}; {} differences, all listed", cases.len(), expected.len());
}
