//! How a panel's SQL reaches SQLite: Grafana's frontend expands the
//! dashboard's variables, then the frser-sqlite-datasource backend expands
//! `$__from`/`$__to` and its one macro. Shared by the dashboard tests and the
//! fill benchmark's dashboard latency table (included there by path), so the
//! benchmark times exactly the SQL the tests check.

use std::collections::BTreeMap;

use regex::Regex;

/// Grafana's frontend: dashboard variables (`${v:singlequote}`, `$v`), then
/// the plugin's backend: `$__from`/`$__to` (ms) and its one macro.
pub fn expand(sql: &str, vars: &BTreeMap<&str, Vec<String>>, from_ms: i64, to_ms: i64) -> String {
    let mut out = sql.to_string();
    for (name, values) in vars {
        let quoted: Vec<String> = values.iter().map(|v| format!("'{}'", v.replace('\'', "\\'"))).collect();
        out = out.replace(&format!("${{{name}:singlequote}}"), &quoted.join(","));
        out = out.replace(&format!("${name}"), &values.join(","));
    }
    out = out.replace("$__from", &from_ms.to_string()).replace("$__to", &to_ms.to_string());
    // pkg/plugin/macros.go: `\$__([_a-zA-Z0-9]+)\(([^\)]*)\)`; the only macro is
    // unixEpochGroupSeconds(col, N) → cast((col / N) as int) * N, N an integer literal.
    let macro_re = Regex::new(r"\$__([_a-zA-Z0-9]+)\(([^\)]*)\)").unwrap();
    macro_re
        .replace_all(&out, |c: &regex::Captures<'_>| {
            assert_eq!(&c[1], "unixEpochGroupSeconds", "the plugin has no macro {}", &c[1]);
            let args: Vec<&str> = c[2].split(',').map(str::trim).collect();
            let seconds: i64 =
                args[1].parse().unwrap_or_else(|_| panic!("bucket must be an integer literal: {:?}", args[1]));
            format!("cast(({} / {seconds}) as int) * {seconds}", args[0])
        })
        .into_owned()
}
