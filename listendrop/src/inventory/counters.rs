//! The kernel's own listen-drop counters of one network namespace (`TcpExt` in
//! `/proc/net/netstat`, what `nstat -as` prints as `TcpExt...`).
//!
//! `/proc/PID/net/netstat` shows the namespace of process PID, so a namespace with a
//! process is read without entering it ([`read_for_pid`]); one without is read from
//! `/proc/thread-self/net/netstat` on a thread that entered it ([`read_current_thread`]).
//! (`/proc/self/net` would show the main thread's namespace, not the calling thread's.)
//! procfs 0.18 parses `/proc/net/snmp` but not `netstat`, hence [`parse_netstat`].

use std::collections::BTreeMap;

use super::InventoryError;

/// The counters, absolute since the namespace was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// `TcpExtListenOverflows`: handshakes dropped because an accept queue was full.
    pub listen_overflows: u64,
    /// `TcpExtListenDrops`: every handshake a listener dropped (overflows included).
    pub listen_drops: u64,
    /// `TcpExtTCPReqQFullDrop`: SYNs dropped because a SYN queue was full and syncookies
    /// were off.
    pub req_q_full_drop: u64,
    /// `TcpExtTCPReqQFullDoCookies`: SYNs answered with a syncookie because a SYN queue
    /// was full.
    pub req_q_full_do_cookies: u64,
    /// `TcpExtSyncookiesSent`: syncookie SYN-ACKs sent.
    pub syncookies_sent: u64,
    /// `TcpExtEmbryonicRsts`: resets sent to half-open connections (among them the
    /// `tcp_abort_on_overflow=1` resets).
    pub embryonic_rsts: u64,
}

impl KernelCounters {
    /// `(nstat name, value)` of every counter, e.g. `("TcpExtListenOverflows", 3)`.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("TcpExtListenOverflows", self.listen_overflows),
            ("TcpExtListenDrops", self.listen_drops),
            ("TcpExtTCPReqQFullDrop", self.req_q_full_drop),
            ("TcpExtTCPReqQFullDoCookies", self.req_q_full_do_cookies),
            ("TcpExtSyncookiesSent", self.syncookies_sent),
            ("TcpExtEmbryonicRsts", self.embryonic_rsts),
        ]
    }
}

/// Reads the counters of the namespace process `pid` lives in.
pub fn read_for_pid(pid: i32) -> Result<KernelCounters, InventoryError> {
    read_file(&format!("/proc/{pid}/net/netstat"))
}

/// Reads the counters of the calling thread's namespace.
pub fn read_current_thread() -> Result<KernelCounters, InventoryError> {
    read_file("/proc/thread-self/net/netstat")
}

fn read_file(path: &str) -> Result<KernelCounters, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
        what: format!("read {path}"),
        source,
    })?;
    from_netstat(&text).map_err(|what| InventoryError::Format {
        what: format!("{path}: {what}"),
    })
}

/// Picks the listen counters out of a `/proc/net/netstat` text.
pub fn from_netstat(text: &str) -> Result<KernelCounters, String> {
    let all = parse_netstat(text)?;
    let get = |name: &str| {
        all.get(&("TcpExt".to_owned(), name.to_owned()))
            .copied()
            .ok_or_else(|| format!("no TcpExt {name}"))
    };
    Ok(KernelCounters {
        listen_overflows: get("ListenOverflows")?,
        listen_drops: get("ListenDrops")?,
        req_q_full_drop: get("TCPReqQFullDrop")?,
        req_q_full_do_cookies: get("TCPReqQFullDoCookies")?,
        syncookies_sent: get("SyncookiesSent")?,
        embryonic_rsts: get("EmbryonicRsts")?,
    })
}

/// Parses the `/proc/net/netstat` (and `/proc/net/snmp`) format: pairs of lines, a header
/// `Prefix: Name1 Name2 ...` followed by `Prefix: value1 value2 ...`. Returns
/// `(prefix, name) → value`. Errors on an unpaired line, a prefix mismatch, a count
/// mismatch or a non-numeric value.
pub fn parse_netstat(text: &str) -> Result<BTreeMap<(String, String), u64>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| format!("header without values: {header:?}"))?;
        let (prefix, names) = header
            .split_once(':')
            .ok_or_else(|| format!("no prefix in {header:?}"))?;
        let (vprefix, nums) = values
            .split_once(':')
            .ok_or_else(|| format!("no prefix in {values:?}"))?;
        if prefix != vprefix {
            return Err(format!(
                "header {prefix:?} followed by values of {vprefix:?}"
            ));
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let nums: Vec<&str> = nums.split_whitespace().collect();
        if names.len() != nums.len() {
            return Err(format!(
                "{prefix}: {} names but {} values",
                names.len(),
                nums.len()
            ));
        }
        for (name, num) in names.into_iter().zip(nums) {
            // Counters are unsigned; a few snmp gauges (Tcp MaxConn) are -1.
            let value = num
                .parse::<u64>()
                .or_else(|_| num.parse::<i64>().map(|v| v as u64))
                .map_err(|_| format!("{prefix} {name}: not a number: {num:?}"))?;
            out.insert((prefix.to_owned(), name.to_owned()), value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv EmbryonicRsts ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop
TcpExt: 1 2 3 4 5 6 7
IpExt: InNoRoutes InOctets
IpExt: 0 123456789012
";

    #[test]
    fn parses_pairs_of_lines() {
        let all = parse_netstat(SAMPLE).unwrap();
        assert_eq!(all[&("IpExt".into(), "InOctets".into())], 123_456_789_012);
        assert_eq!(all.len(), 9);
        assert_eq!(
            from_netstat(SAMPLE).unwrap(),
            KernelCounters {
                listen_overflows: 4,
                listen_drops: 5,
                req_q_full_drop: 7,
                req_q_full_do_cookies: 6,
                syncookies_sent: 1,
                embryonic_rsts: 3,
            }
        );
    }

    #[test]
    fn rejects_malformed_text() {
        assert!(parse_netstat("TcpExt: A B\n")
            .unwrap_err()
            .contains("without values"));
        assert!(parse_netstat("TcpExt: A B\nTcpExt: 1\n")
            .unwrap_err()
            .contains("2 names but 1 values"));
        assert!(parse_netstat("TcpExt: A\nIpExt: 1\n")
            .unwrap_err()
            .contains("followed by values"));
        assert!(parse_netstat("TcpExt: A\nTcpExt: x\n")
            .unwrap_err()
            .contains("not a number"));
        assert!(from_netstat("IpExt: A\nIpExt: 1\n")
            .unwrap_err()
            .contains("no TcpExt ListenOverflows"));
        assert_eq!(parse_netstat("").unwrap().len(), 0);
    }

    #[test]
    fn negative_gauges_do_not_fail() {
        let all = parse_netstat("Tcp: MaxConn\nTcp: -1\n").unwrap();
        assert_eq!(all[&("Tcp".into(), "MaxConn".into())], u64::MAX);
    }

    #[test]
    fn reads_this_process_namespace() {
        // Every Linux since 2.6 has these; the values themselves are the host's.
        let ours = read_for_pid(std::process::id() as i32).unwrap();
        let thread = read_current_thread().unwrap();
        assert!(thread.listen_drops >= ours.listen_drops);
    }
}
