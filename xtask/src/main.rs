//! listendrop's developer commands. `cargo xtask --help` lists them.

mod arch;
mod bench;
mod cmd;
mod fuzz;
mod package;
mod run;
mod test;
mod toolchain;
mod vm;

use clap::{Parser, Subcommand};

/// Developer commands for listendrop: build, run, test, test in VMs.
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
    Test {
        /// Skip the QEMU kernel matrix (quicker local runs; CI never skips it).
        #[arg(long)]
        no_vm: bool,
    },
    /// Only install what building and testing need (idempotent; quick when present).
    Setup,
    /// Build the release binary and install it with the systemd unit, the sysusers file
    /// and an example configuration (binary to /usr/local/bin, unit to
    /// /etc/systemd/system). Root, unless --destdir.
    Install {
        /// Install under this directory instead of / (packaging, tests).
        #[arg(long, value_name = "DIR")]
        destdir: Option<std::path::PathBuf>,
        #[command(flatten)]
        arch: package::ArchOption,
    },
    /// Measure overheads and flood exactness (needs root) and add the report to
    /// docs/benchmarks.md.
    Bench,
    /// Fuzz the parsers of outside bytes (ring-buffer events, sock_diag replies, netstat,
    /// tracefs formats, the configuration file) with cargo-fuzz, each for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        seconds: u64,
    },
    /// Build a .deb with cargo-deb (installed if missing) holding the same files as
    /// `install`; prints its path.
    Deb {
        #[command(flatten)]
        arch: package::ArchOption,
    },
    /// Run the privileged tests on Debian cloud kernels 5.10, 6.1, 6.12 and 6.18 for amd64
    /// and arm64, each in a QEMU VM (TCG; no KVM needed), two at a time. Kernels are
    /// downloaded once into ~/.cache/listendrop/vm (or $LISTENDROP_VM_CACHE); console logs
    /// go to target/vm/<kernel>-<run>.log.
    VmTest(vm::Options),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { args } => run::run(&args),
        Command::Test { no_vm } => test::test(!no_vm),
        Command::Setup => toolchain::ensure_all().map(|_| ()),
        Command::VmTest(opts) => vm::vm_test(&opts),
        Command::Install { destdir, arch } => package::install(arch.arch, destdir.as_deref()),
        Command::Bench => bench::bench(),
        Command::Fuzz { seconds } => fuzz::fuzz(seconds),
        Command::Deb { arch } => package::deb(arch.arch).map(|p| println!("{}", p.display())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
