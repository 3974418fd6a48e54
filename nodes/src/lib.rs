//! The `strata` command: node roles (`master`, `worker`, `local`), the
//! filesystem CLI (`fs`) and `report`.

pub mod cli;
pub mod config;
pub mod fs_cmd;
pub mod server;

use std::process::ExitCode;

use clap::Parser;

/// Parses arguments and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if cli.command.is_server() { "info,openraft=warn" } else { "warn" })
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}
