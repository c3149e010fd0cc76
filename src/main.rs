//! The `fleetscrape` binary: parse arguments, set up logging, run, and turn
//! any error into one line on stderr and a non-zero exit code
//! ([`fleetscrape::cli::exit_code`]).

use std::process::ExitCode;

use fleetscrape::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let logging = cli::init_logging("fleetscrape", cli.default_log_filter(), cli.log_format);

    let code = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => match runtime.block_on(cli::run(cli)) {
            Ok(()) => 0,
            Err(e) => {
                logging.final_error(&cli::error_line(&e));
                cli::exit_code(&e)
            }
        },
        Err(e) => {
            logging.final_error(&format!("cannot start the async runtime: {e}"));
            1
        }
    };
    logging.flush();
    ExitCode::from(code)
}
