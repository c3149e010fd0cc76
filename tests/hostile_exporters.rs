//! Issue #11, item 2: exporters that misbehave, on loopback, scraped by
//! fleetscrape's real scrape client side by side with a good one: each
//! failure bounded by `scrape.timeout` and `body_size_limit`, named, and the
//! good target unaffected; the process's peak RSS stays bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetscrape::scrape::client::{FetchError, Node};
use fleetscrape::scrape::{Fetch, FetchRequest, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GOOD: &str = "# TYPE a counter\na_total 1\n";

/// How a hostile server answers each connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// A well-formed payload.
    Good,
    /// Headers, then one byte every 100 ms, forever.
    Drip,
    /// A chunked body that never ends, as fast as it can.
    Endless,
    /// `Content-Length` of 100 GB, then a short body and a close.
    HugeDeclaredLength,
    /// `Content-Length: 1000`, 10 bytes, then a close.
    ShortBody,
    /// Reads the request, then resets the connection.
    Reset,
    /// `302 Found` to the good server.
    Redirect,
    /// A good payload labelled `application/json`.
    WrongContentType,
    /// An HTML error page with status 200.
    Html,
}

async fn read_request(socket: &mut TcpStream) {
    let mut buffer = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn answer(mut socket: TcpStream, behaviour: Behaviour, good: String) {
    read_request(&mut socket).await;
    // One request per connection: the client must not find a kept-alive
    // connection that nobody reads any more.
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\nconnection: close\r\n{extra}\r\n")
    };
    match behaviour {
        Behaviour::Good => {
            let reply = head("200 OK", &format!("content-length: {}\r\n", GOOD.len())) + GOOD;
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Behaviour::Drip => {
            let _ = socket.write_all(head("200 OK", "transfer-encoding: chunked\r\n").as_bytes()).await;
            loop {
                if socket.write_all(b"1\r\na\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Behaviour::Endless => {
            let _ = socket.write_all(head("200 OK", "transfer-encoding: chunked\r\n").as_bytes()).await;
            let line = "endless_metric{label=\"value\"} 1\n".repeat(2000);
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Behaviour::HugeDeclaredLength => {
            let _ = socket.write_all((head("200 OK", "content-length: 100000000000\r\n") + GOOD).as_bytes()).await;
        }
        Behaviour::ShortBody => {
            let _ = socket.write_all((head("200 OK", "content-length: 1000\r\n") + "a_total 1\n").as_bytes()).await;
        }
        Behaviour::Reset => {
            // A zero linger makes the close a reset.
            let _ = socket.set_zero_linger();
            return;
        }
        Behaviour::Redirect => {
            let reply = head("302 Found", &format!("location: {good}\r\ncontent-length: 0\r\n"));
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Behaviour::WrongContentType => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{GOOD}",
                GOOD.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Behaviour::Html => {
            let page = "<html><body><h1>It works!</h1></body></html>\n";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    }
    let _ = socket.shutdown().await;
}

/// A loopback server; returns its URL and how many requests it took.
async fn server(behaviour: Behaviour, good: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(socket, behaviour, good.clone()));
        }
    });
    (url, served)
}

/// Peak resident set of this process, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_exporters_fail_bounded_and_named_while_a_good_one_is_scraped() {
    common::set_test_env();
    let dir = tempfile::tempdir().unwrap();
    let config = fleetscrape::config::Config::load(&common::write_config(
        dir.path(),
        "aws:\n  region: ap-northeast-2\nscrape:\n  interval: 5s\n  timeout: 2s\n  body_size_limit: 4MiB\n",
    ))
    .unwrap();
    let client = Arc::new(HttpClient::new(&config.scrape).unwrap());
    let limits = config.scrape.limits();
    let (good_url, good_served) = server(Behaviour::Good, String::new()).await;
    let behaviours = [
        Behaviour::Drip,
        Behaviour::Endless,
        Behaviour::HugeDeclaredLength,
        Behaviour::ShortBody,
        Behaviour::Reset,
        Behaviour::Redirect,
        Behaviour::WrongContentType,
        Behaviour::Html,
    ];
    let mut urls = Vec::new();
    for behaviour in behaviours {
        urls.push((behaviour, server(behaviour, good_url.clone()).await));
    }
    let rss_before = peak_rss_kib();

    // Three rounds of every target at once, as the scheduler would run them.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let mut tasks = Vec::new();
        for (behaviour, (url, _)) in
            urls.iter().cloned().chain([(Behaviour::Good, (good_url.clone(), good_served.clone()))])
        {
            let client = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                let request = FetchRequest {
                    url: &url,
                    timeout: Duration::from_secs(2),
                    quick_connect: false,
                    cookie: None,
                    node: Node::Any,
                };
                // A hang guard far above the 2 s timeout, not a timing assertion.
                let fetched = tokio::time::timeout(Duration::from_secs(15), client.fetch(request)).await;
                let result = fetched
                    .unwrap_or_else(|_| panic!("{behaviour:?} hung past its 2 s timeout"))
                    .map(|fetched| fetched.text);
                (behaviour, result)
            }));
        }
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
    }
    let rss_growth_mib = peak_rss_kib().saturating_sub(rss_before) / 1024;

    for (behaviour, result) in &outcomes {
        let parsed = result.as_ref().map(|text| fleetscrape::exposition::parse(text, &limits).map(|p| p.samples.len()));
        match behaviour {
            Behaviour::Good | Behaviour::WrongContentType => {
                // Prometheus 2.42 too parses any content type but OpenMetrics as text.
                assert!(matches!(parsed, Ok(Ok(1))), "{behaviour:?}: {result:?}");
            }
            Behaviour::Drip => assert!(matches!(result, Err(FetchError::Timeout(_))), "{behaviour:?}: {result:?}"),
            Behaviour::Endless => {
                assert!(
                    result.as_ref().is_err_and(|e| e.to_string().contains("body size limit exceeded")),
                    "{result:?}"
                );
            }
            Behaviour::HugeDeclaredLength => {
                let message = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
                assert!(message.contains("body size limit exceeded"), "refused on its declared length: {result:?}");
            }
            Behaviour::ShortBody | Behaviour::Reset => {
                assert!(result.is_err(), "{behaviour:?}: {result:?}");
            }
            Behaviour::Redirect => {
                let message = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
                assert!(message.contains("redirect") && message.contains("not followed"), "{behaviour:?}: {result:?}");
            }
            Behaviour::Html => assert!(matches!(parsed, Ok(Err(_))), "{behaviour:?}: {result:?}"),
        }
    }
    assert_eq!(good_served.load(Ordering::SeqCst), 3, "the redirect was not followed to the good server");
    // TLS to a server that speaks plain HTTP: a TLS error, named, within the timeout.
    let https = good_url.replacen("http://", "https://", 1);
    let request = FetchRequest {
        url: &https,
        timeout: Duration::from_secs(2),
        quick_connect: false,
        cookie: None,
        node: Node::Any,
    };
    let tls = client.fetch(request).await.map(|f| f.text);
    assert!(tls.is_err(), "{tls:?}");
    // 3 rounds × an endless body cut at 4 MiB, the rest small: a few times the limit at most.
    assert!(rss_growth_mib < 48, "peak RSS grew {rss_growth_mib} MiB");
    eprintln!("peak RSS growth over 3 hostile rounds: {rss_growth_mib} MiB");
}
