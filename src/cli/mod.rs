//! The command-line interface: argument definitions and the commands.
//! `main.rs` parses, sets up logging, and reports the error this returns.

mod output;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::discovery::Discoverer;

pub use crate::logging::{LogFormat, LogPipe, dropped_lines};

/// Discovers EC2 instances behind ALB listeners and Auto Scaling groups and
/// scrapes each one with per-instance attribution.
#[derive(Debug, Parser)]
#[command(name = "fleetscrape", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', global = true, env = "FLEETSCRAPE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// How log lines on stderr are written: text for people, JSON (one object per line) for log shippers.
    #[arg(long, global = true, env = "FLEETSCRAPE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Whether `--config` was given on the command line (not from the
    /// environment or the default): `report` refuses it rather than ignore it.
    #[arg(skip)]
    pub config_on_command_line: bool,
}

impl Cli {
    /// Parses the process's arguments (exits with clap's message and code 2
    /// on a usage error), noting where `--config` came from.
    pub fn parse_args() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let on_command_line =
            |m: &clap::ArgMatches| m.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
        cli.config_on_command_line =
            on_command_line(&matches) || matches.subcommand().is_some_and(|(_, sub)| on_command_line(sub));
        cli
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover, scrape and store until SIGINT or SIGTERM (then flush and exit 0).
    #[command(after_help = "Exit codes: 0 done (or stopped by SIGINT/SIGTERM); 1 an error (one line on stderr); \
                            2 a usage error; 3 --once stored no target (each failure is logged at warn).")]
    Run {
        /// One discovery and one scrape pass (every member reached or its
        /// round's budget spent), then flush and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run one discovery against AWS and print every instance found, with its paths and labels.
    #[command(after_help = "An AWS endpoint that refuses connections fails after aws.max_attempts attempts of \
                            aws.connect_timeout (3s) each; one that accepts and never answers fails after \
                            aws.call_timeout (10s) for the whole call, retries included.")]
    Discover {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Validate the configuration and print the effective values (defaults filled in, paths resolved).
    CheckConfig,
    /// Check the whole setup before `run`: files, credentials and permissions, discovery, each scrape path,
    /// storage, remote_write; one line per check (✓ or ✗ with the fix).
    #[command(after_help = "Exit codes: 0 every check holds; 1 a check failed (each ✗ says what to change). \
                            Bounded: each AWS call by aws.call_timeout, each scrape request by scrape.timeout, each \
                            remote_write request by its remote_timeout.")]
    Preflight {
        /// Output format: text for people, json for scripts (one object per check and line, as decided).
        #[arg(long, short = 'o', value_enum, default_value_t = PreflightFormat::Text)]
        output: PreflightFormat,
    },
    /// Ask the running daemon's /healthz at http.listen_address: exit 0 when it answers 200, else 1
    /// with the reason. The image's HEALTHCHECK (no curl in the image).
    #[command(after_help = "An unspecified listen address (0.0.0.0, [::]) is asked on loopback. \
                            The answer must come within 2 s.")]
    Healthcheck,
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

/// How `preflight` prints its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreflightFormat {
    /// `✓ section: what`, and `    fix: …` under a ✗.
    Text,
    /// One JSON object per check and line: `section`, `ok`, `what`, `fix`.
    Json,
}

/// How `discover` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people: one row per instance and listener.
    Table,
    /// A JSON array for programs: one object per instance and listener.
    Json,
    /// JSON lines for pipes: one compact object per instance and listener, per line.
    Jsonl,
}

impl Cli {
    /// The log level used when `RUST_LOG` is not set: one-shot commands keep
    /// stderr for errors, long-running ones report progress.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Run { .. } => "info",
            Command::Discover { .. }
            | Command::CheckConfig
            | Command::Preflight { .. }
            | Command::Healthcheck
            | Command::Report { .. } => "warn",
        }
    }
}

/// What `main` needs of the logging set up by [`init_logging`]: its last
/// line and the flush before exit.
#[derive(Debug)]
pub struct Logging {
    program: &'static str,
    pipe: Option<LogPipe>,
    format: LogFormat,
}

impl Logging {
    /// Writes `message` as the process's last word: `PROGRAM: error: …` in
    /// text, an ERROR event in JSON. Never panics on a closed stderr.
    pub fn final_error(&self, message: &str) {
        match (&self.pipe, self.format) {
            (Some(_), LogFormat::Json) => tracing::error!("{message}"),
            (Some(pipe), LogFormat::Text) => {
                pipe.write_line(format!("{}: error: {message}\n", self.program).into_bytes());
            }
            (None, _) => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "{}: error: {message}", self.program);
            }
        }
    }

    /// Waits (at most a second: a pipe nobody reads stays full) for the
    /// queued lines to reach stderr.
    pub fn flush(&self) {
        if let Some(pipe) = &self.pipe {
            pipe.flush(std::time::Duration::from_secs(1));
        }
    }
}

/// Logs to stderr at `default_filter` unless `RUST_LOG` says otherwise, in
/// `format`, with colours only where [`log_colors`] allows them, through a
/// [`LogPipe`] so that a closed or full stderr never panics or stalls the
/// caller. For every binary of the crate.
pub fn init_logging(program: &'static str, default_filter: &str, format: LogFormat) -> Logging {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = log_colors(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let Ok(pipe) = LogPipe::spawn(std::io::stderr()) else {
        // No thread for the writer: log nothing rather than risk a blocking stderr.
        return Logging { program, pipe: None, format };
    };
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(pipe.clone()).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Logging { program, pipe: Some(pipe), format }
}

/// Whether log lines carry ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
/// A pipe, a file or journald gets plain text.
pub fn log_colors(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// An error and its causes on one line, `outer: cause: root`, each text
/// once: a cause already quoted by the message before it (thiserror's
/// `{source}` in a message, the SDK's nested errors) is not repeated.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The exit code for an error `run` returned: 3 when `run --once` stored no
/// target (every scrape failed, or discovery found none), 1 for any other
/// error. clap exits 2 on a usage error; success is 0.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<crate::daemon::Error>() {
        Some(crate::daemon::Error::NothingStored(_)) => 3,
        _ => 1,
    }
}

/// Runs the parsed command.
///
/// # Errors
/// Any failure, with context, for `main` to print on one line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // `report` reads a database and needs no configuration; the others do.
    let config = || {
        let config = Config::load(&cli.config)?;
        for warning in config.permission_warnings(&cli.config) {
            tracing::warn!("{warning}");
        }
        Ok::<_, crate::config::Error>(config)
    };
    match cli.command {
        Command::Report { .. } if cli.config_on_command_line => {
            anyhow::bail!("report reads the database named by --db and takes no --config (it would be ignored)")
        }
        Command::Report { db, png } => report(&db, png.as_deref()).await,
        Command::CheckConfig => check_config(&config()?, &cli.config),
        Command::Preflight { output } => preflight(&config()?, &cli.config, output).await,
        Command::Healthcheck => healthcheck(config()?.http.listen_address).await,
        Command::Discover { output } => discover(&config()?, output).await,
        Command::Run { once } => {
            let config = config()?;
            check_files(&config, &cli.config)?;
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
    let history = crate::report::read(db).await?;
    print_stdout(&crate::report::table(&history))?;
    if let Some(png) = png {
        crate::report::draw(&history, png)?;
        print_stdout(&format!("chart written to {}\n", png.display()))?;
    }
    Ok(())
}

/// Writes a command's result to stdout. A reader that has gone
/// (`fleetscrape discover | head -1`) is no error, where `println!` would
/// panic; any other write error (a full disk behind a redirect) is.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// Fails with every file problem `run` would refuse to start on; warns of
/// the others (a secret file read per request).
fn check_files(config: &Config, path: &std::path::Path) -> anyhow::Result<()> {
    let (fatal, warnings): (Vec<_>, Vec<_>) = config.file_problems().into_iter().partition(|p| p.fatal);
    for warning in warnings {
        tracing::warn!("{warning} (each request that needs it fails until it can be read)");
    }
    if fatal.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = fatal.iter().map(ToString::to_string).collect();
    anyhow::bail!("config file {}: {}", path.display(), problems.join("; "))
}

fn check_config(config: &Config, path: &std::path::Path) -> anyhow::Result<()> {
    check_files(config, path)?;
    let yaml = config.to_yaml().context("printing the effective configuration")?;
    print_stdout(&format!("{}\n", yaml.trim_end()))?;
    Ok(())
}

async fn preflight(config: &Config, path: &std::path::Path, format: PreflightFormat) -> anyhow::Result<()> {
    let mut write_error = None;
    let mut report = |check: &crate::preflight::Check| {
        let line = match format {
            PreflightFormat::Text => check.text(),
            PreflightFormat::Json => serde_json::to_string(check).unwrap_or_default(),
        };
        if let Err(e) = print_stdout(&format!("{line}\n")) {
            write_error.get_or_insert(e);
        }
    };
    let failed = crate::preflight::run(config, path, &mut report).await;
    if let Some(error) = write_error {
        return Err(error);
    }
    anyhow::ensure!(failed == 0, "preflight: {failed} check(s) failed (each ✗ above says what to change)");
    Ok(())
}

/// How long `healthcheck` waits for `/healthz`: under the image's HEALTHCHECK timeout (3 s).
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn healthcheck(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let url = healthz_url(listen);
    let client = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the health check's HTTP client")?;
    let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
    print_stdout("ok\n")
}

/// Where a check on the same host reaches the daemon's `/healthz`: the
/// listen address, with an unspecified IP (`0.0.0.0`, `[::]`) as loopback.
fn healthz_url(listen: std::net::SocketAddr) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", std::net::SocketAddr::new(ip, listen.port()))
}

async fn discover(config: &Config, format: OutputFormat) -> anyhow::Result<()> {
    let discoverer = Discoverer::from_config(config).await?;
    let refresh =
        discoverer.discover().await.with_context(|| format!("discovery against {} failed", discoverer.endpoint()))?;
    let text = match format {
        OutputFormat::Json => output::json(&refresh.topology)?,
        OutputFormat::Jsonl => output::json_lines(&refresh.topology)?,
        OutputFormat::Table => output::table(&refresh),
    };
    if format != OutputFormat::Table {
        // The table carries them; machine formats keep stdout to the data.
        for finding in refresh.findings.iter().filter(|f| f.is_warning()) {
            tracing::warn!("{finding}");
        }
    }
    if !text.is_empty() {
        print_stdout(&format!("{text}\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_line_quotes_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let store = crate::store::lock::LockError::Io { lock: "/x.lock".into(), source: io };
        let error = anyhow::Error::from(store).context("starting");
        assert_eq!(super::error_line(&error), "starting: cannot lock /x.lock: permission denied");
        let nested = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(super::error_line(&nested), "top: middle: root");
    }

    #[test]
    fn the_health_check_asks_the_listen_address_on_loopback_when_unspecified() {
        let url = |address: &str| super::healthz_url(address.parse().unwrap());
        assert_eq!(url("127.0.0.1:9900"), "http://127.0.0.1:9900/healthz");
        assert_eq!(url("0.0.0.0:9900"), "http://127.0.0.1:9900/healthz");
        assert_eq!(url("[::]:9901"), "http://[::1]:9901/healthz");
        assert_eq!(url("10.20.1.4:9900"), "http://10.20.1.4:9900/healthz", "a specific address is asked as it is");
    }

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
