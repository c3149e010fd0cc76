//! `fleetscrape run`: discovery, scraping, storage and the HTTP endpoint,
//! until shutdown (or once, with `--once`).
//!
//! Tasks: the [`Refresher`] publishes topologies; the topology sink turns each
//! into `instances`, `asg_membership` and `events` rows; the [`Scraper`] runs
//! its jobs; the store writer commits batches; the HTTP server serves
//! `/metrics`, `/healthz` and `/api/targets`.
//!
//! **One shutdown budget** (`shutdown_timeout`, 8 s by default, under
//! Docker's 10 s before SIGKILL): on SIGTERM/SIGINT no new round starts and a
//! discovery refresh in progress is abandoned; rounds in flight get the first
//! half of the budget to finish, then are cut (requests still out are
//! abandoned and counted; what the rounds have is stored); the writer's final
//! flush and the database close get the rest. `run --once` honours it too.

pub mod output;
pub mod self_record;
mod topology_sink;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::discovery::{self, Discoverer, Refresher};
use crate::remote_write::{self, RemoteWrite};
use crate::scrape::{self, HttpClient, Scraper, Settings};
use crate::serve;
use crate::store::{self, Batch, Store, WriterConfig};
use output::Output;
pub use topology_sink::TopologySink;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Another `run` writes to the same database.
    #[error(transparent)]
    Lock(#[from] store::lock::LockError),
    /// AWS set-up or the first discovery (`--once`) failed.
    #[error(transparent)]
    Discovery(#[from] discovery::Error),
    /// The scrape client could not be built.
    #[error(transparent)]
    Client(#[from] scrape::client::ClientError),
    /// A remote_write client could not be built.
    #[error(transparent)]
    RemoteWrite(#[from] remote_write::ClientError),
    /// The final flush did not finish within `shutdown_timeout`.
    #[error("the shutdown budget ({0:?}) ran out before the final flush finished; the last batch may be lost")]
    ShutdownBudget(std::time::Duration),
    /// `run --once` stored no target: every scrape failed, or there was none.
    #[error("no target was stored: {0}")]
    NothingStored(PassSummary),
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {address} (http.listen_address): {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a `--once` pass that stored nothing saw: failures by reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassSummary {
    /// Failed instance scrapes by reason.
    pub failed: std::collections::BTreeMap<scrape::FailureReason, u64>,
}

impl std::fmt::Display for PassSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: u64 = self.failed.values().sum();
        if total == 0 {
            return f.write_str("discovery found no target to scrape");
        }
        let reasons: Vec<String> = self.failed.iter().map(|(reason, n)| format!("{reason}: {n}")).collect();
        write!(f, "{total} failed ({})", reasons.join(", "))
    }
}

/// Runs until `shutdown` is cancelled, or one discovery and one scrape pass
/// when `once`; either way the store is flushed before returning.
///
/// # Errors
/// [`Error`] when a part cannot start (with `once`, also when discovery fails).
pub async fn run(config: Config, once: bool, shutdown: CancellationToken) -> Result<(), Error> {
    // Bound before anything is created, so that a port in use leaves no new
    // database behind. `--once` serves nothing: a one-off pass beside a
    // running daemon must not fight it for its port.
    let listener = match once {
        true => None,
        false => Some(
            tokio::net::TcpListener::bind(config.http.listen_address)
                .await
                .map_err(|source| Error::Listen { address: config.http.listen_address, source })?,
        ),
    };
    // Held until `run` returns: one writer per database.
    let (_lock, store) = match &config.storage.path {
        Some(path) => {
            let (lock, store) = open_store(path).await?;
            (Some(lock), Some(store))
        }
        None => {
            info!("storage.path is null: no SQLite, samples go to remote_write only");
            (None, None)
        }
    };
    let mut refresher =
        Refresher::new(Discoverer::from_config(&config).await?, config.discovery.refresh_interval.as_std())
            .with_early_refresh_min_interval(config.discovery.early_refresh_min_interval.as_std())
            .with_jitter(discovery::REFRESH_JITTER);
    if once {
        refresher = refresher.without_retries();
    }
    if !config.scrape.enabled {
        refresher = refresher.without_scraping();
    }
    let topology = refresher.subscribe();
    let stop_writer = CancellationToken::new();
    let (writer, writer_task) = match store {
        Some(store) => {
            let (writer, task) = store::spawn_writer(store, writer_config(&config), stop_writer.clone());
            (Some(writer), Some(task))
        }
        None => (None, None),
    };
    let remote = RemoteWrite::start(&config, topology.clone()).await?;
    let output = Output::new(writer.clone(), Some(remote.clone()));
    let client = HttpClient::new(&config.scrape)?;
    // Without a refresh loop (--once) nobody would answer an early refresh.
    let early = (!once).then(|| refresher.early_refresh());
    let scraper = Scraper::new(Settings::from_config(&config), client, topology.clone(), output.clone(), early);

    let http_state = serve::State {
        scrape: scraper.state(),
        discovery: refresher.stats(),
        writer: writer.as_ref().map_or_else(Arc::default, |w| Arc::clone(&w.stats)),
        writer_queue: writer.as_ref().map_or_else(Arc::default, |w| Arc::clone(w.room())),
        topology: topology.clone(),
        remote: Some(remote.clone()),
        sd: serve::SdSettings {
            direct: config.scrape.mode != crate::config::ScrapeMode::ViaAlb || !config.scrape.enabled,
        },
        readiness: serve::ReadinessSettings {
            scrape_enabled: config.scrape.enabled,
            refresh_interval: config.discovery.refresh_interval.as_std().as_secs_f64(),
        },
    };
    // What `/metrics` reads, its counters copied to `self_metrics` when there is a database.
    let self_state = writer.is_some().then(|| http_state.clone());
    let http_stop = shutdown.clone();
    let http = listener.map(|listener| {
        info!(address = %config.http.listen_address, "serving /metrics, /healthz, /ready, /api/targets, /api/sd");
        tokio::spawn(async move { serve::serve(listener, http_state, http_stop).await })
    });

    let budget = config.shutdown_timeout.as_std();
    let shutdown_started = spawn_cutter(shutdown.clone(), scraper.cutter(), budget / 2);
    let mut sink = TopologySink::default();
    if !config.scrape.enabled {
        info!("scrape.enabled is false: discovery only (/api/sd, /api/targets, the instances table)");
    }
    let result = if once {
        run_once(&refresher, &scraper, &output, &mut sink, &shutdown, config.scrape.enabled).await
    } else {
        let mut tasks = vec![
            tokio::spawn(record_refresh_outcomes(refresher.outcomes(), output.clone(), shutdown.clone())),
            tokio::spawn(refresher.run(shutdown.clone())),
            tokio::spawn(sink.run(topology, output.clone(), shutdown.clone())),
            tokio::spawn(remote.clone().watch_topology(shutdown.clone())),
        ];
        if config.scrape.enabled {
            tasks.push(tokio::spawn(scraper.clone().run(shutdown.clone())));
        }
        if let Some(state) = self_state {
            let interval = self_record::INTERVAL;
            tasks.push(tokio::spawn(self_record::run(state, output.clone(), interval, shutdown.clone())));
        }
        shutdown.cancelled().await;
        info!(budget_seconds = budget.as_secs_f64(), "shutting down");
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    };
    shutdown.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    // The end of input: every producer above has returned. The writer stops
    // when its channel closes (the last handles, dropped here) or when told
    // to (a handle held elsewhere); either way it drains what is queued
    // before its final flush, so neither order loses a batch.
    drop((writer, output, scraper));
    stop_writer.cancel();
    let started = shutdown_started.await.unwrap_or_else(|_| tokio::time::Instant::now());
    let deadline = started + budget;
    // What remote_write still holds and the store's last batch, side by side,
    // in what is left of the one budget.
    let flush = async {
        let store = async {
            if let Some(task) = writer_task
                && let Ok(store) = task.await
            {
                store.close().await;
            }
        };
        let remote_deadline = deadline.checked_sub(Duration::from_millis(200)).unwrap_or(deadline);
        tokio::join!(store, remote.shutdown(remote_deadline));
    };
    if tokio::time::timeout_at(deadline, flush).await.is_err() {
        tracing::error!(budget_seconds = budget.as_secs_f64(), "shutdown budget spent before the final flush finished");
        return Err(Error::ShutdownBudget(budget));
    }
    result
}

/// Creates the database's directory, takes the writer lock, opens the store.
async fn open_store(path: &std::path::Path) -> Result<(store::lock::WriterLock, Store), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        store::create_directory(dir)?;
    }
    let lock = store::lock::WriterLock::acquire(path)?;
    let store = Store::open(path).await?;
    info!(path = %store.path().display(), "database open");
    Ok((lock, store))
}

fn writer_config(config: &Config) -> WriterConfig {
    WriterConfig {
        flush_interval: config.storage.flush_interval.as_std(),
        retention: config.storage.retention.to_store(),
        // Longer than a sample takes from its request (at most one interval
        // late, for a via-ALB round) to its commit (a flush).
        compaction_delay: (config.scrape.interval.as_std() * 2 + config.storage.flush_interval.as_std() * 2)
            .max(Duration::from_secs(30)),
        ..WriterConfig::default()
    }
}

/// Waits for shutdown, then cuts the rounds in flight after `rounds_share`;
/// returns when shutdown started.
fn spawn_cutter(
    shutdown: CancellationToken,
    cut: CancellationToken,
    rounds_share: std::time::Duration,
) -> tokio::task::JoinHandle<tokio::time::Instant> {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(rounds_share).await;
            cut.cancel();
        });
        started
    })
}

async fn run_once(
    refresher: &Refresher,
    scraper: &Scraper,
    writer: &Output,
    sink: &mut TopologySink,
    shutdown: &CancellationToken,
    scrape: bool,
) -> Result<(), Error> {
    // A signal during discovery ends the pass at once (no AWS retries to sit
    // out); once scraping, the shutdown budget cuts the rounds.
    let refreshed = tokio::select! {
        refreshed = refresher.refresh() => refreshed,
        () = shutdown.cancelled() => return Ok(()),
    };
    let outcome = refresher.outcomes().borrow().clone();
    if let Some(outcome) = outcome {
        writer.send(Batch { components: vec![discovery_status(&outcome)], ..Batch::default() }).await;
    }
    let topology = refreshed?;
    writer.send(sink.batch_for(&topology, crate::clock::now_seconds())).await;
    if !scrape {
        return Ok(());
    }
    scraper.run_once().await;
    let counters = scraper.state().counters();
    // A pass cut by a signal is a requested stop, not a failure.
    if counters.scrapes_stored.values().sum::<u64>() == 0 && !shutdown.is_cancelled() {
        return Err(Error::NothingStored(PassSummary { failed: counters.scrape_failures }));
    }
    Ok(())
}

/// The `component_status` row of a refresh.
fn discovery_status(outcome: &discovery::RefreshOutcome) -> store::ComponentRecord {
    store::ComponentRecord {
        component: store::Component::Discovery,
        checked: outcome.time,
        ok: outcome.error.is_none(),
        error: outcome.error.clone(),
    }
}

/// Writes each refresh's outcome to `component_status`.
async fn record_refresh_outcomes(
    mut outcomes: tokio::sync::watch::Receiver<Option<discovery::RefreshOutcome>>,
    writer: Output,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = outcomes.changed() => if changed.is_err() { return },
        }
        let Some(outcome) = outcomes.borrow_and_update().clone() else { continue };
        writer.send(Batch { components: vec![discovery_status(&outcome)], ..Batch::default() }).await;
    }
}
