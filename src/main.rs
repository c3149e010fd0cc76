//! The `fleetscrape` binary: parse arguments, set up logging, run, and turn
//! any error into one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;
use fleetscrape::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.default_log_filter());

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetscrape: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetscrape: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
