//! The workloads: packets and connections this process makes, and the peer's program.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::net::UnixDatagram},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use listendrop_testsupport::netns::Netns;

/// UDP datagrams to a closed port for `secs`: every one is freed with a drop reason that
/// is not a listen overflow (the path every other freed packet on a host takes).
pub fn udp_flood(ns: &Netns, secs: u64) -> u64 {
    ns.enter(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut sent = 0u64;
        while Instant::now() < deadline {
            for _ in 0..1000 {
                let _ = s.send_to(b"x", "127.0.0.1:9");
                sent += 1;
            }
        }
        sent
    })
}

/// Nanoseconds per freed packet inside one `close()`: `datagrams` one-byte datagrams
/// queued on an AF_UNIX socket, then the socket closed, which frees each with `kfree_skb`
/// (SKB_DROP_REASON_SOCKET_CLOSE, not a listen overflow) in one loop in the kernel
/// (`unix_release_sock`). Nothing else runs in between (no syscall, no network stack),
/// so the time is what one non-matching free costs with whatever is attached to the
/// tracepoint: the kernel's dispatch to it (and the record a classic tracepoint fills)
/// included, which the programs' own accounting leaves out. The fastest of `closes`.
/// The receiver's queue is capped at the namespace's `net.unix.max_dgram_qlen` (default
/// 10): the caller raises it past `datagrams` once.
pub fn purge(ns: &Netns, datagrams: usize, closes: usize) -> f64 {
    ns.enter(|| {
        (0..closes)
            .map(|_| {
                let (tx, rx) = UnixDatagram::pair().unwrap();
                // Each queued datagram is charged to the sender (~800 bytes of truesize):
                // room for all of them, past net.core.wmem_max (root only).
                let big: libc::c_int = 1 << 30;
                // SAFETY: a valid socket and a c_int option value of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        tx.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_SNDBUFFORCE,
                        (&raw const big).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_SNDBUFFORCE: {}", std::io::Error::last_os_error());
                tx.set_nonblocking(true).unwrap();
                let mut queued = 0;
                while queued < datagrams && tx.send(b"x").is_ok() {
                    queued += 1;
                }
                assert_eq!(queued, datagrams, "the receiver's queue took fewer");
                let start = Instant::now();
                drop(rx);
                start.elapsed().as_nanos() as f64 / datagrams as f64
            })
            .fold(f64::MAX, f64::min)
    })
}

/// Loopback connect/accept/close cycles per second over `secs`.
pub fn connection_rate(ns: &Netns, secs: u64) -> f64 {
    ns.enter(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = std::thread::spawn(move || {
            let mut n = 0u64;
            while let Ok((mut s, _)) = listener.accept() {
                let mut b = [0u8; 1];
                if s.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                let _ = s.write_all(b"y");
                n += 1;
            }
            n
        });
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"x").unwrap();
            // Wait for the server's answer: the client never outruns accept() (a full
            // accept queue would drop SYNs and measure the kernel's 1 s SYN timer).
            let mut answer = [0u8; 1];
            let _ = c.read(&mut answer);
            // Close with a reset: no TIME_WAIT piles up to slow the next run down.
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            n += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        // A connection that sends nothing ends the acceptor.
        drop(TcpStream::connect(addr).unwrap());
        let _ = acceptor.join();
        n as f64 / elapsed
    })
}

/// The peer: bpftrace counting listen-overflow frees per listener, the way an SRE would
/// write it. Killed on drop.
pub struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// The program: the filter compares with the same value the daemon uses, from the
    /// running kernel's BTF (SKB_DROP_REASON_TCP_LISTEN_OVERFLOW, 6.15+; 0 matches
    /// nothing).
    pub fn program() -> String {
        let reason =
            listendrop::btf::KernelBtf::open(std::path::Path::new("/sys/kernel/btf/vmlinux"))
                .and_then(|b| {
                    b.enum_value("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
                })
                .unwrap_or(0);
        format!(
            "tracepoint:skb:kfree_skb /args->reason == {reason}/ {{ @[args->rx_sk] = count(); }}"
        )
    }

    pub fn start(program: &str) -> Self {
        let child = Command::new("bpftrace")
            .args(["-e", program])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bpftrace (apt-get install bpftrace)");
        // Until its program is loaded and attached.
        std::thread::sleep(Duration::from_secs(3));
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
