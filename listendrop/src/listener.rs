//! The one identity of a listening socket as a user names it: its network namespace, its
//! address (whose family is the listener's) and its port. The kernel side's keys, the
//! inventory's sock_diag records, the metrics, `status`, `trace` and the log all use
//! [`ListenerId`]; label strings are made only where the exposition is written.
//!
//! Members of one SO_REUSEPORT group share an identity: each is its own socket with its own
//! accept queue (told apart by socket cookie), but users see one listener.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use listendrop_common::{Addr, ListenerKey, AF_INET6};

/// A network namespace, by the inode number of its nsfs file: what `ls -iL
/// /proc/PID/ns/net` and `stat -L /run/netns/NAME` print, and the `netns` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Netns(pub u32);

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// IPv4 or IPv6, as the `family` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// AF_INET.
    Ipv4,
    /// AF_INET6 (dual-stack sockets included).
    Ipv6,
}

impl Family {
    /// `ipv4` or `ipv6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    /// The family of an address.
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One listener: namespace, bound address (`0.0.0.0`/`::` for wildcards; an IPv6
/// socket's address is always IPv6, so the address also says the family) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId {
    /// Its network namespace.
    pub netns: Netns,
    /// Bound address.
    pub addr: IpAddr,
    /// Bound port.
    pub port: u16,
}

impl ListenerId {
    /// The listener's family (its address's).
    pub const fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Address and port, e.g. `127.0.0.1:80` or `[::]:80`.
    pub const fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The kernel side's key of this listener (the reason left 0 for the caller).
    pub fn key(&self) -> ListenerKey {
        let mut key = ListenerKey::ZERO;
        key.netns = self.netns.0;
        key.port = self.port;
        match self.addr {
            IpAddr::V4(v4) => {
                key.family = listendrop_common::AF_INET as u8;
                key.addr = Addr::from_v4_octets(v4.octets());
            }
            IpAddr::V6(v6) => {
                key.family = AF_INET6 as u8;
                key.addr = Addr::from_octets(v6.octets());
            }
        }
        key
    }
}

impl From<&ListenerKey> for ListenerId {
    /// The listener of a kernel-side key (its reason is not part of the identity).
    fn from(key: &ListenerKey) -> Self {
        Self {
            netns: Netns(key.netns),
            addr: ip(key.family(), &key.addr),
            port: key.port,
        }
    }
}

impl fmt::Display for ListenerId {
    /// `ADDR:PORT in netns N`, as the log says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (netns {})", self.socket_addr(), self.netns)
    }
}

/// An address as the kernel side stores it: IPv4 in the first four bytes (family
/// `AF_INET`), or 16 bytes of IPv6.
pub fn ip(family: u16, addr: &Addr) -> IpAddr {
    let bytes = addr.octets();
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use listendrop_common::AF_INET;

    use super::*;

    #[test]
    fn kernel_keys_round_trip() {
        for addr in ["127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:10.0.0.1"] {
            let id = ListenerId {
                netns: Netns(4026531840),
                addr: addr.parse().unwrap(),
                port: 7004,
            };
            let mut key = id.key();
            key.reason = 3;
            assert_eq!(ListenerId::from(&key), id, "{addr}");
        }
        let mut key = ListenerKey::ZERO;
        key.family = AF_INET as u8;
        key.addr = Addr::from_v4_octets([10, 0, 0, 1]);
        key.port = 80;
        let id = ListenerId::from(&key);
        assert_eq!(id.family(), Family::Ipv4);
        assert_eq!(id.socket_addr().to_string(), "10.0.0.1:80");
        assert_eq!(id.to_string(), "10.0.0.1:80 (netns 0)");
    }

    #[test]
    fn an_ipv6_wildcard_is_not_an_ipv4_one() {
        let v6: ListenerId = ListenerId {
            netns: Netns(1),
            addr: "::".parse().unwrap(),
            port: 80,
        };
        let v4 = ListenerId {
            addr: "0.0.0.0".parse().unwrap(),
            ..v6
        };
        assert_ne!(v6, v4);
        assert_eq!(v6.family().as_str(), "ipv6");
        assert_eq!(v6.socket_addr().to_string(), "[::]:80");
    }
}
