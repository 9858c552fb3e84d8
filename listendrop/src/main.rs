//! listendrop: which listening TCP sockets drop connections, why, and from whom.
//! The command line; everything else is in the library (`lib.rs`).

use std::{io::IsTerminal as _, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _};
use listendrop::{
    check,
    cli::{Cli, Command, LogFormat, RunArgs},
    config, daemon, probes, status, trace,
};
use tracing_subscriber::EnvFilter;

/// Prints a usage error on one line (the error, clap's tip, where to look) and exits 2;
/// `--help` and `--version` print as clap does.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    // `Display` of the rendered error is plain text, without colours.
    let text = e.render().to_string();
    let mut parts = Vec::new();
    let mut in_usage = false;
    for line in text.lines() {
        // The usage block: "Usage: ..." and its indented continuation lines.
        in_usage = line.starts_with("Usage:") || (in_usage && line.starts_with(' '));
        if !in_usage && !line.trim().is_empty() {
            parts.push(line.trim());
        }
    }
    eprintln!("{}", parts.join(" — "));
    std::process::exit(e.exit_code())
}

fn main() -> ExitCode {
    bounded_heap();
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| usage_error(e));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        None => run(cli.run, &matches),
        Some(Command::Run(args)) => {
            let sub = matches.subcommand_matches("run").unwrap_or(&matches);
            run(args, sub)
        }
        Some(Command::Status(args)) => {
            init_logging("error", LogFormat::Text);
            status::status(&args).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Trace(args)) => {
            init_logging("warn", LogFormat::Text);
            trace::trace(args).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Unpin(args)) => {
            init_logging("warn", LogFormat::Text);
            probes::pin::remove_all(&args.pin_dir)
                .map(|n| {
                    println!(
                        "removed {n} pinned program sets from {}",
                        args.pin_dir.display()
                    );
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::from)
        }
        Some(Command::Check(args)) => {
            init_logging("warn", LogFormat::Text);
            check::check(&args).map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
    };
    match result {
        Ok(code) => code,
        // `listendrop status | head`: the reader left, nothing to report.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line, cause chain included, so it reads well in journald.
            eprintln!("listendrop: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: RunArgs, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let file = config::apply(&mut args, matches)?;
    init_logging(&args.log_level, args.log_format);
    if let Some(file) = file {
        tracing::info!("configuration from {}", file.display());
    }
    daemon::run(args).map(|()| ExitCode::SUCCESS)
}

/// Large buffers (the kernel's BTF, parsed at start: megabytes) go back to the system as
/// soon as they are freed: glibc otherwise raises its mmap threshold after the first such
/// free and keeps the next ones on the heap, so start-up would set the daemon's peak
/// memory for good.
fn bounded_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Logs to stderr: text (no timestamps under systemd, whose journal adds them) or JSON.
fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|e| {
            eprintln!("listendrop: error: bad --log-level {level:?}: {e}");
            std::process::exit(2)
        });
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match (format, journald) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).init(),
        (LogFormat::Text, false) => builder.with_ansi(ansi).init(),
    }
}
