//! Parser tests: real node_exporter payloads, Prometheus's promparse good and
//! bad corpora (`model/textparse/promparse_test.go`), escapes, special values,
//! types, limits, and body decoding.

use std::io::Write;

use super::*;

const FULL: &str = include_str!("../../../tests/testdata/node_exporter-1.5.0-full.prom");
const IDENTITY: &str = include_str!("../../../tests/testdata/node_exporter-1.5.0-identity.prom");

fn ok(text: &str) -> Payload<'_> {
    parse(text, &Limits::default()).unwrap_or_else(|e| panic!("should parse: {e}"))
}

fn err(text: &str) -> ParseError {
    match parse(text, &Limits::default()) {
        Ok(p) => panic!("should fail, parsed {} samples: {text:?}", p.samples.len()),
        Err(e) => e,
    }
}

fn labels(sample: &Sample<'_>) -> Vec<(String, String)> {
    sample.labels().map(|(n, v)| (n.to_string(), v.into_owned())).collect()
}

#[test]
fn full_node_exporter_payload() {
    let payload = ok(FULL);
    assert_eq!(payload.samples.len(), 507);
    assert_eq!(payload.types.len(), 283);
    let goroutines = payload.samples.iter().find(|s| s.name == "go_goroutines").unwrap();
    assert_eq!((goroutines.value, goroutines.timestamp_ms), (7.0, None));
    let uname = payload.samples.iter().find(|s| s.name == "node_uname_info").unwrap();
    assert_eq!(uname.label("nodename").as_deref(), Some("vm"));
    assert_eq!(uname.label("version").as_deref(), Some("#1 SMP PREEMPT_DYNAMIC @0"));
    assert_eq!(payload.metric_type("node_cpu_seconds_total"), MetricType::Counter);
    assert_eq!(payload.metric_type("go_gc_duration_seconds_sum"), MetricType::Summary);
    assert_eq!(payload.metric_type("no_such_metric"), MetricType::Untyped);
}

#[test]
fn identity_payload_carries_the_instance_id() {
    let payload = ok(IDENTITY);
    assert_eq!(payload.samples.len(), 144);
    let dmi = payload.samples.iter().find(|s| s.name == "node_dmi_info").unwrap();
    assert_eq!(dmi.label("board_asset_tag").as_deref(), Some("i-0abc1234def567890"));
    assert_eq!(dmi.label("board_name").as_deref(), Some(""));
    let info = payload.samples.iter().find(|s| s.name == "ec2_instance_info").unwrap();
    assert_eq!(info.label("instance_id").as_deref(), Some("i-0abc1234def567890"));
    assert!(
        payload.samples.iter().all(|s| s.line > 0 && IDENTITY.lines().nth(s.line - 1).unwrap().starts_with(s.name))
    );
}

/// promparse's `TestPromParse` input, less the missing-comma line (rejected
/// here on purpose, see the module docs).
#[test]
fn promparse_good_corpus() {
    let input = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
# \tTYPE go_gc_duration_seconds summary\n\
go_gc_duration_seconds{quantile=\"0\"} 4.9351e-05\n\
go_gc_duration_seconds{quantile=\"0.25\",} 7.424100000000001e-05\n\
go_gc_duration_seconds{quantile=\"0.5\",a=\"b\"} 8.3835e-05\n\
go_gc_duration_seconds{quantile=\"0.8\", a=\"b\"} 8.3835e-05\n\
go_gc_duration_seconds{ quantile=\"0.9\", a=\"b\"} 8.3835e-05\n\
# Hrandom comment starting with prefix of HELP\n\
#\n\
wind_speed{A=\"2\",c=\"3\"} 12345\n\
# comment with escaped \\n newline\n\
# comment with escaped \\ escape character\n\
# HELP nohelp1\n\
# HELP nohelp2 \n\
go_gc_duration_seconds{ quantile=\"1.0\", a=\"b\" } 8.3835e-05\n\
go_gc_duration_seconds { quantile=\"1.0\", a=\"b\" } 8.3835e-05\n\
go_gc_duration_seconds { quantile= \"1.0\", a= \"b\", } 8.3835e-05\n\
go_gc_duration_seconds { quantile = \"1.0\", a = \"b\" } 8.3835e-05\n\
go_gc_duration_seconds_count 99\n\
some:aggregate:rate5m{a_b=\"c\"}\t1\n\
# HELP go_goroutines Number of goroutines that currently exist.\n\
# TYPE go_goroutines gauge\n\
go_goroutines 33  \t123123\n\
_metric_starting_with_underscore 1\n\
testmetric{_label_starting_with_underscore=\"foo\"} 1\n\
testmetric{label=\"\\\"bar\\\"\"} 1\n\
# HELP metric foo\x00bar\n\
null_byte_metric{a=\"abc\x00\"} 1";
    let payload = ok(input);
    let names: Vec<&str> = payload.samples.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 17);
    assert_eq!(payload.metric_type("go_gc_duration_seconds"), MetricType::Summary);
    assert_eq!(labels(&payload.samples[3]), [("quantile".into(), "0.8".into()), ("a".into(), "b".into())]);
    assert_eq!(labels(&payload.samples[6]), [("quantile".into(), "1.0".into()), ("a".into(), "b".into())]);
    let goroutines = payload.samples.iter().find(|s| s.name == "go_goroutines").unwrap();
    assert_eq!((goroutines.value, goroutines.timestamp_ms), (33.0, Some(123123)));
    let quoted = payload.samples.iter().find(|s| s.name == "testmetric" && s.label("label").is_some()).unwrap();
    assert_eq!(quoted.label("label").as_deref(), Some("\"bar\""));
    let null = payload.samples.last().unwrap();
    assert_eq!(null.label("a").as_deref(), Some("abc\x00"));
    assert_eq!(payload.samples.iter().find(|s| s.name == "some:aggregate:rate5m").unwrap().value, 1.0);
}

/// promparse's `TestPromParseErrors` and `TestPromNullByteHandling` inputs
/// (the invalid-UTF-8 ones are covered by `decode_body`), plus our own rejections.
#[test]
fn promparse_bad_corpus_and_ours() {
    let cases = [
        ("a", "expected a value"),
        ("a{b='c'} 1\n", "double-quoted"),
        ("a{b=\n", "double-quoted"),
        ("a true\n", "invalid value \"true\""),
        ("something_weird{problem=\"", "unterminated label value"),
        ("empty_label_name{=\"\"} 0", "expected a label name"),
        ("foo 1_2\n", "invalid value \"1_2\""),
        ("foo 0x1p-3\n", "invalid value"),
        ("foo 0x1P-3\n", "invalid value"),
        ("foo 0 1_2\n", "invalid timestamp"),
        ("{a=\"ok\"} 1", "expected a metric name"),
        ("# TYPE #\n", "expected metric name after TYPE"),
        ("# HELP #\n", "expected metric name after HELP"),
        ("a{b=\x00\"ssss\"} 1\n", "double-quoted"),
        ("a{b=\"\x00", "unterminated"),
        ("a{b\x00=\"hiih\"}\t1", "expected '='"),
        ("a\x00{b=\"ddd\"} 1", "invalid value"),
        ("a 0 1\x00", "invalid timestamp"),
        // Ours: stricter than promparse.
        ("a{b=\"1\" c=\"2\"} 1", "expected ',' or '}'"),
        ("a{b=\"1\",b=\"2\"} 1", "label name \"b\" is not unique"),
        ("a{__name__=\"x\"} 1", "__name__"),
        ("# TYPE a gauge extra\n", "exactly one metric type"),
        ("# TYPE a flux\n", "unknown metric type \"flux\""),
        ("a 1 2 3", "end of the line"),
        ("a 1 1.5", "invalid timestamp"),
    ];
    for (input, expected) in cases {
        let error = err(input).to_string();
        assert!(error.contains(expected), "{input:?}: expected {expected:?} in {error}");
        assert!(error.starts_with("line 1: "), "{error}");
    }
}

#[test]
fn errors_name_the_line_and_quote_it() {
    let text = "# TYPE a counter\na 1\na{x=\"1\"} oops\nb 2\n";
    let error = err(text);
    assert_eq!(error.line, 3);
    assert_eq!(error.to_string(), "line 3: invalid value \"oops\": \"a{x=\\\"1\\\"} oops\"");
    let long = format!("a{{x=\"{}\"}} x", "y".repeat(500));
    assert!(err(&long).text.chars().count() <= 121);
}

/// What Prometheus 2.42 rejects and an earlier parser took (found by the
/// differential test, tests/exposition_corpus.rs).
#[test]
fn signed_timestamps_overflowing_values_indented_samples_and_cr_are_rejected_as_prometheus_does() {
    for text in
        ["a 1 -1\n", "a 1 +5\n", "a 1e400\n", "a -1e400\n", "   a 1\n", "a 1\r\n", &format!("{} 1\n", "n".repeat(4097))]
    {
        assert!(parse(text, &Limits::DEFAULT).is_err(), "accepted {text:?}");
    }
    for text in
        ["a 1 00001\n", "a +Inf\n", "a -inf\n", "  # indented comment\n", "# HELP a text\r\na 1\n", "a 1e-400\n"]
    {
        assert!(parse(text, &Limits::DEFAULT).is_ok(), "rejected {text:?}");
    }
}

#[test]
fn escapes_special_values_and_timestamps() {
    let payload = ok("a{x=\"back\\\\slash\",y=\"new\\nline\",z=\"tab\\tkept\",w=\"ünï\"} NaN\n\
                      b +Inf 0\nc -Inf 1700000000000\nd 1e-3\ne -0.5\nf inf\n");
    let a = &payload.samples[0];
    assert!(a.value.is_nan());
    assert_eq!(
        labels(a),
        [
            ("x".to_string(), "back\\slash".to_string()),
            ("y".into(), "new\nline".into()),
            ("z".into(), "tab\\tkept".into()),
            ("w".into(), "ünï".into())
        ]
    );
    assert!(matches!(a.label("w"), Some(Cow::Borrowed(_))), "no allocation without escapes");
    let values: Vec<(f64, Option<i64>)> = payload.samples[1..].iter().map(|s| (s.value, s.timestamp_ms)).collect();
    assert_eq!(
        values,
        [
            (f64::INFINITY, Some(0)),
            (f64::NEG_INFINITY, Some(1_700_000_000_000)),
            (0.001, None),
            (-0.5, None),
            (f64::INFINITY, None)
        ]
    );
}

#[test]
fn histogram_series_resolve_to_their_family() {
    let payload = ok("# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 0.7\nh_count 3\n\
                      # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 2\ns_bucket 1\n");
    for name in ["h_bucket", "h_sum", "h_count"] {
        assert_eq!(payload.metric_type(name), MetricType::Histogram, "{name}");
    }
    for name in ["s", "s_sum", "s_count"] {
        assert_eq!(payload.metric_type(name), MetricType::Summary, "{name}");
    }
    assert_eq!(payload.metric_type("s_bucket"), MetricType::Untyped);
    assert_eq!(payload.samples[1].label("le").as_deref(), Some("+Inf"));
}

#[test]
fn limits_fail_the_payload_at_the_breaching_line() {
    let text = "a{x=\"1\"} 1\nb{x=\"1\",y=\"2\",z=\"3\"} 2\nc 3\n";
    let with = |limits: Limits| parse(text, &limits).expect_err("limit breached");
    let none = Limits { sample_limit: 0, label_limit: 0, label_name_length_limit: 0, label_value_length_limit: 0 };
    assert_eq!(parse(text, &none).unwrap().samples.len(), 3);

    let e = with(Limits { sample_limit: 2, ..none });
    assert_eq!((e.line, e.kind.clone()), (3, ErrorKind::SampleLimit(2)));
    assert!(e.to_string().contains("sample_limit exceeded"));
    let e = with(Limits { label_limit: 2, ..none });
    assert_eq!((e.line, e.kind), (2, ErrorKind::LabelLimit { count: 3, limit: 2 }));
    let e = parse("a{long_name=\"1\"} 1", &Limits { label_name_length_limit: 4, ..none }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LabelNameLength { length: 9, limit: 4 });
    // The value limit counts unescaped bytes: `\\\\` is one byte.
    let e = parse("a{x=\"abcdef\"} 1", &Limits { label_value_length_limit: 5, ..none }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LabelValueLength { length: 6, limit: 5 });
    assert!(parse("a{x=\"ab\\\\\\\\c\"} 1", &Limits { label_value_length_limit: 5, ..none }).is_ok());
    // Exactly at a limit is fine.
    assert!(parse(text, &Limits { sample_limit: 3, label_limit: 3, ..none }).is_ok());
}

#[test]
fn many_labels_are_checked_for_duplicates_past_the_fast_path() {
    let names: Vec<String> = (0..20).map(|i| format!("l{i}=\"v\"")).collect();
    assert!(parse(&format!("a{{{}}} 1", names.join(",")), &Limits::default()).is_ok());
    let dup = format!("a{{{},l3=\"again\"}} 1", names.join(","));
    assert_eq!(parse(&dup, &Limits::default()).unwrap_err().kind, ErrorKind::DuplicateLabel("l3".into()));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn bodies_decode_under_the_size_limit() {
    let compressed = gzip(FULL.as_bytes());
    assert!(compressed.len() < FULL.len() / 4);
    assert_eq!(decode_body(compressed.clone(), Some("gzip"), 1 << 20).unwrap(), FULL);
    assert_eq!(decode_body(FULL.as_bytes().to_vec(), None, FULL.len()).unwrap(), FULL);

    // The limit applies to the decompressed size: a small gzip body can be a bomb.
    let bomb = gzip(&vec![b'a'; 1 << 20]);
    assert!(bomb.len() < 4096);
    let e = decode_body(bomb, Some("gzip"), 64 << 10).unwrap_err();
    assert!(matches!(e, BodyError::TooLarge { limit: 65536, decoded: true }), "{e}");
    assert!(e.to_string().contains("after decompression"));
    let e = decode_body(vec![b'a'; 100], Some("identity"), 99).unwrap_err();
    assert!(matches!(e, BodyError::TooLarge { decoded: false, .. }));

    assert!(matches!(decode_body(b"x".to_vec(), Some("br"), 0), Err(BodyError::UnsupportedEncoding(_))));
    assert!(matches!(decode_body(b"not gzip".to_vec(), Some("gzip"), 0), Err(BodyError::Gzip(_))));
    let e = decode_body(b"a 1\nb{x=\"\xff\"} 1\n".to_vec(), None, 0).unwrap_err();
    assert!(matches!(e, BodyError::Utf8 { line: 2 }), "{e}");
}

#[test]
fn escaped_label_values_parse_back_to_themselves() {
    for value in ["plain", r"C:\temp", r#"say "hi""#, "two\nlines", r#"\"\n"#, ""] {
        let line = format!("m{{l=\"{}\"}} 1\n", escape_label_value(value));
        let payload = parse(&line, &Limits::default()).unwrap();
        assert_eq!(payload.samples[0].label("l").as_deref(), Some(value), "{line}");
    }
    assert!(matches!(escape_label_value("plain"), std::borrow::Cow::Borrowed(_)));
}

fn known(text: &str) -> KnownSeries {
    KnownSeries::of(&ok(text))
}

#[test]
fn known_series_are_read_without_lexing_and_give_what_parse_gives() {
    let moved = FULL.replace(" 0.", " 1.").replace("} 1\n", "} 2\n");
    let known_full = known(FULL);
    assert_eq!(known_full.len(), 507);
    assert_eq!(known_full.text(0), Some(ok(FULL).samples[0].series()));
    for text in [FULL, moved.as_str(), IDENTITY] {
        check::same_outcome(&parse(text, &Limits::default()), &parse_known(text, &Limits::default(), &known_full))
            .unwrap();
    }
    let series = "a{x=\"1\"} 1\nb 2\nc{y=\"2\",z=\"\\\"q\"} 3\nd{} 4\n";
    let cases = [
        // The same series in the same order, other values and timestamps.
        "a{x=\"1\"} 5 100\nb\t-Inf\nc{y=\"2\",z=\"\\\"q\"} NaN\nd{} 7\n",
        // A line inserted, one removed, another order.
        "a{x=\"1\"} 1\nnew 0\nb 2\nc{y=\"2\",z=\"\\\"q\"} 3\nd{} 4\n",
        "a{x=\"1\"} 1\nc{y=\"2\",z=\"\\\"q\"} 3\nd{} 4\n",
        "b 2\na{x=\"1\"} 1\n",
        // The known text followed by something else than a blank and a value.
        "a{x=\"1\"}1\n",
        "a{x=\"1\"} oops\n",
        "a{x=\"1\"} 1 -5\n",
        "a{x=\"1\"} 1 2 3\n",
        "a{x=\"1\"}\n",
        "b{x=\"1\"} 1\n",
        "b {x=\"1\"} 1\n",
        "bb 2\n",
        "a{x=\"1\",x=\"2\"} 1\n",
        "# TYPE a gauge\na{x=\"1\"} 1\n",
        "a{x=\"1\"} 1\r\n",
    ];
    let known_series = known(series);
    for text in cases {
        let plain = parse(text, &Limits::default());
        check::same_outcome(&plain, &parse_known(text, &Limits::default(), &known_series))
            .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

#[test]
fn a_payload_that_lists_exactly_the_known_series_carries_their_id() {
    let text = "# TYPE a gauge\na{x=\"1\"} 1\nb 2\n";
    let known_series = known(text);
    assert_ne!(known_series.id(), known(text).id(), "every learning has its own id");
    let same = parse_known("# TYPE a gauge\na{x=\"1\"} 5\nb 6 100\n", &Limits::default(), &known_series).unwrap();
    assert_eq!(same.known_id(), Some(known_series.id()));
    for other in ["a{x=\"1\"} 1\n", "a{x=\"1\"} 1\nb 2\nc 3\n", "b 2\na{x=\"1\"} 1\n", "a{x=\"2\"} 1\nb 2\n"] {
        let payload = parse_known(other, &Limits::default(), &known_series).unwrap();
        assert_eq!(payload.known_id(), None, "{other:?}");
    }
    assert_eq!(ok(text).known_id(), None, "nothing known");
}

#[test]
fn known_series_checked_under_other_limits_are_checked_again() {
    let text = "a{x=\"1\",y=\"2\"} 1\nb 2\n";
    let known_series = known(text);
    let strict = Limits { label_limit: 1, ..Limits::default() };
    let error = parse_known(text, &strict, &known_series).unwrap_err();
    assert_eq!(error.kind, ErrorKind::LabelLimit { count: 2, limit: 1 });
    let one = Limits { sample_limit: 1, ..Limits::default() };
    let known_one = KnownSeries::of(&parse(text.split_once('\n').unwrap().0, &one).unwrap());
    assert_eq!(parse_known(text, &one, &known_one).unwrap_err().kind, ErrorKind::SampleLimit(1), "counted");
}

#[test]
fn lines_split_as_str_split_does() {
    for text in ["", "\n", "a", "a\n", "\na", "a\nb", "a\n\nb\n", "é\nü\r\n€", "x\n\n\n"] {
        let ours: Vec<&str> = super::lines(text).collect();
        let split: Vec<&str> = text.split('\n').collect();
        assert_eq!(ours, split, "{text:?}");
    }
    let long: String = (0..500).map(|i| format!("line {i}{}\n", "x".repeat(i % 70))).collect();
    assert_eq!(super::lines(&long).collect::<Vec<_>>(), long.split('\n').collect::<Vec<_>>());
}
