//! `alb-emulator`: a loopback ALB stand-in for tests and the demo (see
//! `fleetscrape::emulator`). Prints the bound addresses as one JSON line on
//! stdout, then serves until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fleetscrape::emulator::{Balancing, Emulator, EmulatorConfig};

/// Serves ALB listeners on loopback, forwarding each request to one member.
#[derive(Debug, Parser)]
#[command(name = "alb-emulator", version)]
struct Args {
    /// `PORT[@BIND]=MEMBER,MEMBER...`: listener PORT of the emulated load
    /// balancer, served on BIND (default 127.0.0.1:PORT; port 0 picks one),
    /// forwarding to the member addresses. Repeat for each listener.
    #[arg(long = "listener", required = true)]
    listeners: Vec<String>,
    /// How a member is chosen for each request.
    #[arg(long, value_enum, default_value_t = Balancing::RoundRobin)]
    balancing: Balancing,
    /// `skewed` balancing: the first member's share of requests (0..1).
    #[arg(long, default_value_t = 0.7)]
    skew: f64,
    /// Also set AWSALBTG (target-group stickiness) on every response; it pins
    /// the target group, never a member (AWSALB, from `sticky`, does that).
    #[arg(long)]
    group_cookie: bool,
    /// `MEMBER=MILLISECONDS`: that member answers this late. Repeat as needed.
    #[arg(long = "late")]
    late: Vec<String>,
    /// Admin API address (PUT /listeners/PORT with comma-separated members).
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Limit for one forwarded request, in seconds (504 after it).
    #[arg(long, default_value_t = 10)]
    member_timeout_secs: u64,
}

/// Only loopback: tests and demos must never send traffic elsewhere.
fn loopback(text: &str) -> anyhow::Result<SocketAddr> {
    let address: SocketAddr = text.parse().with_context(|| format!("{text:?} is not an IP:port address"))?;
    if !address.ip().is_loopback() {
        bail!("{address} is not a loopback address; the emulator serves and forwards on loopback only");
    }
    Ok(address)
}

fn parse_listener(spec: &str) -> anyhow::Result<(u16, (SocketAddr, Vec<String>))> {
    let (head, members) = spec.split_once('=').with_context(|| format!("{spec:?}: expected PORT[@BIND]=MEMBERS"))?;
    let (port, bind) = match head.split_once('@') {
        Some((port, bind)) => (port, Some(bind)),
        None => (head, None),
    };
    let port: u16 = port.parse().with_context(|| format!("{spec:?}: {port:?} is not a port"))?;
    let bind = loopback(&bind.map_or_else(|| format!("127.0.0.1:{port}"), str::to_string))?;
    let members = members.split(',').filter(|m| !m.is_empty()).map(|m| loopback(m).map(|a| a.to_string()));
    Ok((port, (bind, members.collect::<anyhow::Result<_>>()?)))
}

fn parse_late(spec: &str) -> anyhow::Result<(String, Duration)> {
    let (member, millis) =
        spec.split_once('=').with_context(|| format!("--late {spec:?}: expected MEMBER=MILLISECONDS"))?;
    let millis: u64 =
        millis.parse().with_context(|| format!("--late {spec:?}: {millis:?} is not a number of milliseconds"))?;
    Ok((loopback(member)?.to_string(), Duration::from_millis(millis)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listeners = args.listeners.iter().map(|s| parse_listener(s)).collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let member_delays = args.late.iter().map(|spec| parse_late(spec)).collect::<anyhow::Result<_>>()?;
    let config = EmulatorConfig {
        admin: loopback(&args.admin.to_string())?,
        skew: args.skew,
        group_cookie: args.group_cookie,
        member_timeout: Duration::from_secs(args.member_timeout_secs),
        member_delays,
        ..EmulatorConfig::new(listeners, args.balancing)
    };
    let emulator = Emulator::start(config).await?;
    let bound: BTreeMap<String, String> =
        emulator.addresses.iter().map(|(p, a)| (p.to_string(), a.to_string())).collect();
    println!("{}", serde_json::json!({ "listeners": bound, "admin": emulator.admin_address.to_string() }));
    shutdown_signal().await;
    emulator.stop();
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let logging = fleetscrape::cli::init_logging("alb-emulator", "warn", fleetscrape::cli::LogFormat::Text);
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => Err(anyhow::Error::from(e).context("cannot start the async runtime")),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging.final_error(&fleetscrape::cli::error_line(&e));
            ExitCode::FAILURE
        }
    };
    logging.flush();
    code
}
