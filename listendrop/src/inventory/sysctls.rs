//! The per-namespace sysctls that decide how a listener drops.
//!
//! `/proc/sys/net/*` shows the namespace of the thread that opens it, so [`read`] must
//! run on a thread that entered the namespace ([`super::namespaces::run_in`]).

use std::path::{Path, PathBuf};

use super::InventoryError;

/// Where sysctls live.
pub const PROC_SYS: &str = "/proc/sys";

/// One namespace's listen-related sysctls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sysctls {
    /// `net.core.somaxconn`: the cap on every listen() backlog.
    pub somaxconn: u32,
    /// `net.ipv4.tcp_max_syn_backlog`: with syncookies off, SYNs from unproven peers are
    /// dropped once the SYN queue is in its last quarter of this.
    pub tcp_max_syn_backlog: u32,
    /// `net.ipv4.tcp_abort_on_overflow`: 1 resets clients whose ACK overflows the accept
    /// queue instead of ignoring the ACK.
    pub tcp_abort_on_overflow: u32,
    /// `net.ipv4.tcp_syncookies`: 0 off, 1 when the SYN queue overflows, 2 always.
    pub tcp_syncookies: u32,
    /// `net.ipv4.tcp_synack_retries`: SYN-ACK retransmits before a request is given up.
    pub tcp_synack_retries: u32,
}

/// The keys read, as `sysctl` names them.
pub const KEYS: [&str; 5] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_synack_retries",
];

impl Sysctls {
    /// Each value with its name from [`KEYS`].
    pub fn named(&self) -> [(&'static str, u32); 5] {
        [
            (KEYS[0], self.somaxconn),
            (KEYS[1], self.tcp_max_syn_backlog),
            (KEYS[2], self.tcp_abort_on_overflow),
            (KEYS[3], self.tcp_syncookies),
            (KEYS[4], self.tcp_synack_retries),
        ]
    }
}

/// Reads the sysctls of the calling thread's network namespace.
pub fn read() -> Result<Sysctls, InventoryError> {
    read_from(Path::new(PROC_SYS))
}

/// Reads the sysctls below `root` (a `/proc/sys` or a copy of it).
pub fn read_from(root: &Path) -> Result<Sysctls, InventoryError> {
    let [somaxconn, tcp_max_syn_backlog, tcp_abort_on_overflow, tcp_syncookies, tcp_synack_retries] =
        KEYS.map(|key| read_one(root, key));
    Ok(Sysctls {
        somaxconn: somaxconn?,
        tcp_max_syn_backlog: tcp_max_syn_backlog?,
        tcp_abort_on_overflow: tcp_abort_on_overflow?,
        tcp_syncookies: tcp_syncookies?,
        tcp_synack_retries: tcp_synack_retries?,
    })
}

/// The file of a sysctl key below `root`: dots become slashes.
pub fn path_of(root: &Path, key: &str) -> PathBuf {
    root.join(key.replace('.', "/"))
}

fn read_one(root: &Path, key: &str) -> Result<u32, InventoryError> {
    let path = path_of(root, key);
    let text = std::fs::read_to_string(&path).map_err(|source| InventoryError::Io {
        what: format!("read {}", path.display()),
        source,
    })?;
    parse_value(&text).ok_or_else(|| InventoryError::Format {
        what: format!("{}: not a number: {text:?}", path.display()),
    })
}

/// Parses a sysctl file's content: one unsigned integer and a newline.
pub fn parse_value(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_value_accepts_one_number() {
        assert_eq!(parse_value("4096\n"), Some(4096));
        assert_eq!(parse_value(" 0 "), Some(0));
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("4096\t1\n"), None);
        assert_eq!(parse_value("-1"), None);
    }

    #[test]
    fn read_from_maps_keys_to_files() {
        let root = std::env::temp_dir().join(format!("listendrop-sysctls-{}", std::process::id()));
        for (key, value) in KEYS.iter().zip(["11", "22", "1", "0", "3"]) {
            let path = path_of(&root, key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        }
        let got = read_from(&root);
        let missing = {
            std::fs::remove_file(path_of(&root, KEYS[4])).unwrap();
            read_from(&root)
        };
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got.unwrap(),
            Sysctls {
                somaxconn: 11,
                tcp_max_syn_backlog: 22,
                tcp_abort_on_overflow: 1,
                tcp_syncookies: 0,
                tcp_synack_retries: 3,
            }
        );
        let err = missing.unwrap_err().to_string();
        assert!(err.contains("tcp_synack_retries"), "{err}");
    }
}
