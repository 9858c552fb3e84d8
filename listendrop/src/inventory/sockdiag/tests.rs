//! Tests of `sockdiag`.

use std::net::Ipv6Addr;

use netlink_packet_sock_diag::inet::{nlas::MemInfo, InetResponseHeader};

use super::*;

fn listener(family: Family, addr: &str, port: u16, v6only: bool) -> ListenSocket {
    ListenSocket {
        family,
        addr: addr.parse().unwrap(),
        port,
        inode: 1,
        cookie: 1,
        accept_queue_len: 0,
        accept_queue_limit: 128,
        sk_drops: Some(0),
        v6only,
        syn_recv: 0,
        syn_recv_shared_by: 0,
    }
}

fn key(family: Family, addr: &str, port: u16) -> RequestKey {
    RequestKey {
        family,
        addr: addr.parse().unwrap(),
        port,
    }
}

fn response(family: u8, state: u8, src: IpAddr, port: u16, nlas: Vec<Nla>) -> InetResponse {
    let mut socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    socket_id.source_address = src;
    socket_id.source_port = port;
    socket_id.cookie = [0x78, 0x56, 0x34, 0x12, 0x02, 0, 0, 0];
    InetResponse {
        header: InetResponseHeader {
            family,
            state,
            timer: None,
            socket_id,
            recv_queue: 3,
            send_queue: 5,
            uid: 0,
            inode: 4242,
        },
        nlas: nlas.into(),
    }
}

#[test]
fn cookie_is_high_word_then_low_word() {
    let raw = [0x78, 0x56, 0x34, 0x12, 0x02, 0, 0, 0];
    if cfg!(target_endian = "little") {
        assert_eq!(cookie(&raw), 0x2_1234_5678);
    }
    assert_eq!(cookie(&[0; 8]), 0);
}

#[test]
fn classify_reads_queues_drops_and_v6only() {
    let mem = MemInfo {
        receive_queue: 0,
        receive_queue_max: 0,
        send_queue: 0,
        send_queue_max: 0,
        bottom_send_queues: 0,
        cache: 0,
        options: 0,
        backlog_queue_length: 0,
        drops: 17,
    };
    let r = response(
        AF_INET6,
        TCP_LISTEN,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        8080,
        vec![Nla::MemInfo(mem), Nla::SkV6Only(true)],
    );
    let Some(Entry::Listener(l)) = classify(&r) else {
        panic!("not a listener")
    };
    assert_eq!(l.family, Family::Ipv6);
    assert_eq!(l.port, 8080);
    assert_eq!((l.accept_queue_len, l.accept_queue_limit), (3, 5));
    assert_eq!(l.sk_drops, Some(17));
    assert!(l.v6only);
    assert_eq!(l.inode, 4242);

    let r = response(AF_INET, TCP_LISTEN, "10.0.0.1".parse().unwrap(), 80, vec![]);
    let Some(Entry::Listener(l)) = classify(&r) else {
        panic!("not a listener")
    };
    assert_eq!(l.sk_drops, None, "no SKMEMINFO, no drops");

    let r = response(
        AF_INET,
        TCP_SYN_RECV,
        "10.0.0.1".parse().unwrap(),
        80,
        vec![],
    );
    assert_eq!(
        classify(&r),
        Some(Entry::Request(key(Family::Ipv4, "10.0.0.1", 80)))
    );
    let r = response(AF_INET, 1, "10.0.0.1".parse().unwrap(), 80, vec![]);
    assert_eq!(classify(&r), None, "established sockets are ignored");
}

#[test]
fn parse_datagram_reads_several_messages_and_done() {
    let mut bytes = Vec::new();
    for port in [1, 2] {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(Box::new(response(
                AF_INET,
                TCP_LISTEN,
                "127.0.0.1".parse().unwrap(),
                port,
                vec![],
            )))),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        bytes.extend_from_slice(&buf);
    }
    let mut out = Vec::new();
    assert!(!parse_datagram(&bytes, &mut out).unwrap(), "no DONE yet");
    let ports: Vec<u16> = out.iter().map(|r| r.header.socket_id.source_port).collect();
    assert_eq!(ports, [1, 2]);

    let mut done = NetlinkMessage::<SockDiagMessage>::new(
        NetlinkHeader::default(),
        NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
    );
    done.finalize();
    let mut buf = vec![0; done.buffer_len()];
    done.serialize(&mut buf);
    assert!(parse_datagram(&buf, &mut out).unwrap());
}

#[test]
fn exact_address_beats_wildcard() {
    let mut ls = vec![
        listener(Family::Ipv4, "0.0.0.0", 80, false),
        listener(Family::Ipv4, "10.0.0.1", 80, false),
    ];
    let reqs = BTreeMap::from([
        (key(Family::Ipv4, "10.0.0.1", 80), 3),
        (key(Family::Ipv4, "10.0.0.2", 80), 2),
        (key(Family::Ipv4, "10.0.0.2", 81), 7),
    ]);
    assert_eq!(attribute(&mut ls, &reqs), 7, "nobody listens on :81");
    assert_eq!(ls[0].syn_recv, 2, "wildcard gets other addresses");
    assert_eq!(ls[1].syn_recv, 3);
    assert_eq!((ls[0].syn_recv_shared_by, ls[1].syn_recv_shared_by), (1, 1));
}

#[test]
fn dual_stack_listener_takes_ipv4_requests_unless_v6only() {
    let reqs = BTreeMap::from([
        (key(Family::Ipv4, "127.0.0.1", 80), 1),
        (key(Family::Ipv6, "::ffff:127.0.0.1", 80), 2),
        (key(Family::Ipv6, "::1", 80), 4),
    ]);
    let mut ls = vec![listener(Family::Ipv6, "::", 80, false)];
    assert_eq!(attribute(&mut ls, &reqs), 0);
    assert_eq!(ls[0].syn_recv, 7);

    let mut ls = vec![listener(Family::Ipv6, "::", 80, true)];
    assert_eq!(attribute(&mut ls, &reqs), 3);
    assert_eq!(ls[0].syn_recv, 4);

    let mut ls = vec![
        listener(Family::Ipv6, "::ffff:127.0.0.1", 80, false),
        listener(Family::Ipv6, "::", 80, false),
    ];
    attribute(&mut ls, &reqs);
    assert_eq!((ls[0].syn_recv, ls[1].syn_recv), (3, 4));
}

#[test]
fn ipv4_listener_ignores_ipv6_requests() {
    let mut ls = vec![listener(Family::Ipv4, "0.0.0.0", 80, false)];
    let reqs = BTreeMap::from([(key(Family::Ipv6, "::1", 80), 1)]);
    assert_eq!(attribute(&mut ls, &reqs), 1);
    assert_eq!(ls[0].syn_recv, 0);
}

#[test]
fn reuseport_members_share_the_group_total() {
    let mut ls = vec![
        listener(Family::Ipv4, "0.0.0.0", 80, false),
        listener(Family::Ipv4, "0.0.0.0", 80, false),
        listener(Family::Ipv4, "0.0.0.0", 443, false),
    ];
    let reqs = BTreeMap::from([(key(Family::Ipv4, "10.0.0.1", 80), 5)]);
    attribute(&mut ls, &reqs);
    assert_eq!((ls[0].syn_recv, ls[0].syn_recv_shared_by), (5, 2));
    assert_eq!((ls[1].syn_recv, ls[1].syn_recv_shared_by), (5, 2));
    assert_eq!((ls[2].syn_recv, ls[2].syn_recv_shared_by), (0, 1));
}

/// Inputs the fuzzer found.
mod fuzz_regressions {
    /// An NLMSG_ERROR with errno i32::MIN made `ErrorMessage::to_io` overflow (found by
    /// `cargo xtask fuzz`): an error now, not a panic.
    #[test]
    fn error_code_i32_min_is_an_error() {
        let bytes = include_bytes!("../../../../fuzz/seeds/sock_diag/regression-errno-min");
        let mut out = Vec::new();
        let _ = crate::inventory::sockdiag::parse_datagram(bytes, &mut out);
    }
}
