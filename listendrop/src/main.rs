//! listendrop: which listening TCP sockets drop connections, why, and from whom.

mod btf;
mod cli;
mod counters;
mod daemon;
mod events;
mod http;
mod layout;
mod metrics;
mod privileges;
mod probes;
mod tracefs;

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|e| {
            eprintln!(
                "listendrop: error: bad --log-level {:?}: {e}",
                cli.log_level
            );
            std::process::exit(2)
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match daemon::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, cause chain included, so it reads well in journald.
            eprintln!("listendrop: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
