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

/// A cell as the plugin's driver reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Num(f64),
    Text(String),
    Null,
}

impl Cell {
    pub fn num(&self) -> f64 {
        match self {
            Cell::Num(v) => *v,
            other => panic!("a number expected, got {other:?}"),
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Cell::Text(t) => t,
            other => panic!("text expected, got {other:?}"),
        }
    }
}

/// Rows as column name → cell.
pub type Rows = Vec<BTreeMap<String, Cell>>;

/// Runs `sql` and reads every cell by its SQLite type, as the plugin does.
pub async fn run(pool: &sqlx::SqlitePool, sql: &str) -> Result<Rows, sqlx::Error> {
    use sqlx::{Column, Row, TypeInfo, ValueRef};
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|row| {
            row.columns()
                .iter()
                .map(|column| {
                    let i = column.ordinal();
                    let raw = row.try_get_raw(i).unwrap();
                    let cell = if raw.is_null() {
                        Cell::Null
                    } else {
                        match raw.type_info().name() {
                            "INTEGER" => Cell::Num(row.get::<i64, _>(i) as f64),
                            "REAL" => Cell::Num(row.get::<f64, _>(i)),
                            _ => Cell::Text(row.get::<String, _>(i)),
                        }
                    };
                    (column.name().to_string(), cell)
                })
                .collect()
        })
        .collect())
}

/// The `EXPLAIN QUERY PLAN` lines of `sql`.
pub async fn plan(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

/// A connection as the plugin opens one: read-write open (not `mode=ro`),
/// then the provisioned `_pragma=busy_timeout(5000)&_pragma=query_only(1)`
/// (modernc's URL syntax; sqlx takes the same pragmas as options).
pub async fn plugin_reader(db: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(std::time::Duration::from_millis(5000))
        .pragma("query_only", "1");
    sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.expect("plugin reader")
}

/// The provisioned alert rules file.
pub const ALERT_RULES: &str = "infra/grafana/provisioning/alerting/fleetscrape-rules.yml";

/// One provisioned alert rule, as Grafana's alerting evaluates it: query A
/// over the last `range_seconds`, then threshold B on each row's number.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub uid: String,
    pub title: String,
    pub sql: String,
    pub range_seconds: i64,
    /// `gt` or `lt`.
    pub op: String,
    pub threshold: f64,
    pub no_data: String,
}

impl AlertRule {
    /// Whether a row's value fires the threshold.
    pub fn fires(&self, value: f64) -> bool {
        match self.op.as_str() {
            "gt" => value > self.threshold,
            "lt" => value < self.threshold,
            other => panic!("{}: evaluator {other} is not read here", self.uid),
        }
    }

    /// The query as the plugin receives it when evaluated at `now_ms` over
    /// `range_seconds`: only `$__from`/`$__to` replaced, then its macro.
    pub fn expanded(&self, now_ms: i64, range_seconds: i64) -> String {
        expand(&self.sql, &BTreeMap::new(), now_ms - range_seconds * 1000, now_ms)
    }
}

/// The rules of `file` (YAML as Grafana reads it), in file order.
pub fn alert_rules(file: &serde_json::Value) -> Vec<AlertRule> {
    let mut out = Vec::new();
    for group in file["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let data = rule["data"].as_array().expect("data");
            let query = data.iter().find(|d| d["datasourceUid"] != "__expr__").expect("a query");
            let condition = data.iter().find(|d| d["refId"] == rule["condition"]).expect("the condition's entry");
            let evaluator = &condition["model"]["conditions"][0]["evaluator"];
            out.push(AlertRule {
                uid: rule["uid"].as_str().unwrap().to_string(),
                title: rule["title"].as_str().unwrap().to_string(),
                sql: query["model"]["rawQueryText"].as_str().unwrap().to_string(),
                range_seconds: query["relativeTimeRange"]["from"].as_i64().unwrap(),
                op: evaluator["type"].as_str().unwrap().to_string(),
                threshold: evaluator["params"][0].as_f64().unwrap(),
                no_data: rule["noDataState"].as_str().unwrap().to_string(),
            });
        }
    }
    out
}

/// What Grafana makes of a rule's rows: one series per row, labelled by its
/// text columns (`name=value,…`), with its one number.
pub fn alert_series(rule: &AlertRule, rows: &Rows) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for row in rows {
        let mut labels = Vec::new();
        let mut number = None;
        for (column, cell) in row {
            match cell {
                Cell::Text(t) => labels.push(format!("{column}={t}")),
                Cell::Num(v) => {
                    assert!(number.is_none(), "{}: one number per row, got {row:?}", rule.uid);
                    number = Some(*v);
                }
                Cell::Null => panic!("{}: a NULL in {row:?} (Grafana would drop the row or fail)", rule.uid),
            }
        }
        let key = labels.join(",");
        let value = number.unwrap_or_else(|| panic!("{}: no number in {row:?}", rule.uid));
        assert!(out.insert(key.clone(), value).is_none(), "{}: two rows labelled {key}", rule.uid);
    }
    out
}
