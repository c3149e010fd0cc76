//! The command-line interface: argument definitions and the commands.
//! `main.rs` parses, sets up logging, and reports the error this returns.

mod output;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::discovery::Discoverer;

/// Discovers EC2 instances behind ALB listeners and Auto Scaling groups and
/// scrapes each one with per-instance attribution.
#[derive(Debug, Parser)]
#[command(name = "fleetscrape", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', global = true, env = "FLEETSCRAPE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover, scrape and store until SIGINT or SIGTERM (then flush and exit 0).
    Run {
        /// One discovery and one scrape pass (every member reached or its
        /// round's budget spent), then flush and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run one discovery against AWS and print every instance found, with its paths and labels.
    Discover {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Validate the configuration and print the effective values (defaults filled in, paths resolved).
    CheckConfig,
    /// Print CPU per instance from a fleetscrape database and draw it as a PNG chart (no config needed).
    Report {
        /// The database, e.g. data/demo.db.
        #[arg(long)]
        db: PathBuf,
        /// Where to write the chart.
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

/// How `discover` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people: one row per instance and listener.
    Table,
    /// A JSON array for programs: one object per instance and listener.
    Json,
}

impl Cli {
    /// The log level used when `RUST_LOG` is not set: one-shot commands keep
    /// stderr for errors, long-running ones report progress.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Run { .. } => "info",
            Command::Discover { .. } | Command::CheckConfig | Command::Report { .. } => "warn",
        }
    }
}

/// Logs to stderr at `default_filter` unless `RUST_LOG` says otherwise, with
/// colours only where [`log_colors`] allows them. For every binary of the crate.
pub fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = log_colors(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Whether log lines carry ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
/// A pipe, a file or journald gets plain text.
pub fn log_colors(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Runs the parsed command.
///
/// # Errors
/// Any failure, with context, for `main` to print on one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // `report` reads a database and needs no configuration; the others do.
    let config = || Config::load(&cli.config);
    match cli.command {
        Command::Report { db, png } => report(&db, png.as_deref()).await,
        Command::CheckConfig => check_config(&config()?),
        Command::Discover { output } => discover(&config()?, output).await,
        Command::Run { once } => {
            let config = config()?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            crate::daemon::run(config, once, shutdown).await?;
            Ok(())
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match terminate {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("signal received");
    token.cancel();
}

async fn report(db: &std::path::Path, png: Option<&std::path::Path>) -> anyhow::Result<()> {
    if !db.is_file() {
        anyhow::bail!("database {}: not found", db.display());
    }
    let history = crate::report::read(db).await?;
    print!("{}", crate::report::table(&history));
    if let Some(png) = png {
        crate::report::draw(&history, png)?;
        println!("chart written to {}", png.display());
    }
    Ok(())
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let yaml = config.to_yaml().context("printing the effective configuration")?;
    println!("{}", yaml.trim_end());
    Ok(())
}

async fn discover(config: &Config, format: OutputFormat) -> anyhow::Result<()> {
    let discoverer = Discoverer::from_config(config).await?;
    let refresh =
        discoverer.discover().await.with_context(|| format!("discovery against {} failed", discoverer.endpoint()))?;
    let text = match format {
        OutputFormat::Json => output::json(&refresh.topology)?,
        OutputFormat::Table => output::table(&refresh),
    };
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(super::log_colors(true, None));
        assert!(super::log_colors(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!super::log_colors(true, Some(OsStr::new("1"))));
        assert!(!super::log_colors(false, None), "a pipe or a file gets plain text");
        assert!(!super::log_colors(false, Some(OsStr::new("1"))));
    }
}
