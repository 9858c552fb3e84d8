//! `cargo xtask vm-test`: the privileged integration tests on Debian cloud kernels of
//! several series and architectures, each booted under QEMU (TCG) with an initramfs whose
//! `/init` runs the test binary; two guests at a time.
//!
//! - `matrix`: the runs and, per guest, the coverage and hooks it must show.
//! - `apt`: a private apt state per architecture.
//! - `kernels`: the newest cloud kernel of each series that can be downloaded (cached).
//! - `userland`: the guests' tools and libraries, from Debian's packages of their
//!   architecture.
//! - `binaries`: release builds of the daemon and the test binary (native on the host's
//!   architecture, static musl on the other), and how many tests a filter runs.
//! - `image`: the guests' userspace (the initramfs) and `/init`.
//! - `qemu`: one boot, its console log, the verdict, the time limit.
//! - `summary`: what a run prints at its end, and its verdict.

mod apt;
mod binaries;
mod image;
mod kernels;
mod matrix;
mod qemu;
mod summary;
mod userland;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{arch::Arch, toolchain};
use apt::Apt;
use image::{InitOptions, Rootfs};
use kernels::Kernel;
use matrix::{Expect, RUNS, SERIES};
use qemu::{Boot, BootOptions};
use userland::Userland;

/// Debian packages the VM runs need on the host, besides QEMU for each architecture.
const PACKAGES: &[&str] = &["cpio", "xz-utils", "binutils"];

/// The line `/init` prints once, followed by `PASS` or `FAIL exit=<code>`.
const MARKER: &str = "LISTENDROP-VM-RESULT:";

/// The line `/init` prints before [`MARKER`], followed by libtest's summary line.
const TESTS_MARKER: &str = "LISTENDROP-VM-TESTS:";

/// Lines of a failed guest's console log printed at the end.
const LOG_TAIL: usize = 60;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Options {
    /// Architecture to test (repeatable); all of them by default.
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    arches: Vec<Arch>,
    /// Kernel series to boot (repeatable); all of them by default.
    #[arg(long = "kernel", value_name = "SERIES", value_parser = clap::builder::PossibleValuesParser::new(SERIES))]
    kernels: Vec<String>,
    /// Run of the matrix (repeatable; xtask/src/vm/matrix.rs); all of them by default.
    #[arg(long = "run", value_name = "RUN", value_parser = clap::builder::PossibleValuesParser::new(RUNS.iter().map(|r| r.name)))]
    runs: Vec<String>,
    /// Guests booted at the same time (each with 2 CPUs).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..))]
    jobs: u8,
    /// Print each guest's console as it runs, prefixed with its name (it is always saved
    /// in target/vm/<kernel>-<run>.log).
    #[arg(long)]
    verbose: bool,
    /// Wall-clock limit per guest, boot to power-off, in seconds; the VM is killed after.
    /// (An emulated arm64 guest of the full suite takes up to ~580 s on a 2-core machine
    /// sharing it with a second guest.)
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// Extra environment for the tests in the VMs, e.g. `--env RUST_LOG=debug`
    /// (repeatable; overrides the matrix's).
    #[arg(long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Arguments for the test binary instead of each run's filter, e.g. `-- sigterm` to
    /// run only matching tests.
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// One VM of the matrix.
struct Guest<'a> {
    expect: &'static Expect,
    kernel: &'a Kernel,
    rootfs: &'a Rootfs,
    env: Vec<(String, String)>,
    test_args: Vec<String>,
    /// Tests that must pass.
    expected: usize,
}

impl Guest<'_> {
    /// Its log's and work directory's name.
    fn name(&self) -> String {
        format!("{}-{}", self.kernel.release, self.expect.run)
    }

    fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.expect.arch, self.expect.series, self.expect.run
        )
    }
}

/// Runs the selected guests of the matrix, `--jobs` at a time, and reports.
pub fn vm_test(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let rows = matrix::select(&opts.arches, &opts.kernels, &opts.runs);
    if rows.is_empty() {
        bail!(
            "no guest of the matrix (MATRIX in xtask/src/vm/matrix.rs) matches this \
             --arch/--kernel/--run selection"
        );
    }
    let arches: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| rows.iter().any(|r| r.arch == *a))
        .collect();
    ensure_host(&arches)?;
    let root = workspace_root();
    let out = root.join("target/vm");
    let cache = cache_dir()?;

    let mut bins = BTreeMap::new();
    for &arch in &arches {
        bins.insert(arch, binaries::build(&root, arch)?);
    }
    let counts = expected_counts(&root, &bins, &rows, opts)?;
    let mut kernels: BTreeMap<(Arch, &str), Kernel> = BTreeMap::new();
    let mut rootfs: BTreeMap<Arch, Rootfs> = BTreeMap::new();
    for &arch in &arches {
        let apt = Apt::new(&cache.join(format!("apt-{arch}")), arch)?;
        let series: Vec<&str> = SERIES
            .iter()
            .copied()
            .filter(|s| rows.iter().any(|r| r.arch == arch && r.series == *s))
            .collect();
        // One kernel per series asked for, in that order.
        for (s, kernel) in series.iter().zip(kernels::fetch(&apt, &cache, &series)?) {
            kernels.insert((arch, *s), kernel);
        }
        let userland = Userland::fetch(&apt, &cache)?;
        let dir = out.join(format!("rootfs-{arch}"));
        rootfs.insert(arch, Rootfs::prepare(&dir, &bins[&arch], &userland)?);
    }

    let guests: Vec<Guest> = rows
        .iter()
        .map(|&expect| {
            let test_args = test_args(expect, opts);
            let mut env = expect.env();
            env.retain(|(k, _)| !opts.env.iter().any(|(o, _)| o == k));
            env.extend(opts.env.iter().cloned());
            Guest {
                expect,
                kernel: &kernels[&(expect.arch, expect.series)],
                rootfs: &rootfs[&expect.arch],
                env,
                expected: counts[&test_args],
                test_args,
            }
        })
        .collect();
    let results = run_all(&guests, opts, &out);
    summary::report(&guests, &results, &out, started.elapsed(), opts.jobs)
}

/// What the host needs for guests of `arches`: packages, QEMU, the eBPF toolchain and
/// the musl targets of the architectures that are not the host's.
fn ensure_host(arches: &[Arch]) -> anyhow::Result<()> {
    let mut packages = PACKAGES.to_vec();
    packages.extend(arches.iter().map(|&a| qemu::package(a)));
    toolchain::ensure_packages(&packages)?;
    toolchain::ensure_ebpf_toolchain()?;
    for &arch in arches.iter().filter(|a| a.release_target().is_some()) {
        toolchain::ensure_musl_target(arch)?;
    }
    Ok(())
}

/// How many tests each guest's arguments select, counted with the build this host runs
/// (the same sources). A filter that selects nothing is an error.
fn expected_counts(
    root: &Path,
    bins: &BTreeMap<Arch, binaries::Binaries>,
    rows: &[&Expect],
    opts: &Options,
) -> anyhow::Result<BTreeMap<Vec<String>, usize>> {
    let lister = match bins.get(&Arch::host()) {
        Some(b) => b.tests.clone(),
        None => binaries::build_tests(root, Arch::host())?,
    };
    for name in image::ALONE {
        let args = ["--exact".to_owned(), (*name).to_owned()];
        if binaries::count_tests(&lister, &args)? != 1 {
            bail!(
                "{name}, which guests run alone (ALONE in xtask/src/vm/image.rs), is not a \
                 test of {}: rename it there too",
                lister.display()
            );
        }
    }
    let mut counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for row in rows {
        let args = test_args(row, opts);
        if let std::collections::btree_map::Entry::Vacant(entry) = counts.entry(args) {
            let n = binaries::count_tests(&lister, entry.key())?;
            if n == 0 {
                bail!(
                    "the test arguments {:?} (run {}) select no test of {}: fix the filter \
                     (`{} --list` names them)",
                    entry.key(),
                    row.run,
                    lister.display(),
                    lister.display()
                );
            }
            entry.insert(n);
        }
    }
    Ok(counts)
}

/// The test binary's arguments in `row`'s guest.
fn test_args(row: &Expect, opts: &Options) -> Vec<String> {
    if opts.test_args.is_empty() {
        row.filter().iter().map(|&a| a.to_owned()).collect()
    } else {
        opts.test_args.clone()
    }
}

/// Boots every guest, `opts.jobs` at a time, those with more tests first (the short ones
/// then fill the gaps at the end); results in the guests' order.
fn run_all(guests: &[Guest], opts: &Options, out: &Path) -> Vec<anyhow::Result<Boot>> {
    let mut order: Vec<usize> = (0..guests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(guests[i].expected));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, anyhow::Result<Boot>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..opts.jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = order.get(n) else {
                            return mine;
                        };
                        mine.push((i, run_guest(&guests[i], opts, out)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Packs `guest`'s initramfs, boots it and removes its work files (the log stays).
fn run_guest(guest: &Guest, opts: &Options, out: &Path) -> anyhow::Result<Boot> {
    let name = guest.name();
    let label = guest.label();
    let dir = out.join(&name);
    let init = InitOptions {
        env: &guest.env,
        test_args: &guest.test_args,
        // Before the host kills the VM (the guest's clock is the host's under TCG), with
        // time left for the dump; late enough not to run (and take CPU) in the middle of
        // a slow emulated guest's last tests (arm64 suites took up to 430 s in CI).
        stall_secs: opts.timeout * 4 / 5,
    };
    let boot_once = || {
        guest
            .rootfs
            .initrd(guest.kernel, &init, &dir)
            .and_then(|initrd| {
                qemu::boot(
                    guest.kernel,
                    &BootOptions {
                        initrd: &initrd,
                        log: &log_path(out, &name),
                        timeout: Duration::from_secs(opts.timeout),
                        verbose: opts.verbose.then_some(label.as_str()),
                        expected: guest.expected,
                    },
                )
            })
            .with_context(|| format!("guest {label} ({name})"))
    };
    let mut boot = boot_once();
    // A kernel that crashed before /init ran never saw listendrop: boot it once more (the
    // crashed boot's log is kept), and say so.
    let retry = match &boot {
        Ok(b) => b.outcome.retry_reason().map(|(why, line)| qemu::Retry {
            why,
            line: line.trim().to_owned(),
            log: out.join(format!("{name}.first-boot.log")),
        }),
        Err(_) => None,
    };
    if let Some(retry) = retry {
        let _ = fs::rename(log_path(out, &name), &retry.log);
        eprintln!(
            "xtask: {label}: RETRY: {} ({}; log: {}): booting again",
            retry.why,
            retry.line,
            retry.log.display()
        );
        boot = boot_once().map(|b| Boot {
            retried_after: Some(retry),
            ..b
        });
    }
    let _ = fs::remove_dir_all(&dir);
    if let Ok(boot) = &boot {
        eprintln!(
            "xtask: {label}: {} ({} of {} tests passed) in {:.0} s",
            boot.outcome,
            summary::passed(boot),
            guest.expected,
            boot.elapsed.as_secs_f64()
        );
    }
    boot
}

fn log_path(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}.log"))
}

/// `LISTENDROP_VM_CACHE`, or `~/.cache/listendrop/vm`.
fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LISTENDROP_VM_CACHE") {
        return Ok(dir.into());
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set LISTENDROP_VM_CACHE")?;
    Ok(Path::new(&home).join(".cache/listendrop/vm"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `KEY=VAL` with a shell-safe variable name.
fn parse_env(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VAL, got {arg:?}"))?;
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{key:?} is not a valid environment variable name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}
