//! fleetscrape: discovers EC2 instances behind ALB listeners and Auto Scaling
//! groups, scrapes each one with per-instance attribution, and stores samples
//! in SQLite for Grafana.
//!
//! # Layout
//!
//! The modules follow the pipeline, from what the user writes to what is stored:
//!
//! - [`config`]: the YAML configuration, parsed (`RawConfig`) then validated
//!   into [`config::Config`]; every error names its key and line.
//! - [`duration`]: durations in Prometheus syntax (`15s`, `1m30s`, `15d`).
//! - [`exposition`]: the Prometheus text format: a zero-copy parser with
//!   scrape limits, and gzip decoding under a size limit (the workspace
//!   crate `crates/exposition`, re-exported here).
//! - [`labels`]: label sets and Prometheus label-name rules.
//! - [`relabel`]: Prometheus `relabel_configs`, applied to discovered targets.
//! - [`discovery`]: ELBv2 → Auto Scaling → EC2 discovery, joined into one
//!   [`discovery::Target`] per instance, refreshed periodically.
//! - [`serve`]: the HTTP endpoint (`/metrics`, `/healthz`, `/api/targets`).
//! - [`report`]: CPU per instance from a database, as a table and a PNG chart.
//! - [`daemon`]: `fleetscrape run`, wiring all of the above together.
//! - [`emulator`]: a loopback ALB stand-in (the `alb-emulator` binary) for
//!   tests and the demo; not part of the scrape path.
//! - [`scrape`]: scraping directly or through ALB listeners, attribution of
//!   every payload to the instance that produced it.
//! - [`store`]: SQLite (sqlx, `migrations/`): the write path, CPU utilization
//!   at ingest, retention, and the SQL interface of `docs/sql.md`.
//! - [`cli`]: the command-line interface (`discover`, `check-config`); the
//!   binary in `main.rs` only parses arguments and reports errors.

// One exception, allowed where it is: `store::raw` borrows sqlx's SQLite
// handle for the writer's bulk statements.
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod duration;
pub mod emulator;
pub use fleetscrape_exposition as exposition;
pub mod labels;
pub mod output;
pub mod relabel;
pub mod remote_write;
pub mod report;
pub mod scrape;
pub mod serve;
pub mod store;
