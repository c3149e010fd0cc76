//! Cases ported from Prometheus's `model/relabel/relabel_test.go`
//! (`TestRelabel`, `TestRelabelValidate`, `TestTargetLabelValidity`), written
//! as YAML so parsing and defaults are exercised too.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn rules(yaml: &str) -> Vec<RelabelConfig> {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("rules should parse: {e}\n{yaml}"))
}

fn rule_error(yaml: &str) -> String {
    match serde_saphyr::from_str::<Vec<RelabelConfig>>(yaml) {
        Ok(_) => panic!("rules should be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// (input, rules, expected output or None for dropped)
type Case = (&'static [(&'static str, &'static str)], &'static str, Option<&'static [(&'static str, &'static str)]>);

const CASES: &[Case] = &[
    (
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        "- {source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch${1}-ch${1}'}",
        Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
    ),
    (
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        "- {source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'}\n\
         - {source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}",
        Some(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
    ),
    (
        &[("a", "foo")],
        "- {source_labels: [a], regex: '.*o.*', action: drop}\n\
         - {source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch$1-ch$1'}",
        None,
    ),
    (&[("a", "foo"), ("b", "bar")], "- {source_labels: [a], regex: '.*o.*', action: drop}", None),
    (
        &[("a", "abc")],
        "- {source_labels: [a], regex: '.*(b).*', target_label: d, replacement: '$1'}",
        Some(&[("a", "abc"), ("d", "b")]),
    ),
    (&[("a", "foo")], "- {source_labels: [a], regex: no-match, action: drop}", Some(&[("a", "foo")])),
    // Anchoring: "f|o" must match the whole value, so "foo" is kept.
    (&[("a", "foo")], "- {source_labels: [a], regex: 'f|o', action: drop}", Some(&[("a", "foo")])),
    (&[("a", "foo")], "- {source_labels: [a], regex: no-match, action: keep}", None),
    (&[("a", "foo")], "- {source_labels: [a], regex: 'f.*', action: keep}", Some(&[("a", "foo")])),
    // No replacement when there is no match.
    (&[("a", "boo")], "- {source_labels: [a], regex: f, target_label: b, replacement: bar}", Some(&[("a", "boo")])),
    (
        &[("a", "foo"), ("b", "bar"), ("c", "baz")],
        "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}",
        Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
    ),
    (
        &[("a", "foo\nbar")],
        "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}",
        Some(&[("a", "foo\nbar"), ("b", "734")]),
    ),
    (
        &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
        "- {regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}",
        Some(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")]),
    ),
    (
        &[("a", "foo"), ("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("__meta_other", "ccc")],
        "- {regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}",
        Some(&[
            ("a", "foo"),
            ("__meta_my_bar", "aaa"),
            ("__meta_my_baz", "bbb"),
            ("__meta_other", "ccc"),
            ("my_bar", "aaa"),
            ("my_baz", "bbb"),
        ]),
    ),
    (
        &[("a", "some-name-value")],
        "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}",
        Some(&[("a", "some-name-value"), ("name", "value")]),
    ),
    // An empty expansion deletes the target label (here: sets nothing).
    (
        &[("a", "some-name-value")],
        "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}",
        Some(&[("a", "some-name-value")]),
    ),
    // A target label that expands to an invalid name is skipped.
    (
        &[("a", "some-name-0")],
        "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}\n\
         - {source_labels: [a], regex: 'some-([^-]+)(-[^,]+)', replacement: '${1}', target_label: '${3}'}",
        Some(&[("a", "some-name-0")]),
    ),
    (
        &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
        "- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)path:(/[^,]+).*', replacement: '${1}', target_label: __metrics_path__}\n\
         - {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)job:([^,]+).*', replacement: '${1}', target_label: job}\n\
         - {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)label:([^=]+)=([^,]+).*', replacement: '${2}', target_label: '${1}'}",
        Some(&[
            ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
            ("__metrics_path__", "/secret"),
            ("job", "some-job"),
            ("foo", "bar"),
        ]),
    ),
    (
        &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
        "- {regex: '(b.*)', action: labelkeep}",
        Some(&[("b1", "bar"), ("b2", "baz")]),
    ),
    (&[("a", "foo"), ("b1", "bar"), ("b2", "baz")], "- {regex: '(b.*)', action: labeldrop}", Some(&[("a", "foo")])),
    (
        &[("foo", "bAr123Foo")],
        "- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}\n\
         - {source_labels: [foo], action: lowercase, target_label: foo_lowercase}",
        Some(&[("foo", "bAr123Foo"), ("foo_lowercase", "bar123foo"), ("foo_uppercase", "BAR123FOO")]),
    ),
    (
        &[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")],
        "- {source_labels: [__tmp_port], action: keepequal, target_label: __port1}",
        Some(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
    ),
    (
        &[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")],
        "- {source_labels: [__tmp_port], action: dropequal, target_label: __port1}",
        None,
    ),
    (
        &[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")],
        "- {source_labels: [__tmp_port], action: dropequal, target_label: __port2}",
        Some(&[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")]),
    ),
    (
        &[("__tmp_port", "1234"), ("__port1", "1234"), ("__port2", "5678")],
        "- {source_labels: [__tmp_port], action: keepequal, target_label: __port2}",
        None,
    ),
];

#[test]
fn prometheus_relabel_cases() {
    for (i, (input, yaml, expected)) in CASES.iter().enumerate() {
        let got = process(&labels(input), &rules(yaml));
        let expected = expected.map(labels);
        assert_eq!(got, expected, "case {i}:\n{yaml}");
    }
}

#[test]
fn replace_fast_path_sets_a_literal_when_sources_are_empty() {
    let got = process(&labels(&[]), &rules("- {target_label: env, replacement: prod}"));
    assert_eq!(got, Some(labels(&[("env", "prod")])));
}

#[test]
fn replace_with_an_empty_replacement_deletes_the_target() {
    let got =
        process(&labels(&[("a", "x"), ("b", "y")]), &rules("- {source_labels: [a], target_label: b, replacement: ''}"));
    assert_eq!(got, Some(labels(&[("a", "x")])));
}

#[test]
fn missing_source_labels_read_as_empty_and_join_with_the_separator() {
    let got = process(
        &labels(&[("a", "1")]),
        &rules(
            "- {source_labels: [a, missing, a], separator: '|', regex: '1\\|\\|1', target_label: ok, replacement: yes}",
        ),
    );
    assert_eq!(got, Some(labels(&[("a", "1"), ("ok", "yes")])));
}

#[test]
fn action_names_are_case_insensitive() {
    let got = process(&labels(&[("a", "x")]), &rules("- {source_labels: [a], regex: x, action: DROP}"));
    assert_eq!(got, None);
}

#[test]
fn hashmod_splits_targets_across_shards() {
    let shards: Vec<u64> = (0..100).map(|i| hash_mod(&format!("10.0.0.{i}:9100"), 3)).collect();
    for shard in 0..3 {
        let count = shards.iter().filter(|&&s| s == shard).count();
        assert!(count > 15, "shard {shard} got only {count} of 100 targets");
    }
}

#[test]
fn validation_messages_match_prometheus() {
    let cases = [
        ("- {action: replace, source_labels: [a]}", "requires 'target_label' value"),
        ("- {action: lowercase}", "requires 'target_label' value"),
        ("- {action: lowercase, target_label: '${3}'}", "\"${3}\" is invalid 'target_label'"),
        ("- {source_labels: [a], regex: 'some-(.*)', target_label: '0${3}'}", "\"0${3}\" is invalid 'target_label'"),
        ("- {source_labels: [a], target_label: '-${3}'}", "\"-${3}\" is invalid 'target_label' for replace action"),
        ("- {action: hashmod, target_label: x, source_labels: [a]}", "hashmod requires non-zero modulus"),
        ("- {action: labeldrop, regex: a, source_labels: [a]}", "labeldrop action requires only 'regex'"),
        ("- {action: keepequal, source_labels: [a], target_label: b, regex: x}", "requires only 'source_labels'"),
        ("- {action: uppercase, source_labels: [a], target_label: b, replacement: x}", "'replacement' can not be set"),
        ("- {action: labelmap, regex: '(.*)', replacement: '-$1'}", "is invalid 'replacement' for labelmap"),
        ("- {action: explode}", "unknown relabel action \"explode\""),
        ("- {source_labels: [a], regex: '(', target_label: b}", "invalid regex \"(\""),
        ("- {source_labels: ['bad-name'], target_label: b}", "\"bad-name\" is not a valid label name"),
        ("- {source_labels: [a], target_label: b, regexp: x}", "regexp"),
    ];
    for (yaml, expected) in cases {
        let err = rule_error(yaml);
        assert!(err.contains(expected), "{yaml}\n  expected error containing {expected:?}\n  got {err}");
    }
}

#[test]
fn target_label_templates_follow_prometheus() {
    let cases = [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
    ];
    for (template, valid) in cases {
        assert_eq!(is_valid_label_template(template), valid, "{template}");
    }
}
