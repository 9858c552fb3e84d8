//! Hand-made TCP segments for the scenarios a normal socket cannot produce: SYNs from
//! addresses that never answer, and a syncookie ACK sent after the queue filled up.
//! Packets are built and parsed with etherparse.

use std::{
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use socket2::{Domain, Protocol, Socket, Type};

/// A raw IPv4 socket that sends whole IP packets (IPPROTO_RAW implies IP_HDRINCL).
pub fn sender() -> Socket {
    Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .unwrap()
}

/// Where a sniffer listens.
pub struct Sniffer {
    socket: Socket,
    /// Frames start with an Ethernet header (AF_PACKET) rather than the IP header.
    link_layer: bool,
}

/// A raw IPv4 socket that receives a copy of every TCP segment delivered locally.
pub fn tcp_sniffer() -> Sniffer {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Sniffer {
        socket,
        link_layer: false,
    }
}

/// An AF_PACKET socket that sees every frame of the namespace's interfaces, sent or
/// received: for segments that leave the host (a SYN-ACK to a neighbour), which a raw IP
/// socket never sees.
pub fn frame_sniffer() -> Sniffer {
    let all = (libc::ETH_P_ALL as u16).to_be();
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(all))),
    )
    .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Sniffer {
        socket,
        link_layer: true,
    }
}

fn send(raw: &Socket, packet: &[u8], dst: Ipv4Addr) {
    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0));
    raw.send_to(packet, &to.into()).unwrap();
}

/// Sends a SYN from `src` to `dst` with initial sequence number `isn`.
pub fn syn(raw: &Socket, src: SocketAddrV4, dst: SocketAddrV4, isn: u32) {
    let builder = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), isn, 64240)
        .syn();
    let mut packet = Vec::with_capacity(builder.size(0));
    builder.write(&mut packet, &[]).unwrap();
    send(raw, &packet, *dst.ip());
}

/// Sends the final ACK of a handshake: `seq` = our ISN + 1, `ack` = their ISN + 1.
pub fn ack(raw: &Socket, src: SocketAddrV4, dst: SocketAddrV4, seq: u32, ack: u32) {
    let builder = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), seq, 64240)
        .ack(ack);
    let mut packet = Vec::with_capacity(builder.size(0));
    builder.write(&mut packet, &[]).unwrap();
    send(raw, &packet, *dst.ip());
}

/// Sends a segment with ACK and `payload`.
pub fn data(
    raw: &Socket,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    payload: &[u8],
) {
    let builder = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .tcp(src.port(), dst.port(), seq, 64240)
        .ack(ack);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).unwrap();
    send(raw, &packet, *dst.ip());
}

/// Waits for the SYN-ACK from `server` to `client` and returns its sequence number (the
/// server's ISN: the syncookie when cookies are on).
pub fn await_synack(sniffer: &Sniffer, server: SocketAddrV4, client: SocketAddrV4) -> u32 {
    await_synack_numbers(sniffer, server, client).0
}

/// Waits for the SYN-ACK from `server` to `client`: (server ISN, client ISN).
pub fn await_synack_numbers(
    sniffer: &Sniffer,
    server: SocketAddrV4,
    client: SocketAddrV4,
) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < deadline {
        let Ok(n) = sniffer.socket.recv(&mut buf) else {
            continue;
        };
        // SAFETY: recv initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let parsed = if sniffer.link_layer {
            SlicedPacket::from_ethernet(&bytes)
        } else {
            SlicedPacket::from_ip(&bytes)
        };
        let Ok(packet) = parsed else {
            continue;
        };
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
            continue;
        };
        if tcp.syn()
            && tcp.ack()
            && tcp.source_port() == server.port()
            && tcp.destination_port() == client.port()
        {
            return (
                tcp.sequence_number(),
                tcp.acknowledgment_number().wrapping_sub(1),
            );
        }
    }
    panic!("no SYN-ACK from {server} to {client} within 10 s");
}
