//! Network namespaces made by the test itself (`ip netns add`), removed on drop, and the
//! kernel's per-namespace counters read with `nstat` inside them.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use nix::sched::{setns, CloneFlags};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Namespaces of finished tests, kept allocated until this process exits. The kernel hands
/// a new namespace the lowest free inode number (the ns IDA, every kernel since 3.8), so
/// without this a test running next to another could get the inode of a namespace that
/// just died, and would rightly see that namespace's listeners and counters under its own
/// `netns` label. Holding the old ones open makes every test's `netns` unique for the run;
/// they have no name, sockets or processes left, and the kernel frees them at exit.
static RETIRED: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A named network namespace with `lo` up.
pub struct Netns {
    /// Name under /run/netns.
    pub name: String,
    /// Inode number: the `netns` label listendrop gives its listeners.
    pub inode: u64,
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// Creates a fresh namespace named after the test and this process.
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "ldt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self {
            inode: std::fs::metadata(PathBuf::from("/run/netns").join(&name))
                .expect("netns file")
                .ino(),
            name,
        };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// Names the network namespace of process `pid` (a container's, made by its runtime)
    /// under /run/netns (`ip netns attach`), so that everything here works in it. On drop
    /// only the name goes; the namespace lives as long as its processes.
    pub fn attach(tag: &str, pid: i32) -> Self {
        let name = format!(
            "ldt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "attach", &name, &pid.to_string()]));
        Self {
            inode: std::fs::metadata(PathBuf::from("/run/netns").join(&name))
                .expect("netns file")
                .ino(),
            name,
        }
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made there stay in
    /// the namespace wherever they are used afterwards.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let file = File::open(PathBuf::from("/run/netns").join(&self.name)).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// A command run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The kernel's TCP/IP counters of this namespace, as `nstat -as` prints them
    /// (absolute values, history file untouched).
    pub fn nstat(&self) -> HashMap<String, u64> {
        let out = run(self.command("nstat").args(["-asz"]));
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Sets a sysctl inside this namespace (per-namespace sysctls only; nothing to restore
    /// since the namespace dies with the test).
    pub fn sysctl(&self, key: &str, value: &str) {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]));
    }
}

impl Netns {
    /// A veth pair inside the namespace: `veth0` holds `addr/24`, its peer is up without an
    /// address. Packets to other addresses of the subnet ask ARP and get no answer, so a
    /// SYN-ACK sent there is never answered (the kernel's own recipe for a SYN flood).
    pub fn veth(&self, addr: &str) {
        run(Command::new("ip").args([
            "-n", &self.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]));
        run(Command::new("ip").args([
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "veth0",
        ]));
        run(Command::new("ip").args(["-n", &self.name, "link", "set", "veth0", "up"]));
        run(Command::new("ip").args(["-n", &self.name, "link", "set", "veth1", "up"]));
    }

    /// A permanent neighbour entry on `veth0` (`ip neigh add ADDR lladdr MAC`): packets to
    /// `addr` leave at once, without ARP (and nobody answers them).
    pub fn neighbour(&self, addr: &str, mac: &str) {
        run(Command::new("ip").args([
            "-n",
            &self.name,
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            "veth0",
            "nud",
            "permanent",
        ]));
    }

    /// Adds a route in the namespace (`ip route add ARGS`).
    pub fn route(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["-n", &self.name, "route", "add"])
            .args(args));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(file) = File::open(PathBuf::from("/run/netns").join(&self.name)) {
            RETIRED.lock().unwrap_or_else(|e| e.into_inner()).push(file);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Counter deltas between two `nstat` readings.
pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}
