//! Debian's Prometheus 2.42, started by a test on loopback: a remote-write
//! receiver (`--web.enable-remote-write-receiver`), an `http_sd` consumer,
//! a scraper; stopped and started again on the same data and port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) Prometheus.
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    config_file: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config_yaml` as its configuration, waits until ready.
    pub async fn start(config_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config_yaml).unwrap();
        let port = super::free_port();
        let mut prometheus = Self {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            config_file,
            data: dir.path().join("data"),
            _dir: dir,
        };
        prometheus.resume().await;
        prometheus
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Whether the process ended by itself (a bad configuration, a crash).
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Kills it (SIGKILL: a receiver crash, nothing flushed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, waits until ready.
    pub async fn resume(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", self.config_file.display()))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's prometheus (apt-get install -y prometheus; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(reply) = reqwest::get(format!("{}/-/ready", self.url)).await
                && reply.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query at `time` (epoch seconds; `None`: now): its `result`.
    pub async fn query_at(&self, promql: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let mut params = vec![("query", promql.to_string())];
        if let Some(time) = time {
            params.push(("time", format!("{time:.3}")));
        }
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.url), &params).unwrap();
        let Ok(reply) = reqwest::get(url).await else { return vec![] };
        let body: serde_json::Value = serde_json::from_str(&reply.text().await.unwrap_or_default()).unwrap_or_default();
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// An instant query now.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.query_at(promql, None).await
    }

    /// Every raw sample of the series `selector` picks, up to `time`, as
    /// (labels, [(ms, value)]): a range selector over the last `range`.
    pub async fn raw_samples(
        &self,
        selector: &str,
        range: &str,
        time: f64,
    ) -> Vec<(serde_json::Value, Vec<(i64, f64)>)> {
        self.query_at(&format!("{selector}[{range}]"), Some(time))
            .await
            .into_iter()
            .map(|series| {
                let values = series["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|pair| {
                        let ms = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
                        (ms, pair[1].as_str().unwrap().parse::<f64>().unwrap())
                    })
                    .collect();
                (series["metric"].clone(), values)
            })
            .collect()
    }

    /// `/api/v1/targets`' active targets.
    pub async fn active_targets(&self) -> Vec<serde_json::Value> {
        let Ok(reply) = reqwest::get(format!("{}/api/v1/targets", self.url)).await else { return vec![] };
        let body: serde_json::Value = serde_json::from_str(&reply.text().await.unwrap_or_default()).unwrap_or_default();
        body["data"]["activeTargets"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
