//! A real process holding sockets in a namespace, and the tools (`ss`, `cat`, `stat`)
//! whose output is the ground truth.

use std::{
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::{run, Netns};

/// The full path of `program` on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A `sleep` process living in a namespace (`ip netns exec NS sleep`), optionally
/// holding sockets it inherited. Killed by its pid on drop.
pub struct Sleeper {
    child: Child,
}

impl Sleeper {
    /// Starts `sleep 600` inside `ns` holding (as inherited descriptors) `sockets`, and
    /// waits until it is `sleep` (its comm, after `ip` executed it).
    pub fn start(ns: &Netns, sockets: &[&socket2::Socket]) -> Self {
        let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
        let mut cmd = ns.command("sleep");
        cmd.arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: runs in the forked child before exec and only calls fcntl (async-signal
        // safe) on descriptors the parent owns: the sockets survive exec in this child
        // alone, never in children other threads spawn meanwhile.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn ip netns exec sleep");
        let sleeper = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleeper.comm() != "sleep" {
            assert!(Instant::now() < deadline, "sleep did not start in 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        sleeper
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// `/proc/PID/comm`, read directly.
    pub fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One listener as `ss -Hltnem` prints it inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsListener {
    /// Recv-Q: accept queue length.
    pub recv_q: u32,
    /// Send-Q: accept queue limit.
    pub send_q: u32,
    /// Local address:port as printed.
    pub local: String,
    /// `ino:`.
    pub inode: u64,
    /// `sk:` (hex).
    pub cookie: u64,
    /// `d` of `skmem:(...)`.
    pub drops: u32,
}

/// The listeners of `ns` according to `ss -Hltnem`.
pub fn ss_listeners(ns: &Netns) -> Vec<SsListener> {
    let out = run(ns.command("ss").args(["-Hltnem"]));
    // `-m` puts skmem on a continuation line that starts with whitespace.
    let mut records: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = records.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else if !line.is_empty() {
            records.push(line.to_owned());
        }
    }
    records
        .iter()
        .map(|r| {
            let t: Vec<&str> = r.split_whitespace().collect();
            let field = |prefix: &str| {
                t.iter()
                    .find_map(|x| x.strip_prefix(prefix))
                    .unwrap_or_else(|| panic!("no {prefix} in {r}"))
            };
            let skmem = field("skmem:(").trim_end_matches(')');
            let drops = skmem
                .split(',')
                .find_map(|x| x.strip_prefix('d'))
                .unwrap_or_else(|| panic!("no d in {skmem}"));
            SsListener {
                recv_q: t[1].parse().unwrap(),
                send_q: t[2].parse().unwrap(),
                local: t[3].to_owned(),
                inode: field("ino:").parse().unwrap(),
                cookie: u64::from_str_radix(field("sk:"), 16).unwrap(),
                drops: drops.parse().unwrap(),
            }
        })
        .collect()
}

/// How many SYN_RECV entries `ss -Htn state syn-recv` shows in `ns` for local `port`.
pub fn ss_syn_recv(ns: &Netns, port: u16) -> u32 {
    let out = run(ns.command("ss").args(["-Htn", "state", "syn-recv"]));
    let suffix = format!(":{port}");
    let n = out
        .lines()
        .filter(|l| {
            // With one state selected ss omits the state column: Recv-Q Send-Q Local Peer.
            l.split_whitespace()
                .nth(2)
                .is_some_and(|local| local.ends_with(&suffix))
        })
        .count();
    u32::try_from(n).unwrap()
}

/// A file's content read by `cat` inside `ns` (`ip netns exec NS cat PATH`), trimmed.
pub fn ns_cat(ns: &Netns, path: &str) -> String {
    run(ns.command("cat").arg(path)).trim().to_owned()
}

/// The inode `stat -L -c %i PATH` prints.
pub fn stat_inode(path: &str) -> u32 {
    run(Command::new("stat").args(["-L", "-c", "%i", path]))
        .trim()
        .parse()
        .unwrap()
}

/// Waits up to 5 s for `pred`, polling.
pub fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
