use std::time::SystemTime;

use super::*;
use crate::discovery::model::Instance;
use crate::discovery::{Role, Target};
use crate::store::SampleRecord;

fn target(id: &str, name: &str) -> Target {
    Target {
        instance: Instance {
            state: crate::discovery::model::InstanceState::Running,
            availability_zone: Some("ap-northeast-2a".into()),
            ..Instance::not_found(id)
        },
        role: Role::Basic,
        asg: None,
        paths: vec![],
        discovered_labels: Default::default(),
        labels: Some([("__address__".into(), "x:1".into()), ("name".into(), name.into())].into()),
        skip: None,
    }
}

fn topology(targets: Vec<Target>) -> std::sync::Arc<Topology> {
    std::sync::Arc::new(Topology { targets, auto_scaling_groups: vec![], refreshed_at: SystemTime::UNIX_EPOCH })
}

fn rules() -> LabelRules {
    LabelRules {
        job: "fleetscrape".into(),
        external_labels: [("cluster".into(), "a".into()), ("name".into(), "never-overrides".into())].into(),
        stale_after: 2,
        ..LabelRules::default()
    }
}

fn scrape(id: &str, time: f64, samples: &[(&str, &str, f64)]) -> ScrapeRecord {
    let samples =
        samples.iter().map(|(m, l, v)| SampleRecord { metric: (*m).into(), labels: (*l).into(), value: *v }).collect();
    ScrapeRecord::new(id.into(), time, samples, vec![])
}

fn status(id: &str, time: f64, up: bool, reason: Option<FailureReason>) -> StatusRecord {
    StatusRecord {
        time,
        instance_id: id.into(),
        up,
        reason,
        error: None,
        duration_seconds: 0.25,
        samples: 2,
        path: crate::record::Route::ViaAlb {
            load_balancer: "backend".into(),
            port: 9102,
            target_groups: ["asg-tg"].into_iter().collect(),
        },
    }
}

/// Decoded (labels as `k=v,...`, ms, value) of every sample in the chunks.
fn decoded(chunks: &[Chunk]) -> Vec<(String, i64, f64)> {
    let mut request = wire::RequestBuilder::default();
    for chunk in chunks {
        for (labels, value) in &chunk.samples {
            request.push(labels, *value, chunk.time_ms);
        }
    }
    wire::decode(&request.finish())
        .unwrap()
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (labels.join(","), s.samples[0].0, s.samples[0].1)
        })
        .collect()
}

/// The `__name__=…` of every stale marker in the chunks, sorted.
fn stale_names(chunks: &[Chunk]) -> Vec<String> {
    let mut names: Vec<String> = decoded(chunks)
        .into_iter()
        .filter(|(_, _, v)| wire::is_stale_nan(*v))
        .map(|(l, _, _)| l[..l.find(',').unwrap()].to_string())
        .collect();
    names.sort();
    names
}

fn batch(scrapes: Vec<ScrapeRecord>, statuses: Vec<StatusRecord>) -> Batch {
    Batch { scrapes, statuses, ..Batch::default() }
}

#[test]
fn series_carry_instance_labels_exported_collisions_and_external_labels() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1")]);
    let chunks = t.translate(
        &batch(vec![scrape("i-a", 10.0, &[("m", r#"{"instance":"10.0.0.1:9100","mode":"idle"}"#, 1.5)])], vec![]),
        Some(&topo),
    );
    assert_eq!(
        decoded(&chunks),
        [(
            "__name__=m,availability_zone=ap-northeast-2a,cluster=a,exported_instance=10.0.0.1:9100,instance=i-a,\
             instance_id=i-a,job=fleetscrape,mode=idle,name=web-1,role=basic"
                .to_string(),
            10_000,
            1.5
        )],
        "sorted by name; the instance label is the instance id; an external label never overrides"
    );
}

#[test]
fn up_duration_and_reached_per_interval_and_unreached_is_not_up_0() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1")]);
    let chunks = t.translate(
        &batch(vec![], vec![status("i-a", 1.0, true, None), status("i-a", 2.0, false, Some(FailureReason::Timeout))]),
        Some(&topo),
    );
    let names: Vec<(String, i64, f64)> = decoded(&chunks)
        .into_iter()
        .map(|(l, t, v)| (l.split(',').next().unwrap().trim_start_matches("__name__=").to_string(), t, v))
        .collect();
    assert_eq!(
        names,
        [
            ("fleetscrape_alb_reached".into(), 1000, 1.0),
            ("up".into(), 1000, 1.0),
            ("scrape_duration_seconds".into(), 1000, 0.25),
            ("scrape_samples_post_metric_relabeling".into(), 1000, 2.0),
            ("fleetscrape_alb_reached".into(), 2000, 1.0),
            ("up".into(), 2000, 0.0),
        ]
    );
    let unreached = t
        .translate(&batch(vec![], vec![status("i-a", 3.0, false, Some(FailureReason::NotReachedViaAlb))]), Some(&topo));
    let mut names: Vec<String> =
        decoded(&unreached).into_iter().map(|(l, _, v)| format!("{} {v}", &l[..l.find(',').unwrap()])).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "__name__=fleetscrape_alb_reached 0",
            "__name__=scrape_duration_seconds NaN",
            "__name__=scrape_samples_post_metric_relabeling NaN"
        ],
        "no up sample; the second missed interval (stale_after = 2) marks the interval series stale, up stays 0 from the failure before"
    );
}

#[test]
fn series_missing_from_a_payload_go_stale_at_its_time() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1")]);
    t.translate(&batch(vec![scrape("i-a", 1.0, &[("a", "{}", 1.0), ("b", "{}", 2.0)])], vec![]), Some(&topo));
    let chunks = t.translate(&batch(vec![scrape("i-a", 2.0, &[("a", "{}", 3.0)])], vec![]), Some(&topo));
    let got = decoded(&chunks);
    assert_eq!(got.len(), 2);
    assert!(got[0].0.starts_with("__name__=a,") && got[0].2 == 3.0);
    assert!(got[1].0.starts_with("__name__=b,") && got[1].1 == 2000 && wire::is_stale_nan(got[1].2));
    let again = t.translate(&batch(vec![scrape("i-a", 3.0, &[("a", "{}", 4.0)])], vec![]), Some(&topo));
    assert_eq!(decoded(&again).len(), 1, "a series is marked stale once");
}

#[test]
fn an_instance_leaving_the_topology_has_every_series_marked_stale() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1"), target("i-b", "web-2")]);
    t.translate(
        &batch(
            vec![scrape("i-a", 1.0, &[("a", "{}", 1.0)]), scrape("i-b", 1.0, &[("a", "{}", 1.0)])],
            vec![status("i-a", 1.0, true, None)],
        ),
        Some(&topo),
    );
    let mut gone = target("i-a", "web-1");
    gone.skip = Some(crate::discovery::SkipReason::NotRunning(crate::discovery::model::InstanceState::Terminated));
    let chunks = t.topology_changed(&topology(vec![gone, target("i-b", "web-2")]), 5.0);
    let got = decoded(&chunks);
    assert_eq!(got.len(), 5, "a + up + duration + samples + reached of i-a: {got:?}");
    assert!(got.iter().all(|(l, t, v)| l.contains("instance=i-a") && *t == 5000 && wire::is_stale_nan(*v)));
    assert_eq!(t.series(), 1, "i-a is forgotten; i-b stays");
    // Changed labels (relabeling, a new group) mark the old series stale too.
    let chunks = t.topology_changed(&topology(vec![target("i-b", "web-renamed")]), 6.0);
    assert_eq!(decoded(&chunks).len(), 1);
}

#[test]
fn after_n_failed_intervals_the_payload_series_go_stale_and_up_stays() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1")]);
    t.translate(
        &batch(vec![scrape("i-a", 1.0, &[("a", "{}", 1.0)])], vec![status("i-a", 1.0, true, None)]),
        Some(&topo),
    );
    let first =
        t.translate(&batch(vec![], vec![status("i-a", 2.0, false, Some(FailureReason::ConnectError))]), Some(&topo));
    assert!(decoded(&first).iter().all(|(_, _, v)| !v.is_nan()), "one failure: no marker (balancing would flap)");
    let second =
        t.translate(&batch(vec![], vec![status("i-a", 3.0, false, Some(FailureReason::ConnectError))]), Some(&topo));
    assert_eq!(
        stale_names(&second),
        ["__name__=a", "__name__=scrape_duration_seconds", "__name__=scrape_samples_post_metric_relabeling"]
    );
    // It comes back: the series resume.
    let back = t.translate(&batch(vec![scrape("i-a", 4.0, &[("a", "{}", 2.0)])], vec![]), Some(&topo));
    assert_eq!(decoded(&back)[0].2, 2.0);
}

#[test]
fn a_series_never_goes_back_in_time_and_write_relabeling_drops() {
    let mut rules = rules();
    rules.write_relabel_configs =
        serde_saphyr::from_str("- {source_labels: [__name__], regex: 'go_.*', action: drop}\n").unwrap();
    let mut t = Translator::new(rules);
    let topo = topology(vec![target("i-a", "web-1")]);
    let samples = [("a", "{}", 1.0), ("go_goroutines", "{}", 7.0)];
    assert_eq!(decoded(&t.translate(&batch(vec![scrape("i-a", 2.0, &samples)], vec![]), Some(&topo))).len(), 1);
    let late = t.translate(&batch(vec![scrape("i-a", 2.0, &samples)], vec![]), Some(&topo));
    assert!(late.is_empty());
    assert_eq!(t.counts(), TranslateCounts { out_of_order: 1, relabeled_away: 2, stale_markers: 0 });
}

#[test]
fn only_unreached_intervals_mark_up_stale_too() {
    let mut t = Translator::new(rules());
    let topo = topology(vec![target("i-a", "web-1")]);
    t.translate(&batch(vec![], vec![status("i-a", 1.0, true, None)]), Some(&topo));
    let unreached = |time| status("i-a", time, false, Some(FailureReason::NotReachedViaAlb));
    assert!(
        decoded(&t.translate(&batch(vec![], vec![unreached(2.0)]), Some(&topo))).iter().all(|(_, _, v)| !v.is_nan())
    );
    assert_eq!(
        stale_names(&t.translate(&batch(vec![], vec![unreached(3.0)]), Some(&topo))),
        ["__name__=scrape_duration_seconds", "__name__=scrape_samples_post_metric_relabeling", "__name__=up"]
    );
}

#[test]
fn a_batch_read_against_a_new_topology_with_new_labels_ends_the_old_series() {
    let mut t = Translator::new(rules());
    let before = topology(vec![target("i-a", "web-1")]);
    t.translate(&batch(vec![scrape("i-a", 1.0, &[("a", "{}", 1.0)])], vec![]), Some(&before));
    let after = topology(vec![target("i-a", "web-renamed")]);
    let got = decoded(&t.translate(&batch(vec![scrape("i-a", 2.0, &[("a", "{}", 2.0)])], vec![]), Some(&after)));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].0.contains("name=web-1") && wire::is_stale_nan(got[0].2), "the old series ends");
    assert!(got[1].0.contains("name=web-renamed") && got[1].2 == 2.0, "the new one starts");
}
