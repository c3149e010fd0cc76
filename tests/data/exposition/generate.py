#!/usr/bin/env python3
"""Writes the exposition corpus (issue #11): small malformed and hostile
payloads, one file each, in the categories of Prometheus's own text-parser
tests (promparse/expfmt). Run from this directory; the files are committed.
The large hostile payloads (1 MB label values, 10^6 series, a gzip bomb) are
built by tests/exposition_corpus.rs at run time instead of stored."""
import os

cases = {}

def case(name, text):
    assert name not in cases, name
    cases[name] = text if isinstance(text, bytes) else text.encode()

# A well-formed baseline.
case("ok_simple", "a 1\n")
case("ok_labels", 'a{x="1",y="2"} 3\n')
case("ok_typed_counter", "# HELP a A counter.\n# TYPE a counter\na_total 1\na 2\n")
case("ok_node_like", '# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{cpu="0",mode="idle"} 123.5\n')

# Metric names.
names = {
    "colon": "a:b", "leading_colon": ":a", "underscore": "_a", "digits_inside": "a1_2",
    "leading_digit": "1a", "dash": "a-b", "dot": "a.b", "unicode": "möter", "space_inside": "a b",
    "only_underscore": "_", "double_colon": "a::b", "uppercase": "ABC", "dollar": "a$b", "slash": "a/b",
    "brace_only": "{", "emoji": "a😀",
}
for key, name in names.items():
    case(f"name_{key}", f"{name} 1\n")
case("name_empty_with_labels", '{x="1"} 1\n')
case("name_very_long", "a" * 10000 + " 1\n")

# Label syntax.
labels = {
    "empty_braces": "a{} 1", "trailing_comma": 'a{x="1",} 1', "spaces": 'a{ x = "1" , y = "2" } 1',
    "missing_quote_open": "a{x=1\"} 1", "missing_quote_close": 'a{x="1} 1', "missing_equals": 'a{x"1"} 1',
    "missing_value": "a{x=} 1", "unterminated_brace": 'a{x="1" 1', "extra_close": 'a{x="1"}} 1',
    "missing_comma": 'a{x="1" y="2"} 1', "double_comma": 'a{x="1",,y="2"} 1', "leading_comma": 'a{,x="1"} 1',
    "empty_name": 'a{="1"} 1', "digit_name": 'a{1x="1"} 1', "dash_name": 'a{x-y="1"} 1',
    "colon_name": 'a{x:y="1"} 1', "unicode_name": 'a{ü="1"} 1', "dunder_name": 'a{__x="1"} 1',
    "name_label": 'a{__name__="b"} 1', "duplicate": 'a{x="1",x="2"} 1', "single_quotes": "a{x='1'} 1",
    "escaped_quote": r'a{x="a\"b"} 1', "escaped_backslash": r'a{x="a\\b"} 1', "escaped_newline": r'a{x="a\nb"} 1',
    "escaped_tab": r'a{x="a\tb"} 1', "escaped_unicode": r'a{x="a\u00e9b"} 1', "trailing_backslash": 'a{x="a\\"} 1',
    "raw_newline": 'a{x="a\nb"} 1', "unicode_value": 'a{x="日本語"} 1', "empty_value": 'a{x=""} 1',
    "brace_in_value": 'a{x="}"} 1', "comma_in_value": 'a{x=","} 1', "equals_in_value": 'a{x="="} 1',
    "hash_in_value": 'a{x="#"} 1', "space_before_brace": 'a {x="1"} 1', "no_space_after_brace": 'a{x="1"}1',
    "tab_separator": 'a{x="1"}\t1', "only_open": "a{ 1", "nested": 'a{x={y="1"}} 1', "semicolon": 'a{x="1";y="2"} 1',
}
for key, line in labels.items():
    case(f"label_{key}", line + "\n")

# Values.
values = [
    "1", "-1", "+1", "0", "-0", "1.5", ".5", "5.", "1e10", "1E-3", "1e+3", "1e400", "-1e400", "1e-400",
    "+Inf", "-Inf", "Inf", "inf", "+inf", "INF", "Infinity", "NaN", "nan", "NAN", "0x1p3", "0x10", "1_000",
    "", "abc", "1.2.3", "1e", "--1", "1,5", "١", "9007199254740993", "0.1e-7", "00012", "1 2 3",
]
for i, v in enumerate(values):
    case(f"value_{i:02d}", f"a {v}\n")

# Timestamps.
stamps = ["1395066363000", "-1", "0", "1.5", "1e3", "abc", "9223372036854775807", "9223372036854775808",
          "1395066363000 extra", "+5", "00001", "1_0"]
for i, t in enumerate(stamps):
    case(f"timestamp_{i:02d}", f"a 1 {t}\n")

# Comments, HELP and TYPE.
meta = {
    "type_twice": "# TYPE a counter\n# TYPE a gauge\na 1\n",
    "type_after_samples": "a 1\n# TYPE a counter\n",
    "type_unknown": "# TYPE a foo\na 1\n",
    "type_uppercase": "# TYPE a COUNTER\na 1\n",
    "type_no_type": "# TYPE a\na 1\n",
    "type_no_name": "# TYPE\na 1\n",
    "type_extra_token": "# TYPE a counter extra\na 1\n",
    "type_other_family": "# TYPE b counter\na 1\n",
    "type_invalid_name": "# TYPE 1a counter\na 1\n",
    "type_untyped": "# TYPE a untyped\na 1\n",
    "type_unknown_openmetrics": "# TYPE a unknown\na 1\n",
    "type_stateset": "# TYPE a stateset\na 1\n",
    "type_gaugehistogram": "# TYPE a gaugehistogram\na 1\n",
    "help_twice": "# HELP a one\n# HELP a two\na 1\n",
    "help_empty": "# HELP a\na 1\n",
    "help_escapes": "# HELP a a\\\\b\\nc\na 1\n",
    "help_bad_escape": "# HELP a a\\qb\na 1\n",
    "help_no_name": "# HELP\na 1\n",
    "help_unicode": "# HELP a 日本語\na 1\n",
    "comment_plain": "# just a comment\na 1\n",
    "comment_no_space": "#TYPE a counter\na 1\n",
    "comment_eof": "# EOF\na 1\n",
    "comment_only": "# nothing here\n",
    "hash_after_value": "a 1 # comment\n",
    "hash_mid_line": "a # 1\n",
    "type_tabs": "#\tTYPE\ta\tcounter\na 1\n",
    "type_counter_gauge_samples": "# TYPE a counter\na -5\n",
}
for key, text in meta.items():
    case(f"meta_{key}", text)

# Histograms and summaries.
hist = {
    "ok": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n',
    "no_inf": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 3\nh_count 1\n',
    "le_text": '# TYPE h histogram\nh_bucket{le="x"} 1\nh_bucket{le="+Inf"} 1\n',
    "no_le": "# TYPE h histogram\nh_bucket 1\n",
    "le_inf_forms": '# TYPE h histogram\nh_bucket{le="Inf"} 1\nh_bucket{le="inf"} 1\n',
    "decreasing": '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="2"} 3\nh_bucket{le="+Inf"} 5\n',
    "count_only": "# TYPE h histogram\nh_count 2\n",
    "plain_sample": "# TYPE h histogram\nh 2\n",
    "sum_without_type": "h_sum 1\nh_count 1\n",
    "bucket_without_type": 'h_bucket{le="1"} 1\n',
    "summary_ok": '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\n',
    "summary_quantile_text": '# TYPE s summary\ns{quantile="median"} 1\n',
    "summary_no_quantile": "# TYPE s summary\ns 1\n",
    "summary_bucket": '# TYPE s summary\ns_bucket{le="1"} 1\n',
    "interleaved": '# TYPE h histogram\nh_bucket{le="1"} 1\nx 1\nh_bucket{le="+Inf"} 1\n',
    "le_exponent": '# TYPE h histogram\nh_bucket{le="1e3"} 1\nh_bucket{le="+Inf"} 1\n',
    "negative_count": "# TYPE h histogram\nh_count -1\n",
    "nan_sum": "# TYPE h histogram\nh_sum NaN\nh_count 0\n",
}
for key, text in hist.items():
    case(f"hist_{key}", text)

# Whitespace and line structure.
ws = {
    "crlf": b"a 1\r\nb 2\r\n",
    "cr_only": b"a 1\rb 2\r",
    "no_trailing_newline": b"a 1",
    "blank_lines": b"\n\na 1\n\n\nb 2\n\n",
    "leading_spaces": b"   a 1\n",
    "trailing_spaces": b"a 1   \n",
    "tabs": b"a\t1\n",
    "many_spaces": b"a      1\n",
    "space_only_line": b"a 1\n   \nb 2\n",
    "empty": b"",
    "only_newlines": b"\n\n\n",
    "vertical_tab": b"a\x0b1\n",
    "form_feed": b"a\x0c1\n",
    "nbsp": "a\u00a01\n".encode(),
    "crlf_in_labels": b'a{x="1",\r\ny="2"} 1\r\n',
    "leading_spaces_comment": b"   # a comment\n  # TYPE a counter\na 1\n",
    "cr_in_help": b"# HELP a some text\r\na 1\n",
    "cr_after_labels": b'a{x="1"}\r 1\n',
}
for key, text in ws.items():
    case(f"ws_{key}", text)

# Hostile bytes.
hostile = {
    "nul_in_value": b"a 1\x00\n",
    "nul_in_name": b"a\x00b 1\n",
    "nul_in_label_value": b'a{x="a\x00b"} 1\n',
    "nul_line": b"\x00\n",
    "nul_after_newline": b"a 1\n\x00",
    "invalid_utf8_value": b"a \xff\n",
    "invalid_utf8_label": b'a{x="\xff\xfe"} 1\n',
    "invalid_utf8_comment": b"# \xff\na 1\n",
    "invalid_utf8_help": b"# HELP a \xc3\x28\na 1\n",
    "overlong_utf8": b'a{x="\xc0\xaf"} 1\n',
    "surrogate_utf8": b'a{x="\xed\xa0\x80"} 1\n',
    "bom_start": b"\xef\xbb\xbfa 1\n",
    "bom_middle": b"a 1\n\xef\xbb\xbfb 2\n",
    "utf16": "a 1\n".encode("utf-16"),
    "control_chars_value": b'a{x="\x01\x02\x1b[31m"} 1\n',
    "ansi_escape_name": b"\x1b[31ma 1\n",
    "del_char": b"a\x7f 1\n",
    "binary_garbage": bytes(range(256)),
    "html": b"<html><body>Not Found</body></html>\n",
    "json": b'{"metric": "a", "value": 1}\n',
    "openmetrics_eof": b"# TYPE a counter\na_total 1\n# EOF\n",
    "openmetrics_exemplar": b'a_total 1 # {trace_id="abc"} 1.0\n',
    "protobuf_like": b"\x0a\x03abc\x12\x04help\x18\x00",
    "gzip_magic_plain": b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
    "many_labels_65": ("a{" + ",".join(f'l{i}="v"' for i in range(65)) + "} 1\n").encode(),
    "many_labels_64": ("a{" + ",".join(f'l{i}="v"' for i in range(64)) + "} 1\n").encode(),
    "label_name_257": ("a{" + "n" * 257 + '="v"} 1\n').encode(),
    "label_name_256": ("a{" + "n" * 256 + '="v"} 1\n').encode(),
    "label_value_4097": ('a{x="' + "v" * 4097 + '"} 1\n').encode(),
    "label_value_4096": ('a{x="' + "v" * 4096 + '"} 1\n').encode(),
    "escaped_value_4096": ('a{x="' + "\\\\" * 4096 + '"} 1\n').encode(),
    "deep_braces": ("a" + "{" * 1000 + " 1\n").encode(),
    "long_line_100k": ("a " + "1" * 100000 + "\n").encode(),
    "duplicate_series": b'a{x="1"} 1\na{x="1"} 2\n',
    "duplicate_series_reordered": b'a{x="1",y="2"} 1\na{y="2",x="1"} 2\n',
    "same_name_many_types": b"# TYPE a counter\na 1\n# TYPE a gauge\na 2\n",
}
for key, text in hostile.items():
    case(f"hostile_{key}", text)

# Mixed: one bad line among good ones fails the whole payload.
case("mixed_bad_last", "a 1\nb 2\nc{ 3\n")
case("mixed_bad_first", "c{ 3\na 1\nb 2\n")
case("mixed_good_many", "".join(f'm{{i="{i}"}} {i}\n' for i in range(200)))

here = os.path.dirname(os.path.abspath(__file__))
for old in os.listdir(here):
    if old.endswith(".prom"):
        os.remove(os.path.join(here, old))
for name, data in sorted(cases.items()):
    with open(os.path.join(here, name + ".prom"), "wb") as f:
        f.write(data)
print(len(cases), "cases")
