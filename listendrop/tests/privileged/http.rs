//! The HTTP endpoint under hostile clients: connections past the cap, idle connections,
//! malformed and oversized requests, wrong methods and paths; a normal scrape must still
//! succeed.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::support::{daemon::Daemon, require_root};

/// Sends raw bytes and returns the status line of the answer (empty if closed).
fn raw_request(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The connection cap the daemon of this test runs with (`--web.max-connections`): small
/// enough to be passed in well under the 5 s header timeout on an emulated arm64 guest
/// (which opens ~120 connections a second), so nothing here depends on timing.
const CAP: usize = 64;
/// Connections opened past the cap.
const PAST_CAP: usize = 24;

/// Connections that never send a byte, and malformed requests arriving all the while: a
/// scrape still succeeds, without waiting behind them. Returns the idle connections
/// (still open).
fn scrape_among_idle_and_malformed(daemon: &Daemon) -> Vec<TcpStream> {
    // Under the cap with the scrape and the malformed requests' one connection at a time.
    let idle: Vec<TcpStream> = (0..CAP - 16)
        .map(|_| TcpStream::connect(daemon.addr).unwrap())
        .collect();
    // ... and malformed requests arriving all the while (stopped however the scrape
    // ends, a failed assertion included).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop_guard = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                raw_request(daemon.addr, b"\x16\x03\x01garbage\r\n\r\n");
                raw_request(daemon.addr, b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n");
            }
        });
        let started = Instant::now();
        let (status, body) = daemon.get("/metrics");
        // Not waiting behind the idle connections: they are only dropped after their 5 s
        // header timeout, so a server that served them in turn would take that long.
        let took = started.elapsed();
        drop(stop_guard);
        assert_eq!(status, 200);
        assert!(body.contains("listendrop_build_info"));
        assert!(
            took < Duration::from_secs(4),
            "the scrape waited {took:?} behind idle connections"
        );
    });

    idle
}

/// With [`CAP`] connections open and silent, each of [`PAST_CAP`] more is answered 503 and
/// closed at once; the ones under the cap are not.
fn connections_past_the_cap_refused(daemon: &Daemon) {
    // Accepted in the order they connect: the first CAP take the slots.
    let mut conns: Vec<TcpStream> = (0..CAP + PAST_CAP)
        .map(|_| TcpStream::connect(daemon.addr).unwrap())
        .collect();
    for c in &conns {
        c.set_nonblocking(true).unwrap();
    }
    // Each one's answer, once it came: a 503, or anything else (an accepted one closed by
    // its header timeout).
    let mut answers: Vec<Option<bool>> = vec![None; conns.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settled_at = None;
    loop {
        for (c, answer) in conns.iter_mut().zip(answers.iter_mut()) {
            if answer.is_some() {
                continue;
            }
            let mut head = [0u8; 12];
            match c.read(&mut head) {
                Ok(n) => *answer = Some(head[..n].starts_with(b"HTTP/1.1 503")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *answer = Some(false),
            }
        }
        let refused = answers.iter().filter(|a| **a == Some(true)).count();
        // Once PAST_CAP are refused, half a second more shows that no other one is.
        if refused >= PAST_CAP && settled_at.is_none() {
            settled_at = Some(Instant::now());
        }
        if settled_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500))
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i] == Some(true))
        .collect();
    assert_eq!(
        refused,
        (CAP..CAP + PAST_CAP).collect::<Vec<_>>(),
        "with the cap at {CAP}, connections {CAP}.. are refused (503), no other one"
    );
    drop(conns);
}

/// Malformed, oversized, wrong-method and unknown-path requests get their 4xx.
fn bad_requests_answered(daemon: &Daemon) {
    assert!(raw_request(daemon.addr, b"\x16\x03\x01garbage\r\n\r\n").contains("400"));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw_request(daemon.addr, huge.as_bytes());
    assert!(answer.contains("431") || answer.is_empty(), "{answer}");
    let many: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = raw_request(
        daemon.addr,
        format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert!(answer.contains("431") || answer.is_empty(), "{answer}");
    assert!(raw_request(
        daemon.addr,
        b"POST /metrics HTTP/1.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .contains("405"));
    assert!(raw_request(
        daemon.addr,
        b"GET /admin HTTP/1.1\r\nconnection: close\r\n\r\n"
    )
    .contains("404"));
    assert!(
        raw_request(daemon.addr, b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n").contains("404")
    );
    assert_eq!(daemon.get("/healthz"), (200, "ok\n".to_owned()));
}

/// An idle connection is closed after the header timeout (5 s).
fn idle_connection_closed(daemon: &Daemon) {
    let mut lazy = TcpStream::connect(daemon.addr).unwrap();
    lazy.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let n = lazy.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf.starts_with(b"HTTP/1.1 408"),
        "idle connection answered {n} bytes"
    );
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "idle connection never closed"
    );
}

#[test]
fn hostile_clients_do_not_starve_the_scraper() {
    if !require_root("hostile_clients_do_not_starve_the_scraper") {
        return;
    }
    let daemon = Daemon::start(&["--web.max-connections", &CAP.to_string()]);
    connections_past_the_cap_refused(&daemon);
    // The slots freed (each connection's task ends once its client closed).
    std::thread::sleep(Duration::from_millis(300));
    let idle = scrape_among_idle_and_malformed(&daemon);
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    bad_requests_answered(&daemon);
    idle_connection_closed(&daemon);
    assert_eq!(daemon.get("/metrics").0, 200, "scrape after the abuse");
    assert!(daemon.stop().success());
}
