//! Per-handshake events from the ring buffer: decoded once, at the boundary, into an
//! [`Event`] (listener, reason, socket addresses, queues, flags) that the log, `trace` and
//! the diagnosis use; the one-line log format; the task that drains the buffer.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE, FLAG_RESET},
    DropEvent, Reason, AF_INET, AF_INET6,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    inventory::{containers::ContainerIdentity, owners::Owner},
    listener::{ip, ListenerId},
};

/// Why a ring-buffer record could not be decoded (an eBPF object of another version).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not the size of a [`DropEvent`].
    #[error("event record has {got} bytes, expected {expected}")]
    Size {
        /// Bytes received.
        got: usize,
        /// `size_of::<DropEvent>()`.
        expected: usize,
    },
    /// The reason number is not one this build knows.
    #[error("event record has reason {0}, which this build does not know")]
    Reason(u32),
    /// An address family other than IPv4 and IPv6.
    #[error("event record has address family {0}")]
    Family(u16),
}

/// What the kernel side said about the handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The drop was answered with a reset (`tcp_abort_on_overflow=1`).
    pub reset: bool,
    /// The first drop of this handshake's episode (not a retransmit).
    pub new_handshake: bool,
    /// A SYN-ACK retransmit of a handshake whose ACK was dropped: the client believes it
    /// is connected.
    pub client_believes_connected: bool,
}

/// An accept queue at the moment of the event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    /// Connections waiting for accept().
    pub len: u32,
    /// Its limit, min(backlog, somaxconn); 0 when the kernel side could not read it.
    pub limit: u32,
}

/// One event: a dropped handshake, a syncookie, or a SYN-ACK retransmit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the event.
    pub ktime_ns: u64,
    /// The listener.
    pub listener: ListenerId,
    /// What happened.
    pub reason: Reason,
    /// The socket cookie of the member of the listener's SO_REUSEPORT group that saw it
    /// (of the listener itself for a plain socket); 0 when not known yet.
    pub cookie: u64,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The server's address and port the client used (an IPv4 client of an IPv6 wildcard
    /// listener has IPv4 addresses here).
    pub server: SocketAddr,
    /// The accept queue of the socket that saw it.
    pub accept_queue: Queue,
    /// Its SYN queue (half-open requests).
    pub syn_queue: u32,
    /// Flags.
    pub flags: Flags,
}

impl Event {
    /// Whether the event is a dropped handshake packet.
    pub const fn is_drop(&self) -> bool {
        self.reason.is_drop()
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let expected = std::mem::size_of::<DropEvent>();
    if bytes.len() != expected {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length was checked; DropEvent is repr(C) plain data valid for any bit
    // pattern, and read_unaligned makes no alignment assumption about the record.
    let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DropEvent>()) };
    from_raw(&raw)
}

/// The typed form of a kernel-side record.
pub fn from_raw(raw: &DropEvent) -> Result<Event, DecodeError> {
    let reason = raw
        .listener
        .reason()
        .ok_or(DecodeError::Reason(raw.listener.reason.into()))?;
    for family in [raw.family, raw.listener.family()] {
        if family != AF_INET && family != AF_INET6 {
            return Err(DecodeError::Family(family));
        }
    }
    Ok(Event {
        ktime_ns: raw.ktime_ns,
        listener: ListenerId::from(&raw.listener),
        reason,
        cookie: raw.cookie,
        client: SocketAddr::new(ip(raw.family, &raw.saddr), raw.sport),
        server: SocketAddr::new(ip(raw.family, &raw.daddr), raw.dport),
        accept_queue: Queue {
            len: raw.accept_queue_len,
            limit: raw.accept_queue_max,
        },
        syn_queue: raw.syn_queue_len,
        flags: Flags {
            reset: raw.flags & FLAG_RESET != 0,
            new_handshake: raw.flags & FLAG_NEW_HANDSHAKE != 0,
            client_believes_connected: raw.flags & FLAG_CLIENT_BELIEVES_CONNECTED != 0,
        },
    })
}

/// The log line of one event, e.g.
/// `listener=127.0.0.1:7004 netns=4026531840 owner=1234/nginx client=127.0.0.1:51234
/// server=127.0.0.1:7004 reason=ack_accept_queue_full accept_queue=2/1 syn_queue=0
/// new_handshake=yes`; an owner in a container adds what is known of it after `owner`:
/// `pod=shop/web-1 container=nginx container_id=079a806d7b7f image=nginx:1.27`.
pub struct LogLine<'a> {
    /// The event.
    pub event: &'a Event,
    /// The owner of the socket that saw it, when the inventory knows it.
    pub owner: Option<&'a Owner>,
}

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.event;
        write!(
            f,
            "listener={} netns={}",
            e.listener.socket_addr(),
            e.listener.netns
        )?;
        if let Some(owner) = self.owner {
            write!(f, " owner={}/{}", owner.pid, owner.comm)?;
            if let Some(container) = &owner.container {
                write_container(f, container)?;
            }
        }
        write!(
            f,
            " client={} server={} reason={} accept_queue={}/{} syn_queue={}",
            e.client,
            e.server,
            e.reason.as_str(),
            e.accept_queue.len,
            e.accept_queue.limit,
            e.syn_queue,
        )?;
        if e.is_drop() {
            let new = if e.flags.new_handshake { "yes" } else { "no" };
            write!(f, " new_handshake={new}")?;
        }
        if e.flags.reset {
            write!(f, " reset=sent")?;
        }
        if e.flags.client_believes_connected {
            write!(
                f,
                " note=\"client believes it is connected: its ACK was dropped\""
            )?;
        }
        Ok(())
    }
}

/// ` pod=NS/NAME container=NAME container_id=SHORT image=IMAGE`, each when known (the
/// pod's UID when only that is).
fn write_container(f: &mut fmt::Formatter<'_>, c: &ContainerIdentity) -> fmt::Result {
    if !c.pod_name.is_empty() {
        write!(
            f,
            " pod={}",
            Value(&format!("{}/{}", c.pod_namespace, c.pod_name))
        )?;
    } else if !c.pod_uid.is_empty() {
        // The pod's names are unknown (its runtime's bundle was not found): its UID is
        // what `kubectl get pods -A -o custom-columns=...metadata.uid` finds it by.
        write!(f, " pod_uid={}", Value(&c.pod_uid))?;
    }
    if !c.name.is_empty() {
        write!(f, " container={}", Value(&c.name))?;
    }
    write!(f, " container_id={}", Value(c.short_id()))?;
    if !c.image.is_empty() {
        write!(f, " image={}", Value(&c.image))?;
    }
    Ok(())
}

/// A value of the key=value line: as it is, or quoted when it holds a space or a quote
/// (names come from outside).
struct Value<'a>(&'a str);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() || self.0.contains(|c: char| c.is_whitespace() || c == '"') {
            write!(f, "{:?}", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

/// Counts of what the drain task saw.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Records decoded and handled.
    pub received: AtomicU64,
    /// Records that could not be decoded.
    pub malformed: AtomicU64,
}

/// Drains the ring buffer, handing each decoded event to `handle`, until `stop`
/// completes; then reads what is left in the ring once more, so that nothing the
/// programs submitted before the stop is lost (a consumer that was not scheduled for a
/// while, or a signal that arrived with records pending).
pub async fn drain(
    ring: RingBuf<MapData>,
    stats: Arc<EventStats>,
    mut handle: impl FnMut(&Event),
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the
    // AsyncFd (and with it the RingBuf) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
    let mut read_all = |ring: &mut RingBuf<MapData>| {
        while let Some(record) = ring.next() {
            match decode(&record) {
                Ok(event) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    handle(&event);
                }
                Err(e) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("dropping a malformed event: {e}");
                }
            }
        }
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let stopped = tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                read_all(guard.get_inner_mut());
                guard.clear_ready();
                false
            }
            () = &mut stop => true,
        };
        if stopped {
            read_all(fd.get_mut());
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use listendrop_common::Addr;

    use super::*;

    fn raw_v4() -> DropEvent {
        let mut e = DropEvent::ZERO;
        e.listener.family = AF_INET as u8;
        e.listener.addr = Addr::from_v4_octets([127, 0, 0, 1]);
        e.listener.port = 7004;
        e.listener.netns = 4026531840;
        e.listener.reason = Reason::AckAcceptQueueFull as u8;
        e.family = AF_INET;
        e.saddr = Addr::from_v4_octets([127, 0, 0, 2]);
        e.daddr = Addr::from_v4_octets([127, 0, 0, 1]);
        e.sport = 51234;
        e.dport = 7004;
        e.accept_queue_len = 2;
        e.accept_queue_max = 1;
        e.flags = FLAG_NEW_HANDSHAKE;
        e
    }

    fn bytes_of(e: &DropEvent) -> Vec<u8> {
        // SAFETY: DropEvent is repr(C) with every padding byte a named field.
        unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(e).cast::<u8>(),
                std::mem::size_of::<DropEvent>(),
            )
        }
        .to_vec()
    }

    fn line(e: &Event) -> String {
        LogLine {
            event: e,
            owner: None,
        }
        .to_string()
    }

    #[test]
    fn decodes_what_the_kernel_side_writes() {
        let raw = raw_v4();
        let mut bytes = bytes_of(&raw);
        let event = decode(&bytes).unwrap();
        assert_eq!(event.listener.socket_addr().to_string(), "127.0.0.1:7004");
        assert_eq!(event.client.to_string(), "127.0.0.2:51234");
        assert_eq!(event.reason, Reason::AckAcceptQueueFull);
        assert!(event.flags.new_handshake && !event.flags.reset);
        // Records are not aligned in the ring buffer mapping: decode from an odd address.
        bytes.insert(0, 0xff);
        assert_eq!(decode(&bytes[1..]), Ok(event));
    }

    #[test]
    fn rejects_records_of_another_size_reason_or_family() {
        let raw = raw_v4();
        let bytes = bytes_of(&raw);
        assert_eq!(
            decode(&bytes[..40]),
            Err(DecodeError::Size {
                got: 40,
                expected: std::mem::size_of::<DropEvent>()
            })
        );
        assert!(decode(&[]).is_err());
        let mut bad = raw;
        bad.listener.reason = 99;
        assert_eq!(from_raw(&bad), Err(DecodeError::Reason(99)));
        let mut bad = raw;
        bad.family = 1;
        assert_eq!(from_raw(&bad), Err(DecodeError::Family(1)));
    }

    #[test]
    fn log_line_ipv4() {
        assert_eq!(
            line(&from_raw(&raw_v4()).unwrap()),
            "listener=127.0.0.1:7004 netns=4026531840 client=127.0.0.2:51234 \
             server=127.0.0.1:7004 reason=ack_accept_queue_full accept_queue=2/1 syn_queue=0 \
             new_handshake=yes"
        );
    }

    #[test]
    fn log_line_flags() {
        let mut raw = raw_v4();
        raw.flags = FLAG_RESET;
        let l = line(&from_raw(&raw).unwrap());
        assert!(l.ends_with(" new_handshake=no reset=sent"), "{l}");
        raw.listener.reason = Reason::SynackRetransmit as u8;
        raw.flags = FLAG_CLIENT_BELIEVES_CONNECTED;
        let l = line(&from_raw(&raw).unwrap());
        assert!(l.contains(" reason=synack_retransmit "), "{l}");
        assert!(!l.contains("new_handshake"), "{l}");
        assert!(l.contains("client believes it is connected"), "{l}");
    }

    #[test]
    fn log_line_ipv4_client_of_ipv6_wildcard_listener() {
        let mut raw = raw_v4();
        raw.listener.family = AF_INET6 as u8;
        raw.listener.addr = Addr::ZERO;
        let l = line(&from_raw(&raw).unwrap());
        assert!(l.starts_with("listener=[::]:7004 "), "{l}");
        assert!(l.contains(" client=127.0.0.2:51234 "), "{l}");
    }

    #[test]
    fn log_line_names_the_owners_pod_and_container() {
        use crate::inventory::containers::{Qos, Runtime};
        let event = from_raw(&raw_v4()).unwrap();
        let mut owner = Owner {
            pid: 4242,
            comm: "httpd".into(),
            cgroup: String::new(),
            holders: 1,
            container: Some(std::sync::Arc::new(ContainerIdentity {
                runtime: Some(Runtime::Containerd),
                id: "079a806d7b7f95b366ef55b568888b7f310e062b43cb9f3d25316c5247bed9f5".into(),
                name: "nginx".into(),
                image: "localhost/bbhttpd:1".into(),
                pod_name: "web-1".into(),
                pod_namespace: "shop".into(),
                pod_uid: "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10".into(),
                qos: Some(Qos::BestEffort),
                rootless_user: None,
            })),
        };
        let l = LogLine {
            event: &event,
            owner: Some(&owner),
        }
        .to_string();
        assert!(
            l.contains(
                " owner=4242/httpd pod=shop/web-1 container=nginx container_id=079a806d7b7f \
                 image=localhost/bbhttpd:1 client="
            ),
            "{l}"
        );
        // What a source could not tell is left out; odd names are quoted.
        owner.container = Some(std::sync::Arc::new(ContainerIdentity {
            id: "abc".into(),
            name: "two words".into(),
            ..ContainerIdentity::default()
        }));
        let l = LogLine {
            event: &event,
            owner: Some(&owner),
        }
        .to_string();
        assert!(
            l.contains(" owner=4242/httpd container=\"two words\" container_id=abc client="),
            "{l}"
        );
        owner.container = None;
        let l = LogLine {
            event: &event,
            owner: Some(&owner),
        }
        .to_string();
        assert!(
            l.contains(" owner=4242/httpd client="),
            "a host process: {l}"
        );
    }

    #[test]
    fn log_line_ipv6() {
        let mut raw = raw_v4();
        raw.family = AF_INET6;
        raw.saddr = Addr::from_octets(Ipv6Addr::LOCALHOST.octets());
        raw.daddr = Addr::from_octets(Ipv6Addr::LOCALHOST.octets());
        assert!(line(&from_raw(&raw).unwrap()).contains(" client=[::1]:51234 "));
    }
}
