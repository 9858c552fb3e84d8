//! TCP listening sockets and their SYN queues from NETLINK_SOCK_DIAG (`ss -lnt` without
//! `ss`), in the network namespace of the calling thread.
//!
//! One dump per address family asks for the LISTEN sockets (with `INET_DIAG_SKMEMINFO`) and
//! the SYN_RECV request sockets. For a listener, `idiag_rqueue` is its accept queue length
//! and `idiag_wqueue` its limit (`min(backlog, net.core.somaxconn)`), and
//! `SK_MEMINFO_DROPS` is `sk_drops`, every handshake packet it dropped. Request sockets
//! (half-open connections, the SYN queue) carry no listener reference, only their local
//! address and port, so they are counted per (family, address, port) and attributed to
//! the listener that the kernel's lookup would pick for that address and port: an exact
//! address before a wildcard (`0.0.0.0`/`::`) one, and a dual-stack IPv6 listener
//! (`IPV6_V6ONLY` off) for IPv4 requests. Members of one SO_REUSEPORT group share address
//! and port and cannot be told apart this way: each member reports the group's total and
//! [`ListenSocket::syn_recv_shared_by`] says how many share it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_LISTEN, TCP_SYN_RECV},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::InventoryError;

pub use crate::listener::Family;

/// A TCP socket in LISTEN state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSocket {
    /// Address family.
    pub family: Family,
    /// Bound address (`0.0.0.0`/`::` for wildcard listeners).
    pub addr: IpAddr,
    /// Bound port.
    pub port: u16,
    /// Socket inode (`socket:[inode]` in `/proc/PID/fd`, `ino:` in `ss -e`).
    pub inode: u64,
    /// Socket cookie, unique for the boot (`sk:` in `ss -e`, `bpf_get_socket_cookie`).
    pub cookie: u64,
    /// Connections waiting for `accept()` (`idiag_rqueue`, Recv-Q of `ss -lnt`).
    pub accept_queue_len: u32,
    /// Accept queue limit, `min(backlog, net.core.somaxconn)` (`idiag_wqueue`, Send-Q).
    /// The kernel drops when the length exceeds it, so the queue holds limit + 1.
    pub accept_queue_limit: u32,
    /// `sk_drops`: handshake packets this socket dropped since it was created
    /// (`SK_MEMINFO_DROPS`, `d` in `ss -m`); `None` if the kernel sent no
    /// `INET_DIAG_SKMEMINFO`.
    pub sk_drops: Option<u32>,
    /// `IPV6_V6ONLY` (IPv6 sockets only; a dual-stack listener also takes IPv4).
    pub v6only: bool,
    /// Half-open connections (SYN_RECV request sockets) to this listener's address and
    /// port: its SYN queue length, shared with its SO_REUSEPORT group.
    pub syn_recv: u32,
    /// How many listeners share `syn_recv` (1, or the size of an SO_REUSEPORT group).
    pub syn_recv_shared_by: u32,
}

impl ListenSocket {
    /// The listener this socket is (one member of it, for an SO_REUSEPORT group), in
    /// namespace `netns`.
    pub fn id(&self, netns: crate::listener::Netns) -> crate::listener::ListenerId {
        crate::listener::ListenerId {
            netns,
            addr: self.addr,
            port: self.port,
        }
    }
}

/// The local end of a request socket: what SYN_RECV entries are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// Family the kernel reported for the request.
    pub family: Family,
    /// Local (server) address the SYN was sent to.
    pub addr: IpAddr,
    /// Local port.
    pub port: u16,
}

/// What one namespace's dump found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    /// Every listener, IPv4 first, with its SYN queue attributed.
    pub listeners: Vec<ListenSocket>,
    /// SYN_RECV entries no listener could be found for (the listener closed meanwhile).
    pub unattributed_syn_recv: u32,
}

/// One decoded sock_diag answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Listener(ListenSocket),
    Request(RequestKey),
}

/// Dumps the TCP listeners and SYN queues of the calling thread's network namespace.
pub fn dump() -> Result<Sockets, InventoryError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|source| InventoryError::SockDiag {
        what: "open a NETLINK_SOCK_DIAG socket",
        source,
    })?;
    socket
        .bind_auto()
        .and_then(|_| socket.connect(&SocketAddr::new(0, 0)))
        .map_err(|source| InventoryError::SockDiag {
            what: "bind the NETLINK_SOCK_DIAG socket",
            source,
        })?;
    let mut listeners = Vec::new();
    let mut requests: BTreeMap<RequestKey, u32> = BTreeMap::new();
    for (seq, family) in [(1, AF_INET), (2, AF_INET6)] {
        for response in dump_family(&socket, family, seq)? {
            match classify(&response) {
                Some(Entry::Listener(l)) => listeners.push(l),
                Some(Entry::Request(key)) => *requests.entry(key).or_default() += 1,
                None => {}
            }
        }
    }
    let unattributed_syn_recv = attribute(&mut listeners, &requests);
    Ok(Sockets {
        listeners,
        unattributed_syn_recv,
    })
}

/// Sends one dump request for TCP sockets of `family` in LISTEN or SYN_RECV state and
/// collects the answers until NLMSG_DONE.
fn dump_family(socket: &Socket, family: u8, seq: u32) -> Result<Vec<InetResponse>, InventoryError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::LISTEN | StateFlags::SYN_RECV,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|source| InventoryError::SockDiag {
            what: "send the dump request",
            source,
        })?;
    let mut out = Vec::new();
    loop {
        let (datagram, _) = socket
            .recv_from_full()
            .map_err(|source| InventoryError::SockDiag {
                what: "receive the dump",
                source,
            })?;
        if parse_datagram(&datagram, &mut out)? {
            return Ok(out);
        }
    }
}

/// Appends the inet answers of one netlink datagram to `out`; `Ok(true)` once the dump
/// is done.
pub fn parse_datagram(
    mut bytes: &[u8],
    out: &mut Vec<InetResponse>,
) -> Result<bool, InventoryError> {
    while !bytes.is_empty() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
            .map_err(|source| InventoryError::SockDiagDecode { source })?;
        let len = message.header.length as usize;
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                // Not `to_io()`: its `abs()` overflows on i32::MIN (found by fuzzing); a
                // kernel sends -errno, anything else is a malformed answer.
                let source = std::io::Error::from_raw_os_error(
                    e.raw_code().checked_neg().unwrap_or(libc::EPROTO),
                );
                // ENOENT: no handler for TCP, i.e. tcp_diag is not loaded (the kernel loads
                // it through modprobe on demand; without modprobe it stays missing).
                if source.raw_os_error() == Some(2) {
                    return Err(InventoryError::SockDiagModule);
                }
                return Err(InventoryError::SockDiag {
                    what: "dump TCP sockets",
                    source,
                });
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
            _ => {}
        }
        // Messages are 4-byte aligned within a datagram.
        let next = len.next_multiple_of(4);
        if len == 0 || next > bytes.len() {
            break;
        }
        bytes = &bytes[next..];
    }
    Ok(false)
}

/// The socket cookie from `idiag_cookie[2]` (two host-endian u32, low word first), as
/// `ss` prints it.
fn cookie(raw: &[u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Turns an answer into a listener or a request key (`None` for anything else).
fn classify(r: &InetResponse) -> Option<Entry> {
    let family = match r.header.family {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let id = &r.header.socket_id;
    match r.header.state {
        TCP_LISTEN => {
            let mut sk_drops = None;
            let mut v6only = false;
            for nla in &r.nlas {
                match nla {
                    Nla::MemInfo(m) => sk_drops = Some(m.drops),
                    Nla::SkV6Only(v) => v6only = *v,
                    _ => {}
                }
            }
            Some(Entry::Listener(ListenSocket {
                family,
                addr: id.source_address,
                port: id.source_port,
                inode: u64::from(r.header.inode),
                cookie: cookie(&id.cookie),
                accept_queue_len: r.header.recv_queue,
                accept_queue_limit: r.header.send_queue,
                sk_drops,
                v6only,
                syn_recv: 0,
                syn_recv_shared_by: 0,
            }))
        }
        TCP_SYN_RECV => Some(Entry::Request(RequestKey {
            family,
            addr: id.source_address,
            port: id.source_port,
        })),
        _ => None,
    }
}

/// The IPv4 address of IPv4 traffic: a plain IPv4 address or an IPv4-mapped IPv6 one.
fn ipv4_of(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// How well listener `l` matches a request to `r`: 2 for its exact address, 1 as a
/// wildcard, `None` if it would not receive that SYN.
fn score(l: &ListenSocket, r: &RequestKey) -> Option<u8> {
    if l.port != r.port {
        return None;
    }
    match l.family {
        Family::Ipv4 => {
            if r.family != Family::Ipv4 {
                None
            } else if l.addr == r.addr {
                Some(2)
            } else if l.addr.is_unspecified() {
                Some(1)
            } else {
                None
            }
        }
        Family::Ipv6 => match ipv4_of(r.addr) {
            Some(v4) if !l.v6only => {
                if ipv4_of(l.addr) == Some(v4) && !l.addr.is_unspecified() {
                    Some(2)
                } else if l.addr.is_unspecified() {
                    Some(1)
                } else {
                    None
                }
            }
            Some(_) => None,
            None if l.addr == r.addr => Some(2),
            None if l.addr.is_unspecified() => Some(1),
            None => None,
        },
    }
}

/// Sets `syn_recv`/`syn_recv_shared_by` of each listener from the per-key request counts;
/// returns how many requests matched no listener.
pub fn attribute(listeners: &mut [ListenSocket], requests: &BTreeMap<RequestKey, u32>) -> u32 {
    for l in listeners.iter_mut() {
        l.syn_recv = 0;
        l.syn_recv_shared_by = 1;
    }
    let mut unattributed = 0;
    for (key, &count) in requests {
        let best = listeners.iter().filter_map(|l| score(l, key)).max();
        let Some(best) = best else {
            unattributed += count;
            continue;
        };
        let group: Vec<usize> = (0..listeners.len())
            .filter(|&i| score(&listeners[i], key) == Some(best))
            .collect();
        let shared_by = u32::try_from(group.len()).unwrap_or(u32::MAX);
        for i in group {
            listeners[i].syn_recv += count;
            listeners[i].syn_recv_shared_by = shared_by;
        }
    }
    unattributed
}

#[cfg(test)]
mod tests;
