//! fleetscrape: discovers EC2 instances behind ALB listeners and Auto Scaling
//! groups, scrapes each one with per-instance attribution, and stores samples
//! in SQLite for Grafana.
//!
//! # Layout
//!
//! The modules follow the pipeline, from what the user writes to what is
//! stored, and import only down it (`tests/layering.rs` checks this;
//! docs/architecture.md has the picture):
//!
//! - Leaves, usable everywhere: [`clock`] (epoch seconds), [`duration`]
//!   (Prometheus durations: `15s`, `1m30s`, `15d`), [`exposition`] (the text
//!   format's zero-copy parser with scrape limits, and gzip under a size limit:
//!   the workspace crate `crates/exposition`, re-exported), [`ids`] (typed
//!   ids: `InstanceId`), [`labels`] (label
//!   sets, label-name rules); then [`self_metrics`] (the registry of
//!   fleetscrape's own metrics: each family declared beside the component
//!   that owns it, one encoder); then [`logging`] (stderr through a queue
//!   that never blocks), [`record`] (what a scrape produces: batches,
//!   records, failure reasons) and [`relabel`] (Prometheus `relabel_configs`).
//! - [`config`]: the YAML configuration, parsed (`RawConfig`) then validated
//!   into [`config::Config`], with its defaults; every error names its key
//!   and line.
//! - [`discovery`]: ELBv2 → Auto Scaling → EC2, joined into one
//!   [`discovery::Target`] per instance (which owns its instance labels),
//!   refreshed periodically.
//! - Three consumers of a topology, none importing another: [`scrape`]
//!   (scraping directly or through ALB listeners, attribution of every payload,
//!   batches handed to a [`scrape::Sink`]), [`store`] (SQLite: the write path,
//!   CPU at ingest, compaction, retention, the SQL interface of `docs/sql.md`)
//!   and [`remote_write`] (Prometheus remote-write 1.0).
//! - [`report`] (CPU per instance from a database, as a table and a PNG
//!   chart) and [`emulator`] (a loopback ALB stand-in for tests and the demo).
//! - [`serve`]: the HTTP endpoint (`/metrics`, `/healthz`, `/ready`,
//!   `/api/targets`, `/api/sd`).
//! - [`daemon`]: `fleetscrape run`, wiring the above together; its
//!   [`daemon::output`] fans batches out to SQLite and remote_write.
//! - [`cli`]: the command-line interface; the binary in `main.rs` only parses
//!   arguments and reports errors.

// One exception, allowed where it is: `store::raw` borrows sqlx's SQLite
// handle for the writer's bulk statements.
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod duration;
pub mod emulator;
pub mod ids;
pub use fleetscrape_exposition as exposition;
pub mod labels;
pub mod logging;
pub mod preflight;
pub mod record;
pub mod relabel;
pub mod reminder;
pub mod remote_write;
pub mod report;
pub mod scrape;
pub mod self_metrics;
pub mod serve;
pub mod store;
