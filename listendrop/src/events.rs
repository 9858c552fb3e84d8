//! Per-handshake drop events from the ring buffer: decoding, the one-line log format, and
//! the task that drains the buffer.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use listendrop_common::{
    event::{FLAG_CLIENT_BELIEVES_CONNECTED, FLAG_NEW_HANDSHAKE, FLAG_RESET},
    DropEvent, ListenerKey, Reason, AF_INET6,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::inventory::owners::Owner;

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is not the size of a [`DropEvent`] (an eBPF object from another version).
    #[error("event record has {got} bytes, expected {expected}")]
    Size {
        /// Bytes received.
        got: usize,
        /// `size_of::<DropEvent>()`.
        expected: usize,
    },
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<DropEvent, DecodeError> {
    let expected = std::mem::size_of::<DropEvent>();
    if bytes.len() != expected {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length was checked; DropEvent is repr(C) plain data valid for any bit
    // pattern, and read_unaligned makes no alignment assumption about the record.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DropEvent>()) })
}

/// An address stored by the eBPF side: IPv4 in the first four bytes, or 16 bytes of IPv6.
pub fn ip(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The listener's bound address.
pub fn listen_ip(key: &ListenerKey) -> IpAddr {
    ip(key.family, &key.addr)
}

/// The `reason` label of a key (`unknown` for a number this build does not know).
pub fn reason_label(raw: u32) -> &'static str {
    Reason::from_u32(raw).map_or("unknown", Reason::as_str)
}

/// The log line of one event, e.g.
/// `listener=127.0.0.1:7004 netns=4026531840 owner=1234/nginx client=127.0.0.1:51234
/// server=127.0.0.1:7004 reason=ack_accept_queue_full accept_queue=2/1 syn_queue=0
/// new_handshake=yes`.
pub struct LogLine<'a> {
    /// The event.
    pub event: &'a DropEvent,
    /// The listener's owner, when the inventory knows it.
    pub owner: Option<&'a Owner>,
}

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.event;
        let listener = SocketAddr::new(listen_ip(&e.listener), e.listener.port);
        let client = SocketAddr::new(ip(e.family, &e.saddr), e.sport);
        let server = SocketAddr::new(ip(e.family, &e.daddr), e.dport);
        write!(f, "listener={listener} netns={}", e.listener.netns)?;
        if let Some(owner) = self.owner {
            write!(f, " owner={}/{}", owner.pid, owner.comm)?;
        }
        write!(
            f,
            " client={client} server={server} reason={} accept_queue={}/{} syn_queue={}",
            reason_label(e.listener.reason),
            e.accept_queue_len,
            e.accept_queue_max,
            e.syn_queue_len,
        )?;
        if e.listener.reason < Reason::FIRST_NON_DROP {
            let new = if e.flags & FLAG_NEW_HANDSHAKE != 0 {
                "yes"
            } else {
                "no"
            };
            write!(f, " new_handshake={new}")?;
        }
        if e.flags & FLAG_RESET != 0 {
            write!(f, " reset=sent")?;
        }
        if e.flags & FLAG_CLIENT_BELIEVES_CONNECTED != 0 {
            write!(
                f,
                " note=\"client believes it is connected: its ACK was dropped\""
            )?;
        }
        Ok(())
    }
}

/// Counts of what the drain task saw.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Records decoded and logged.
    pub received: AtomicU64,
    /// Records that could not be decoded.
    pub malformed: AtomicU64,
}

/// Drains the ring buffer forever, handing each decoded event to `handle`.
pub async fn drain(
    ring: RingBuf<MapData>,
    stats: Arc<EventStats>,
    mut handle: impl FnMut(&DropEvent),
) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the
    // AsyncFd (and with it the RingBuf) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {e}"))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
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
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use listendrop_common::AF_INET;

    use super::*;

    fn v4_event() -> DropEvent {
        let mut e = DropEvent::ZERO;
        e.listener.family = AF_INET;
        e.listener.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.listener.port = 7004;
        e.listener.netns = 4026531840;
        e.listener.reason = Reason::AckAcceptQueueFull as u32;
        e.family = AF_INET;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
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

    #[test]
    fn decodes_what_the_kernel_side_writes() {
        let e = v4_event();
        let mut bytes = bytes_of(&e);
        assert_eq!(decode(&bytes), Ok(e));
        // Records are not aligned in the ring buffer mapping: decode from an odd address.
        bytes.insert(0, 0xff);
        assert_eq!(decode(&bytes[1..]), Ok(e));
    }

    #[test]
    fn rejects_records_of_another_size() {
        let bytes = bytes_of(&v4_event());
        assert_eq!(
            decode(&bytes[..40]),
            Err(DecodeError::Size {
                got: 40,
                expected: std::mem::size_of::<DropEvent>()
            })
        );
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn log_line_ipv4() {
        assert_eq!(
            LogLine {
                event: &v4_event(),
                owner: None
            }
            .to_string(),
            "listener=127.0.0.1:7004 netns=4026531840 client=127.0.0.2:51234 \
             server=127.0.0.1:7004 reason=ack_accept_queue_full accept_queue=2/1 syn_queue=0 \
             new_handshake=yes"
        );
    }

    #[test]
    fn log_line_flags() {
        let mut e = v4_event();
        e.flags = FLAG_RESET;
        let line = LogLine {
            event: &e,
            owner: None,
        }
        .to_string();
        assert!(line.ends_with(" new_handshake=no reset=sent"), "{line}");
        e.listener.reason = Reason::SynackRetransmit as u32;
        e.flags = FLAG_CLIENT_BELIEVES_CONNECTED;
        let line = LogLine {
            event: &e,
            owner: None,
        }
        .to_string();
        assert!(line.contains(" reason=synack_retransmit "), "{line}");
        assert!(!line.contains("new_handshake"), "{line}");
        assert!(line.contains("client believes it is connected"), "{line}");
    }

    #[test]
    fn log_line_ipv4_client_of_ipv6_wildcard_listener() {
        let mut e = v4_event();
        e.listener.family = AF_INET6;
        e.listener.addr = [0; 16];
        let line = LogLine {
            event: &e,
            owner: None,
        }
        .to_string();
        assert!(line.starts_with("listener=[::]:7004 "), "{line}");
        assert!(line.contains(" client=127.0.0.2:51234 "), "{line}");
    }

    #[test]
    fn log_line_ipv6() {
        let mut e = v4_event();
        e.family = AF_INET6;
        e.saddr = Ipv6Addr::LOCALHOST.octets();
        e.daddr = Ipv6Addr::LOCALHOST.octets();
        assert!(LogLine {
            event: &e,
            owner: None
        }
        .to_string()
        .contains(" client=[::1]:51234 "));
    }

    #[test]
    fn unknown_reason_is_labelled_unknown() {
        assert_eq!(reason_label(0), "unknown");
        assert_eq!(reason_label(999), "unknown");
    }
}
