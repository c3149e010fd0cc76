use std::collections::BTreeMap;

use super::*;

/// A member that answers its own name, on a free loopback port.
async fn member(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(move || async move { ([(header::CONTENT_TYPE, "text/plain")], name) });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

async fn emulator(balancing: Balancing, members: &[String]) -> (Emulator, String) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = EmulatorConfig {
        member_timeout: Duration::from_secs(5),
        ..EmulatorConfig::new([(9102, (any, members.to_vec()))].into(), balancing)
    };
    let emulator = Emulator::start(config).await.unwrap();
    let url = format!("http://{}/metrics", emulator.addresses[&9102]);
    (emulator, url)
}

async fn three_members() -> Vec<String> {
    vec![member("a").await, member("b").await, member("c").await]
}

async fn body(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn round_robin_reaches_n_members_in_n_requests() {
    let (_emulator, url) = emulator(Balancing::RoundRobin, &three_members().await).await;
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..3 {
            seen.push(body(&client, &url).await);
        }
        seen.sort();
        assert_eq!(seen, ["a", "b", "c"]);
    }
}

#[tokio::test]
async fn random_spreads_and_says_nothing_about_the_member() {
    let (_emulator, url) = emulator(Balancing::Random, &three_members().await).await;
    let client = reqwest::Client::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let reply = client.get(&url).send().await.unwrap();
        let names: Vec<&str> = reply.headers().keys().map(|k| k.as_str()).collect();
        assert!(names.iter().all(|n| ["content-type", "content-length", "date"].contains(n)), "{names:?}");
        *counts.entry(reply.text().await.unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    // Expected 100 each; below 50 has a probability far under 1e-9.
    assert!(counts.values().all(|&n| n >= 50), "{counts:?}");
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_to_one_member() {
    let members = three_members().await;
    let (emulator, url) = emulator(Balancing::Sticky, &members).await;
    let client = reqwest::Client::new();
    let first = client.get(&url).send().await.unwrap();
    let set_cookie = first.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("AWSALB=") && set_cookie.contains("Path=/"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let pinned = first.text().await.unwrap();
    for _ in 0..10 {
        let reply = client.get(&url).header(header::COOKIE, format!("other=1; {cookie}")).send().await.unwrap();
        assert!(reply.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(reply.text().await.unwrap(), pinned);
    }
    // Without a cookie: a random member, and a new cookie each time.
    let mut fresh = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let reply = client.get(&url).send().await.unwrap();
        assert!(reply.headers().get(header::SET_COOKIE).is_some());
        fresh.insert(reply.text().await.unwrap());
    }
    assert_eq!(fresh.len(), 3);
    // A cookie of a member that left no longer pins.
    let index = ["a", "b", "c"].iter().position(|n| *n == pinned).unwrap();
    let remaining: Vec<String> =
        members.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, m)| m.clone()).collect();
    assert!(emulator.set_members(9102, &remaining));
    let reply = client.get(&url).header(header::COOKIE, cookie).send().await.unwrap();
    assert!(reply.headers().get(header::SET_COOKIE).is_some());
    assert_ne!(reply.text().await.unwrap(), pinned);
}

#[tokio::test]
async fn failures_look_like_an_alb() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (emulator, url) = emulator(Balancing::RoundRobin, &[closed]).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::BAD_GATEWAY);
    emulator.set_members(9102, &[]);
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn admin_api_changes_members_at_run_time() {
    let members = three_members().await;
    let (emulator, url) = emulator(Balancing::RoundRobin, &members[..1]).await;
    let client = reqwest::Client::new();
    let admin = format!("http://{}/listeners", emulator.admin_address);
    assert_eq!(body(&client, &url).await, "a");
    let reply = client.put(format!("{admin}/9102")).body(members[1..].join(",")).send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let mut seen = vec![body(&client, &url).await, body(&client, &url).await];
    seen.sort();
    assert_eq!(seen, ["b", "c"]);
    let listed: BTreeMap<String, Vec<String>> = serde_json::from_str(&body(&client, &admin).await).unwrap();
    assert_eq!(listed["9102"], members[1..]);
    assert_eq!(client.put(format!("{admin}/1")).body("").send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn skewed_balancing_sends_the_first_member_its_share() {
    let (_emulator, url) = emulator(Balancing::Skewed, &three_members().await).await;
    let client = reqwest::Client::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        *counts.entry(body(&client, &url).await).or_default() += 1;
    }
    // 70 % of 400 = 280 (σ ≈ 9); 15 % = 60 each (σ ≈ 7).
    assert!((230..=330).contains(&counts["a"]), "{counts:?}");
    assert!(counts["b"] >= 25 && counts["c"] >= 25, "{counts:?}");
}

#[tokio::test]
async fn least_outstanding_spreads_concurrent_requests() {
    let members = three_members().await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Every member answers 200 ms late, so concurrent requests overlap.
    let delays = members.iter().map(|m| (m.clone(), Duration::from_millis(200))).collect();
    let config = EmulatorConfig {
        member_delays: delays,
        ..EmulatorConfig::new([(9102, (any, members.clone()))].into(), Balancing::LeastOutstanding)
    };
    let emulator = Emulator::start(config).await.unwrap();
    let url = format!("http://{}/metrics", emulator.addresses[&9102]);
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let replies = futures_util::future::join_all((0..3).map(|_| body(&client, &url))).await;
        let distinct: std::collections::BTreeSet<String> = replies.into_iter().collect();
        assert_eq!(distinct.len(), 3, "three concurrent requests, three members");
    }
}

/// The late member's answer is held back (an hour, far past the client's
/// 1 s timeout) while the others answer: told apart by outcome, not by timing.
#[tokio::test]
async fn a_late_member_answers_late() {
    let members = three_members().await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = EmulatorConfig {
        member_delays: [(members[0].clone(), Duration::from_secs(3600))].into(),
        ..EmulatorConfig::new([(9102, (any, members.clone()))].into(), Balancing::RoundRobin)
    };
    let emulator = Emulator::start(config).await.unwrap();
    let url = format!("http://{}/metrics", emulator.addresses[&9102]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let mut answered = Vec::new();
    let mut held_back = 0;
    for _ in 0..3 {
        match client.get(&url).send().await {
            Ok(reply) => answered.push(reply.text().await.unwrap()),
            Err(e) if e.is_timeout() => held_back += 1,
            Err(e) => panic!("{e}"),
        }
    }
    answered.sort();
    assert_eq!(answered, ["b", "c"], "the prompt members answer");
    assert_eq!(held_back, 1, "the late member's answer is held back");
}

#[tokio::test]
async fn the_group_cookie_pins_no_member() {
    let members = three_members().await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = EmulatorConfig {
        group_cookie: true,
        ..EmulatorConfig::new([(9102, (any, members))].into(), Balancing::RoundRobin)
    };
    let emulator = Emulator::start(config).await.unwrap();
    let url = format!("http://{}/metrics", emulator.addresses[&9102]);
    let client = reqwest::Client::new();
    let first = client.get(&url).send().await.unwrap();
    let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("AWSALBTG="), "{cookie}");
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(first.text().await.unwrap());
    for _ in 0..2 {
        let reply = client.get(&url).header(header::COOKIE, &cookie).send().await.unwrap();
        seen.insert(reply.text().await.unwrap());
    }
    assert_eq!(seen.len(), 3, "AWSALBTG did not pin a member: {seen:?}");
}
