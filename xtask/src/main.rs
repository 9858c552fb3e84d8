//! listendrop's developer commands. `cargo xtask --help` lists them.

mod cmd;
mod run;
mod test;
mod toolchain;

use clap::{Parser, Subcommand};

/// Developer commands for listendrop: build, run, test.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain if needed, build the release binary, and run the daemon
    /// in the foreground (needs root). Arguments after `--` go to listendrop.
    Run {
        /// Arguments for listendrop, e.g. `-- --web.listen-address 0.0.0.0:9477`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install the eBPF toolchain and test tools if needed, then run every check and test:
    /// rustfmt, clippy, unit tests and the privileged end-to-end tests (needs root).
    Test,
    /// Only install what building and testing need (idempotent; quick when present).
    Setup,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { args } => run::run(&args),
        Command::Test => test::test(),
        Command::Setup => toolchain::ensure_all(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
