//! The HTTP endpoint under hostile clients: idle connections, malformed and oversized
//! requests, wrong methods and paths; a normal scrape must still succeed.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
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

/// Hundreds of connections that never send a byte, and malformed requests arriving all
/// the while: a scrape still succeeds, without waiting behind them. Returns the idle
/// connections (still open).
fn scrape_among_idle_and_malformed(daemon: &Daemon) -> Vec<TcpStream> {
    let idle: Vec<TcpStream> = (0..300)
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
        let started = std::time::Instant::now();
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

/// Past the connection cap (512 by default, `--web.max-connections`), with the idle ones
/// still held, connections are answered 503 and closed at once.
fn connections_past_the_cap_refused(daemon: &Daemon) {
    // (All connect first, then look: the idle ones must not reach their 5 s timeout.)
    let mut more: Vec<TcpStream> = (0..260)
        .map(|_| TcpStream::connect(daemon.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = 0;
    for s in &mut more {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut head = [0u8; 12];
        if s.read(&mut head)
            .is_ok_and(|n| n == 12 && head.starts_with(b"HTTP/1.1 503"))
        {
            refused += 1;
        }
    }
    // 300 idle + 1 keep-alive scrape + 260: the last 49 are over the default cap of 512.
    assert!(refused > 0, "no connection was refused beyond the cap");
    drop(more);
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
    let started = std::time::Instant::now();
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
    let daemon = Daemon::start(&[]);
    let idle = scrape_among_idle_and_malformed(&daemon);
    connections_past_the_cap_refused(&daemon);
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    bad_requests_answered(&daemon);
    idle_connection_closed(&daemon);
    assert_eq!(daemon.get("/metrics").0, 200, "scrape after the abuse");
    assert!(daemon.stop().success());
}
