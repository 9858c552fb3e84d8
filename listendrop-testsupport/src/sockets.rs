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
