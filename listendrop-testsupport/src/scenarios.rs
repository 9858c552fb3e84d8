//! Drop scenarios shared by the test targets (and the benchmarks): real sockets in a
//! network namespace of the test's own.

use std::{
    collections::{BTreeSet, HashMap},
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    thread::sleep,
    time::{Duration, Instant},
};

use super::{
    daemon::counting_exactly,
    netns::{delta, Netns},
    raw,
    sockets::{connect, drops, listen, local, poke},
};

/// What an ACK-time overflow scenario did.
pub struct AckOverflow {
    /// The overflowing listener.
    pub listener: SocketAddr,
    /// A second listener in the same namespace that accepts normally.
    pub quiet: SocketAddr,
    /// Client ports of the connections whose handshake the kernel dropped.
    pub victims: BTreeSet<u16>,
    /// The listener's listen() backlog: its accept queue limit.
    pub backlog: i32,
    /// What each victim read after the episode (Ok(0) if nothing happened).
    pub victim_reads: Vec<std::io::Result<usize>>,
    /// The listener's `sk_drops` when it closed ([`drops`]).
    pub listener_drops: u32,
}

impl AckOverflow {
    /// The kernel's account of the episode for a failure message, from the namespace's
    /// counters `before` and `after` it and the listener's `sk_drops`, which grows by 2 for
    /// each drop at ACK time (`tcp_listendrop`, then the packet's free), by 1 for each SYN
    /// dropped (no freed-packet hook sees those) and by 1 for each bare ACK that
    /// TCP_DEFER_ACCEPT dropped (TCPDeferAcceptDrop): SYN-time drops = 2 × ListenDrops +
    /// TCPDeferAcceptDrop − sk_drops (5.10-6.18).
    pub fn kernel_account(
        &self,
        before: &HashMap<String, u64>,
        after: &HashMap<String, u64>,
    ) -> String {
        let drops = delta(before, after, "TcpExtListenDrops");
        let deferred = delta(before, after, "TcpExtTCPDeferAcceptDrop");
        let sk = u64::from(self.listener_drops);
        let syn_time = (2 * drops + deferred).saturating_sub(sk);
        format!(
            "the kernel's account: ListenDrops {drops}, TCPDeferAcceptDrop {deferred}, the \
             listener's sk_drops {sk}: {} dropped at ACK time, {syn_time} at SYN time",
            drops.saturating_sub(syn_time)
        )
    }
}

/// Makes ACK-time accept-queue overflows (the TCP_DEFER_ACCEPT recipe).
///
/// With TCP_DEFER_ACCEPT a bare final ACK leaves the request in the SYN queue; the child
/// is created only when data arrives. The victims complete their handshakes first, then
/// `backlog + 1` fillers connect and send data, one at a time, so that the SYN queue never
/// holds more than `victims < backlog` requests (no syncookies on any kernel) and the accept
/// queue ends at `backlog + 1`: full. The victims' data then overflows, and so does every
/// client retransmit and every ACK answering a SYN-ACK retransmit (TCP_DEFER_ACCEPT of 1 s
/// lets the listener resend SYN-ACKs at once), until the listener is closed.
pub fn ack_overflow(
    ns: &Netns,
    bind: &str,
    client_to: Option<&str>,
    victims: usize,
) -> AckOverflow {
    ack_overflow_after(ns, bind, client_to, victims, |_| {})
}

/// [`ack_overflow`], calling `listening` with the listener's address before any client
/// connects (on the namespace's thread: it may block until the observer is ready).
pub fn ack_overflow_after(
    ns: &Netns,
    bind: &str,
    client_to: Option<&str>,
    victims: usize,
    listening: impl FnOnce(SocketAddr) + Send,
) -> AckOverflow {
    let backlog = i32::try_from(victims).unwrap() + 1;
    ns.enter(|| {
        let listener = listen(bind.parse().unwrap(), backlog, Some(1));
        listening(local(&listener));
        let mut addr = local(&listener);
        if let Some(ip) = client_to {
            addr.set_ip(ip.parse().unwrap());
        }
        let quiet = listen(bind.parse().unwrap(), 128, None);
        let mut quiet_addr = local(&quiet);
        if let Some(ip) = client_to {
            quiet_addr.set_ip(ip.parse().unwrap());
        }
        let _client = connect(quiet_addr);
        let _served = quiet.accept().unwrap();
        let _exact = counting_exactly();

        let mut victim_streams: Vec<_> = (0..victims).map(|_| connect(addr)).collect();
        let mut fillers = Vec::new();
        for _ in 0..=backlog {
            let mut filler = connect(addr);
            poke(&mut filler);
            sleep(Duration::from_millis(30));
            fillers.push(filler);
        }
        for victim in &mut victim_streams {
            poke(victim);
        }
        // Client retransmits (200 ms, 600 ms, ...) and the SYN-ACK retransmit at 1 s.
        sleep(Duration::from_millis(2500));
        let victim_reads = victim_streams
            .iter_mut()
            .map(|v| {
                v.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                let mut buf = [0u8; 1];
                v.read(&mut buf)
            })
            .collect();
        let listener_drops = drops(&listener);
        // Closing the listener ends the episode: later retransmits find no listener.
        drop(listener);
        sleep(Duration::from_millis(100));
        AckOverflow {
            listener: addr,
            quiet: quiet_addr,
            victims: victim_streams
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect(),
            backlog,
            victim_reads,
            listener_drops,
        }
    })
}

/// An accept queue held full and one handshake whose final ACK is replayed with raw
/// packets as fast as this process can send them, for `secs` and, on a machine too slow
/// to send `at_least` in that time, until it has (8 × `secs` at most): every packet is an
/// ACK-time overflow.
pub fn overflow_flood(ns: &Netns, secs: u64, at_least: u64) -> (u64, SocketAddr) {
    ns.enter(|| {
        let _exact = counting_exactly();
        let listener = listen("127.0.0.1:0".parse().unwrap(), 1, Some(30));
        let SocketAddr::V4(server) = local(&listener) else {
            unreachable!()
        };
        let sniffer = raw::tcp_sniffer();
        let victim = connect(SocketAddr::V4(server));
        let SocketAddr::V4(client) = victim.local_addr().unwrap() else {
            unreachable!()
        };
        let (server_isn, client_isn) = raw::await_synack_numbers(&sniffer, server, client);
        let mut fillers: Vec<TcpStream> = (0..2).map(|_| connect(SocketAddr::V4(server))).collect();
        for f in &mut fillers {
            poke(f);
            sleep(Duration::from_millis(30));
        }
        let sender = raw::sender();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let limit = started + Duration::from_secs(secs * 8);
        let mut sent = 0u64;
        while Instant::now() < deadline || (sent < at_least && Instant::now() < limit) {
            for _ in 0..1000 {
                raw::data(
                    &sender,
                    client,
                    server,
                    client_isn.wrapping_add(1),
                    server_isn.wrapping_add(1),
                    b"x",
                );
                sent += 1;
            }
        }
        sleep(Duration::from_millis(200));
        drop(listener);
        (sent, SocketAddr::V4(server))
    })
}

/// A veth in `ns` holding 198.18.`subnet`.1/24 and a neighbour, …2, that never answers
/// (a permanent entry: a SYN-ACK to it leaves at once and nothing comes back): the client
/// of [`stop_and_overflow`].
pub fn unanswering_neighbour(ns: &Netns, subnet: u8) {
    ns.veth(&format!("198.18.{subnet}.1"));
    ns.neighbour(
        &format!("198.18.{subnet}.2"),
        &format!("02:00:00:00:{subnet:02x}:02"),
    );
}

/// What [`stop_and_overflow`] did.
pub struct StoppedOverflow {
    /// ListenOverflows of the namespace during the scenario (= the ACKs sent).
    pub overflows: u64,
    /// The client whose final ACKs overflowed.
    pub client: SocketAddrV4,
    /// The connections that fill the accept queue: keep them until the end of the test.
    pub fillers: Vec<TcpStream>,
}

/// ACK-time overflows of the listener on `port` of a server that stops accepting: `pid`
/// (whatever holds the listener, a container's busybox httpd) is stopped with SIGSTOP,
/// then [`unanswering_neighbour`]`(ns, subnet)`'s address sends a SYN, which is answered
/// and stays in the SYN queue; `limit + 1` connections over loopback fill the accept
/// queue; each of `acks` final ACKs of the neighbour (`gap` apart) is then one ACK-time
/// overflow (ListenOverflows and ListenDrops, `ack_accept_queue_full`). Asserts the
/// namespace's kernel counted exactly that.
pub fn stop_and_overflow(
    ns: &Netns,
    pid: i32,
    port: u16,
    subnet: u8,
    acks: u32,
    gap: Duration,
) -> StoppedOverflow {
    let server = SocketAddrV4::new(Ipv4Addr::new(198, 18, subnet, 1), port);
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 18, subnet, 2), 40_000 + port % 1000);
    let limit = queue(ns, port).expect("a listener on the port").1;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the server");
    // Until it has stopped, a woken accept() may still take a connection (a loaded
    // machine can leave it unscheduled for a while).
    crate::tools::wait_until("the server to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
            .unwrap_or(false)
    });
    let before = ns.nstat();
    let fillers = ns.enter(|| {
        let _exact = counting_exactly();
        let sniffer = raw::frame_sniffer();
        let sender = raw::sender();
        let isn = 4_000_000;
        raw::syn(&sender, client, server, isn);
        let server_isn = raw::await_synack(&sniffer, server, client);
        let loopback = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let fillers: Vec<TcpStream> = (0..=limit).map(|_| connect(loopback)).collect();
        // The server queues a child when the filler's final ACK arrives, which may be
        // after connect() returned: wait until the queue is full (limit + 1).
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue(ns, port).map(|q| q.0) != Some(limit + 1) {
            assert!(
                Instant::now() < deadline,
                "the accept queue of port {port} never filled: {:?} (limit {limit})",
                queue(ns, port)
            );
            sleep(Duration::from_millis(20));
        }
        for _ in 0..acks {
            raw::ack(&sender, client, server, isn + 1, server_isn.wrapping_add(1));
            sleep(gap);
        }
        sleep(Duration::from_millis(200));
        fillers
    });
    let after = ns.nstat();
    let overflows = delta(&before, &after, "TcpExtListenOverflows");
    let moved: Vec<(&String, u64)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .collect();
    assert_eq!(
        overflows,
        u64::from(acks),
        "port {port}: each final ACK into the full queue is one overflow; counters that \
         moved: {moved:?}"
    );
    StoppedOverflow {
        overflows,
        client,
        fillers,
    }
}

/// (Recv-Q, Send-Q) of the listener on `port` in `ns`, as `ss` shows them.
fn queue(ns: &Netns, port: u16) -> Option<(u32, u32)> {
    crate::tools::ss_listeners(ns)
        .into_iter()
        .find(|l| l.local.ends_with(&format!(":{port}")))
        .map(|l| (l.recv_q, l.send_q))
}
