//! Sentences that say why a listener drops and what to change, from plain facts.
//!
//! Pure functions: the caller gathers the numbers (sock_diag, sysctls, listendrop's
//! per-reason drop counts, the owner's CPU use) and [`diagnose`] applies the rules, in
//! this order:
//!
//! 1. the listen() backlog caps the accept queue below `net.core.somaxconn`;
//! 2. `net.core.somaxconn` caps it;
//! 3. the accept queue is full while the owner is busy or idle;
//! 4. the SYN queue is full with syncookies off;
//! 5. SYNs are dropped in the last quarter of `tcp_max_syn_backlog` (syncookies off);
//! 6. `tcp_abort_on_overflow=1` resets clients;
//! 7. final ACKs are silently ignored (clients believe they are connected);
//! 8. SYNs are dropped because the accept queue is full (connect latency);
//! 9. syncookies are being sent.

use std::collections::BTreeMap;

use listendrop_common::Reason;

/// What is known about one listener, as plain numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Accept queue limit: `min(backlog, net.core.somaxconn)` (Send-Q of `ss -lnt`).
    pub accept_queue_limit: u32,
    /// Connections waiting for `accept()` (Recv-Q of `ss -lnt`).
    pub accept_queue_len: u32,
    /// Half-open connections (SYN_RECV) of this listener.
    pub syn_recv: u32,
    /// `net.core.somaxconn` of its namespace.
    pub somaxconn: u32,
    /// `net.ipv4.tcp_syncookies` of its namespace.
    pub syncookies: u32,
    /// `net.ipv4.tcp_abort_on_overflow` of its namespace.
    pub abort_on_overflow: u32,
    /// `net.ipv4.tcp_max_syn_backlog` of its namespace.
    pub max_syn_backlog: u32,
    /// `net.ipv4.tcp_synack_retries` of its namespace.
    pub synack_retries: u32,
    /// Recent drops and events per `reason` label (`ack_accept_queue_full`,
    /// `syn_queue_full`, `syncookie_sent`, ...: [`listendrop_common::Reason::as_str`]).
    pub drops: BTreeMap<String, u64>,
    /// Recent `sk_drops` (sock_diag): every drop of the listener, reason unknown.
    pub sk_drops: u64,
    /// Whether the owner process was on CPU (busy) or not (idle); `None` if unknown.
    pub owner_busy: Option<bool>,
}

impl Facts {
    fn count(&self, reason: Reason) -> u64 {
        self.drops.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Drops that happened because the accept queue was full.
    fn accept_drops(&self) -> u64 {
        self.count(Reason::AckAcceptQueueFull)
            + self.count(Reason::SynAcceptQueueFull)
            + self.count(Reason::CookieAckAcceptQueueFull)
    }

    /// The kernel's `sk_acceptq_is_full`: length above the limit.
    fn accept_full(&self) -> bool {
        self.accept_queue_len > self.accept_queue_limit
    }

    /// At least 90 % of the limit in use (and not empty).
    fn accept_nearly_full(&self) -> bool {
        self.accept_queue_len > 0
            && u64::from(self.accept_queue_len) * 10 >= u64::from(self.accept_queue_limit) * 9
    }

    /// The listener drops anything, or its accept queue overflows.
    fn accept_pressure(&self) -> bool {
        self.accept_drops() > 0 || self.sk_drops > 0 || self.accept_nearly_full()
    }
}

/// The diagnosis of one listener: one sentence per rule that applies, most specific
/// cause first; empty when nothing is wrong.
pub fn diagnose(f: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    accept_queue(f, &mut out);
    syn_queue(f, &mut out);
    ack_and_syn_drops(f, &mut out);
    out
}

/// Rules 1–3: what caps the accept queue, and whether its owner is busy or stuck.
fn accept_queue(f: &Facts, out: &mut Vec<String>) {
    if f.accept_pressure() {
        if f.accept_queue_limit < f.somaxconn {
            out.push(format!(
                "backlog {} caps the accept queue below net.core.somaxconn {} — raise the \
                 application's listen backlog",
                f.accept_queue_limit, f.somaxconn
            ));
        } else {
            out.push(format!(
                "accept queue limit {} is net.core.somaxconn — raise net.core.somaxconn and \
                 the application's listen backlog",
                f.accept_queue_limit
            ));
        }
    }
    if f.accept_full() || f.accept_drops() > 0 {
        match f.owner_busy {
            Some(true) => out.push(
                "accept queue full while the owner is busy (on CPU) — it cannot accept fast \
                 enough: add workers or CPU"
                    .to_owned(),
            ),
            Some(false) => out.push(
                "accept queue full while the owner is idle — it is not calling accept() \
                 (blocked or stuck)"
                    .to_owned(),
            ),
            None => {}
        }
    }
}

/// Rules 4–5: the SYN queue with syncookies off.
fn syn_queue(f: &Facts, out: &mut Vec<String>) {
    if f.syncookies == 0
        && (f.count(Reason::SynQueueFull) > 0
            || (f.accept_queue_limit > 0 && f.syn_recv >= f.accept_queue_limit))
    {
        out.push(
            "SYN queue full and syncookies off (net.ipv4.tcp_syncookies=0) — enable syncookies \
             or raise the listen backlog, which also limits the SYN queue"
                .to_owned(),
        );
    }
    if f.syncookies == 0 && f.count(Reason::SynBacklogPressure) > 0 {
        out.push(format!(
            "SYN queue past 3/4 of net.ipv4.tcp_max_syn_backlog {} with syncookies off: SYNs \
             from unverified clients are dropped — raise tcp_max_syn_backlog or enable \
             syncookies",
            f.max_syn_backlog
        ));
    }
}

/// Rules 6–9: what the clients see (resets, ignored ACKs, SYN retries, syncookies).
fn ack_and_syn_drops(f: &Facts, out: &mut Vec<String>) {
    let accept_trouble = f.accept_full() || f.accept_drops() > 0;
    if f.abort_on_overflow == 1 && (accept_trouble || f.count(Reason::OverflowReset) > 0) {
        out.push(
            "tcp_abort_on_overflow=1: clients get a reset when the accept queue overflows"
                .to_owned(),
        );
    }
    let silent = f.count(Reason::AckAcceptQueueFull) + f.count(Reason::CookieAckAcceptQueueFull);
    if f.abort_on_overflow == 0 && silent > 0 {
        out.push(format!(
            "final ACKs ignored while the accept queue was full: clients believe they are \
             connected and wait while the server resends its SYN-ACK (up to \
             net.ipv4.tcp_synack_retries {} times)",
            f.synack_retries
        ));
    }
    if f.count(Reason::SynAcceptQueueFull) > 0 {
        out.push(
            "SYNs dropped while the accept queue was full: clients retry after 1 s, 3 s, 7 s… \
             (slow connects)"
                .to_owned(),
        );
    }
    if f.syncookies == 2 {
        out.push(
            "net.ipv4.tcp_syncookies=2: every SYN is answered with a syncookie (TCP options \
             may be lost)"
                .to_owned(),
        );
    } else if f.count(Reason::SyncookieSent) > 0 {
        out.push(format!(
            "SYN queue overflowed and the kernel answered with syncookies \
             (net.ipv4.tcp_syncookies={}): connections work but may lose TCP options",
            f.syncookies
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy listener in a namespace with the defaults of Linux 6.x.
    fn healthy() -> Facts {
        Facts {
            accept_queue_limit: 4096,
            accept_queue_len: 0,
            syn_recv: 0,
            somaxconn: 4096,
            syncookies: 1,
            abort_on_overflow: 0,
            max_syn_backlog: 1024,
            synack_retries: 5,
            drops: BTreeMap::new(),
            sk_drops: 0,
            owner_busy: Some(false),
        }
    }

    fn with_drops(mut f: Facts, reason: Reason, n: u64) -> Facts {
        f.drops.insert(reason.as_str().to_owned(), n);
        f
    }

    fn has(out: &[String], needle: &str) -> bool {
        out.iter().any(|s| s.contains(needle))
    }

    #[test]
    fn healthy_listener_has_no_diagnosis() {
        assert_eq!(diagnose(&healthy()), Vec::<String>::new());
        let mut f = healthy();
        f.accept_queue_limit = 5;
        assert_eq!(
            diagnose(&f),
            Vec::<String>::new(),
            "small but empty backlog"
        );
    }

    #[test]
    fn small_backlog_with_a_nearly_full_queue() {
        let mut f = healthy();
        f.accept_queue_limit = 50;
        f.accept_queue_len = 45;
        let out = diagnose(&f);
        assert_eq!(
            out[0],
            "backlog 50 caps the accept queue below net.core.somaxconn 4096 — raise the \
             application's listen backlog"
        );
        f.accept_queue_len = 44;
        assert!(diagnose(&f).is_empty(), "below 90 %");
        f.sk_drops = 1;
        assert!(has(&diagnose(&f), "backlog 50 caps"), "dropping");
    }

    #[test]
    fn somaxconn_caps_the_backlog() {
        let mut f = healthy();
        f.somaxconn = 128;
        f.accept_queue_limit = 128;
        let f = with_drops(f, Reason::AckAcceptQueueFull, 3);
        let out = diagnose(&f);
        assert!(
            has(&out, "accept queue limit 128 is net.core.somaxconn"),
            "{out:?}"
        );
        assert!(!has(&out, "caps the accept queue below"), "{out:?}");
    }

    #[test]
    fn owner_busy_or_idle_when_the_queue_is_full() {
        let mut f = healthy();
        f.accept_queue_limit = 5;
        f.accept_queue_len = 6;
        f.owner_busy = Some(true);
        assert!(has(
            &diagnose(&f),
            "accept queue full while the owner is busy"
        ));
        f.owner_busy = Some(false);
        assert!(has(
            &diagnose(&f),
            "accept queue full while the owner is idle"
        ));
        f.owner_busy = None;
        assert!(!has(&diagnose(&f), "while the owner"));
        let mut f = with_drops(healthy(), Reason::SynAcceptQueueFull, 1);
        f.owner_busy = Some(false);
        assert!(
            has(&diagnose(&f), "owner is idle"),
            "drops count even when the queue drained since"
        );
        let mut f = healthy();
        f.accept_queue_limit = 5;
        f.accept_queue_len = 5;
        assert!(!has(&diagnose(&f), "while the owner"), "5 of 5 is not over");
    }

    #[test]
    fn syn_queue_full_without_syncookies() {
        let mut f = with_drops(healthy(), Reason::SynQueueFull, 2);
        f.syncookies = 0;
        assert!(has(
            &diagnose(&f),
            "SYN queue full and syncookies off (net.ipv4.tcp_syncookies=0)"
        ));
        let mut f = healthy();
        f.syncookies = 0;
        f.accept_queue_limit = 8;
        f.syn_recv = 8;
        assert!(
            has(&diagnose(&f), "SYN queue full and syncookies off"),
            "by length"
        );
        f.syncookies = 1;
        assert!(!has(&diagnose(&f), "syncookies off"), "cookies on");
    }

    #[test]
    fn syn_backlog_pressure_without_syncookies() {
        let mut f = with_drops(healthy(), Reason::SynBacklogPressure, 2);
        f.syncookies = 0;
        f.max_syn_backlog = 256;
        assert!(has(
            &diagnose(&f),
            "SYN queue past 3/4 of net.ipv4.tcp_max_syn_backlog 256"
        ));
        f.syncookies = 1;
        assert!(!has(&diagnose(&f), "3/4"));
    }

    #[test]
    fn abort_on_overflow_resets_clients() {
        let mut f = with_drops(healthy(), Reason::AckAcceptQueueFull, 1);
        f.abort_on_overflow = 1;
        let out = diagnose(&f);
        assert!(
            has(&out, "tcp_abort_on_overflow=1: clients get a reset"),
            "{out:?}"
        );
        assert!(!has(&out, "final ACKs ignored"), "{out:?}");
        let mut f = healthy();
        f.abort_on_overflow = 1;
        assert!(diagnose(&f).is_empty(), "set but nothing overflows");
    }

    #[test]
    fn silent_ack_drops_mention_synack_retries() {
        let f = with_drops(healthy(), Reason::CookieAckAcceptQueueFull, 1);
        assert!(has(
            &diagnose(&f),
            "final ACKs ignored while the accept queue was full"
        ));
        assert!(has(&diagnose(&f), "net.ipv4.tcp_synack_retries 5 times"));
    }

    #[test]
    fn syn_drops_on_full_accept_queue_mean_slow_connects() {
        let f = with_drops(healthy(), Reason::SynAcceptQueueFull, 4);
        assert!(has(
            &diagnose(&f),
            "SYNs dropped while the accept queue was full"
        ));
    }

    #[test]
    fn syncookies_sent_or_always_on() {
        let f = with_drops(healthy(), Reason::SyncookieSent, 4);
        assert!(has(
            &diagnose(&f),
            "answered with syncookies (net.ipv4.tcp_syncookies=1)"
        ));
        let mut f = healthy();
        f.syncookies = 2;
        assert!(has(&diagnose(&f), "net.ipv4.tcp_syncookies=2: every SYN"));
    }

    #[test]
    fn rules_come_in_a_fixed_order() {
        let mut f = with_drops(healthy(), Reason::AckAcceptQueueFull, 1);
        f.accept_queue_limit = 5;
        f.accept_queue_len = 6;
        f.owner_busy = Some(true);
        let out = diagnose(&f);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].starts_with("backlog 5 caps"));
        assert!(out[1].starts_with("accept queue full while"));
        assert!(out[2].starts_with("final ACKs ignored"));
    }
}
