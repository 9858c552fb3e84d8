//! Real TCP sockets for the scenarios (socket2 for what std does not expose).

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket with an explicit `listen()` backlog, optionally with
/// TCP_DEFER_ACCEPT (the server is woken only when data arrives).
pub fn listen(addr: SocketAddr, backlog: i32, defer_accept_secs: Option<i32>) -> Socket {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    if let Some(secs) = defer_accept_secs {
        // SAFETY: setsockopt on an fd we own, with a pointer to a live i32 and its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_ref(&secs).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "TCP_DEFER_ACCEPT: {}",
            std::io::Error::last_os_error()
        );
    }
    socket.bind(&addr.into()).unwrap();
    socket.listen(backlog).unwrap();
    socket
}

/// A member of an SO_REUSEPORT group on `addr` (port 0 picks one; bind the next members
/// to the port the first got): each member is its own listening socket with its own
/// accept queue, and the kernel hashes each SYN to one of them.
pub fn listen_reuseport(addr: SocketAddr, backlog: i32) -> Socket {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(backlog).unwrap();
    socket
}

/// The socket's drop count (`sk_drops`, SO_MEMINFO's SK_MEMINFO_DROPS). How a listener's
/// grows, and what that tells, is [`crate::scenarios::AckOverflow::kernel_account`]'s.
pub fn drops(socket: &Socket) -> u32 {
    /// SK_MEMINFO_DROPS in include/uapi/linux/sock_diag.h.
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt on an fd we own, into a live array with its size in bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "SO_MEMINFO: {}", std::io::Error::last_os_error());
    info[SK_MEMINFO_DROPS]
}

/// The bound address of a socket.
pub fn local(socket: &Socket) -> SocketAddr {
    socket.local_addr().unwrap().as_socket().unwrap()
}

/// Connects (the handshake completes on the client's side even when the server drops it
/// later: the kernel answers the SYN from its SYN queue).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends one byte.
pub fn poke(stream: &mut TcpStream) {
    stream.write_all(b"x").unwrap();
}

/// A child process holding a socket; killed (by pid) when dropped, even on a panic.
pub struct Holder(std::process::Child);

impl Holder {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sleep 600` holding `socket` (inherited as a file descriptor), so that a real
/// process other than the test owns it; the caller then closes its own copy.
pub fn hold_in_child(socket: &Socket) -> Holder {
    use std::os::unix::process::CommandExt as _;
    let fd = socket.as_raw_fd();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    // SAFETY: between fork and exec only async-signal-safe fcntl runs, on an fd the child
    // inherited: it clears close-on-exec there alone, so no other child gets the socket.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Holder(cmd.spawn().expect("spawn sleep"))
}

/// The variable that tells a re-executed test binary to serve the listening socket at this
/// file descriptor (see [`serve_in_child`]).
pub const SERVE_FD: &str = "LISTENDROP_TEST_SERVE_FD";

/// The name of the test that turns a re-executed test binary into a server: every test
/// target that calls [`serve_in_child`] defines it (`#[test] #[ignore] fn NAME()` calling
/// [`serve_if_asked`]).
pub const SERVE_TEST: &str = "support_serve";

/// Starts a worker process — this test binary again, running only [`SERVE_TEST`] — that
/// accepts connections on `socket` (inherited as a file descriptor) and closes each at
/// once, like a server's worker; killed by its pid when dropped. The caller then closes
/// its own copy, so that the worker is the socket's only holder.
pub fn serve_in_child(socket: &Socket) -> Holder {
    use std::os::unix::process::CommandExt as _;
    let fd = socket.as_raw_fd();
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("own path"));
    cmd.args(["--exact", SERVE_TEST, "--ignored", "--test-threads=1"])
        .env(SERVE_FD, fd.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe fcntl runs, on an fd the child
    // inherited: it clears close-on-exec there alone, so no other child gets the socket.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Holder(cmd.spawn().expect("spawn a worker"))
}

/// In a worker started by [`serve_in_child`], accepts and closes connections until killed;
/// elsewhere returns at once.
pub fn serve_if_asked() {
    use std::os::fd::FromRawFd as _;
    let Some(fd) = std::env::var(SERVE_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the parent handed over this descriptor, a listening socket, for this process
    // to own.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    loop {
        if let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    }
}
