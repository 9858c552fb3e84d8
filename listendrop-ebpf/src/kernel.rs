//! Reads of kernel objects (`struct sock`, `struct request_sock`, `struct sk_buff`,
//! `struct net`, per-CPU MIB counters) at offsets taken from the running kernel's BTF.
//!
//! Two ways to read, chosen per program by the [`Read`] type parameter:
//! - [`Probed`]: `bpf_probe_read_kernel` (5.5+), for untyped pointers (kprobe registers,
//!   raw tracepoint arguments, classic tracepoint records, per-CPU memory, and packet
//!   memory before 6.17); it fails cleanly on any address.
//! - [`Typed`]: a plain load, for pointers the verifier knows the BTF type of (tp_btf and
//!   fentry arguments, and pointers loaded through them). The offset is in the load
//!   instruction itself: the program loads at a marker ([`FieldMark`]) that the daemon
//!   replaces with the field's offset before load (`probes::fields`); the verifier checks
//!   each load against the type (5.5+). One instruction instead of a helper call. Only
//!   fields inside the pointed-to struct can be read this way (`struct sock`'s own, not
//!   `inet_connection_sock`'s), and packet bytes through `sk_buff.head` on 6.17+
//!   ([`Read::packet`]).

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use listendrop_common::{Addr, FieldMark, ListenerKey, AF_INET, AF_INET6};

use crate::config::{idx, off};

/// A way to read kernel memory.
pub(crate) trait Read {
    /// Reads a `T` at `base + offset`.
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32>;

    /// Reads a `T` of packet memory at `base + offset`, `base` loaded through this
    /// reader from `sk_buff.head`.
    fn packet<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        read(base, offset)
    }

    /// Reads a `T` at field `F` of [`listendrop_common::KernelOffsets`] (`+ D` bytes) of
    /// the object at `base` (see [`field!`]).
    #[inline(always)]
    fn field<T: Copy, const F: usize, const D: usize>(base: *const u8) -> Result<T, i32> {
        Self::at(base, crate::config::offset(F) + D)
    }
}

/// Reads field `$field` of the kernel object at `$base` (`+ $delta` bytes) with reader
/// `$R`: the offset from `OFFSETS`, or for [`Typed`] in the load instruction itself.
macro_rules! field {
    ($R:ty, $base:expr, $field:ident) => {
        $crate::kernel::field!($R, $base, $field, 0)
    };
    ($R:ty, $base:expr, $field:ident, $delta:expr) => {
        <$R as $crate::kernel::Read>::field::<_, { $crate::config::idx!($field) }, { $delta }>(
            $base,
        )
    };
}
pub(crate) use field;

/// Reads through `bpf_probe_read_kernel`.
pub(crate) enum Probed {}

impl Read for Probed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: bpf_probe_read_kernel copies into a local and fails cleanly on any
        // address.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }
    }
}

/// Reads with a plain load through a BTF-typed pointer.
pub(crate) enum Typed {}

impl Read for Typed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // SAFETY: only called on pointers the verifier knows the BTF type of, at offsets
        // of that type's fields resolved from the running kernel's BTF; the verifier
        // checks each load against the type and makes a faulting one read zero
        // (PROBE_MEM, 5.5+). NULL is tested by the callers first.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset).cast::<T>()) })
    }

    #[inline(always)]
    fn field<T: Copy, const F: usize, const D: usize>(base: *const u8) -> Result<T, i32> {
        let mark = const { FieldMark { field: F, delta: D }.offset() } as usize;
        // SAFETY: as in `at`: the daemon replaces the marker in this load's offset with
        // the field's offset on the running kernel before the program is loaded
        // (`probes::fields`; an offset a load cannot hold becomes -1, which the verifier
        // refuses), and refuses an object where the compiler added a marker to an
        // address instead of loading at it.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(mark).cast::<T>()) })
    }

    #[inline(always)]
    fn packet<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
        // A known constant to the verifier: it checks only the branch taken.
        if off!(packet_loads) == 0 {
            return read(base, offset);
        }
        // SAFETY: `base` is `sk_buff.head` loaded through a BTF-typed `sk_buff`, which
        // kernels with `packet_loads` (6.17+) type as read-only untrusted memory: the
        // verifier lets the program load from it at any offset and makes a faulting load
        // read zero (PROBE_MEM). The headers lie within the buffer, which the skb being
        // freed still holds.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset).cast::<T>()) })
    }
}

/// Reads a `T` at `base + offset` with `bpf_probe_read_kernel`.
#[inline(always)]
pub(crate) fn read<T: Copy>(base: *const u8, offset: usize) -> Result<T, i32> {
    Probed::at(base, offset)
}

/// The socket's network namespace (`sock_net(sk)`).
#[inline(always)]
pub(crate) fn net_of<R: Read>(sk: *const u8) -> Result<*const u8, i32> {
    // possible_net_t is a struct holding one `struct net *` (&init_net without NET_NS).
    field!(R, sk, sk_net)
}

/// An IPv6 address at field `F` of `base`, read as its four words.
#[inline(always)]
fn addr16<R: Read, const F: usize>(base: *const u8) -> Result<Addr, i32> {
    Ok(Addr([
        R::field::<_, F, 0>(base)?,
        R::field::<_, F, 4>(base)?,
        R::field::<_, F, 8>(base)?,
        R::field::<_, F, 12>(base)?,
    ]))
}

/// The IPv6 address in `words[at..at + 4]`.
#[inline(always)]
fn words16(words: &[u32], at: usize) -> Addr {
    Addr([words[at], words[at + 1], words[at + 2], words[at + 3]])
}

/// The key of the listening socket `sk` (reason 0) and its network namespace: the reads
/// every counted event needs.
#[inline(always)]
pub(crate) fn read_listener<R: Read>(sk: *const u8) -> Result<(ListenerKey, *const u8), i32> {
    let family: u16 = field!(R, sk, sk_family)?;
    let port: u16 = field!(R, sk, sk_num)?;
    let addr = if family == AF_INET6 {
        addr16::<R, { idx!(sk_v6_rcv_saddr) }>(sk)?
    } else {
        Addr::v4(field!(R, sk, sk_rcv_saddr)?)
    };
    let net = net_of::<R>(sk)?;
    let key = ListenerKey {
        addr,
        netns: field!(R, net, net_ns_inum)?,
        port,
        // AF_INET or AF_INET6 for a TCP listener: a byte.
        family: family as u8,
        reason: 0,
    };
    Ok((key, net))
}

/// The listener's accept queue: (length, limit).
#[inline(always)]
pub(crate) fn accept_queue<R: Read>(sk: *const u8) -> Result<(u32, u32), i32> {
    Ok((
        field!(R, sk, sk_ack_backlog)?,
        field!(R, sk, sk_max_ack_backlog)?,
    ))
}

/// The listener's queues and cookie, as an event shows them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Queues {
    pub accept_len: u32,
    pub accept_max: u32,
    pub syn_len: u32,
    pub cookie: u64,
}

/// Reads the queues and the cookie of listener `sk`: only for events handed to the daemon.
/// The SYN queue lies past `struct sock` (in `inet_connection_sock`): always read through
/// the helper.
#[inline(always)]
pub(crate) fn read_queues<R: Read>(sk: *const u8) -> Result<Queues, i32> {
    let (accept_len, accept_max) = accept_queue::<R>(sk)?;
    Ok(Queues {
        accept_len,
        accept_max,
        syn_len: read(sk, off!(icsk_syn_qlen))?,
        cookie: field!(R, sk, sk_cookie)?,
    })
}

/// `TCP_LISTEN` in `enum tcp_state` (all kernels; part of the UAPI numbering).
pub(crate) const TCP_LISTEN: u8 = 10;

/// Whether `sk` is in TCP_LISTEN (a Fast Open SYN-ACK retransmit carries the child).
#[inline(always)]
pub(crate) fn is_listener<R: Read>(sk: *const u8) -> bool {
    field!(R, sk, sk_state).is_ok_and(|s: u8| s == TCP_LISTEN)
}

/// A packet's 4-tuple: client and server address (network order, IPv4 in the first 4
/// bytes) and port (host order), and its family. 4-aligned, so that it is copied and
/// compared by words.
#[derive(Clone, Copy)]
#[repr(C, align(4))]
pub(crate) struct Tuple {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
}

/// The 4-tuple of `skb` from its IP and TCP headers; client = source.
///
/// `head + network_header` / `head + transport_header` stay valid after the TCP receive
/// path has pulled the headers (all kernels). The headers themselves are packet memory,
/// read with [`Read::packet`]: plain loads on tp_btf where the kernel allows them (6.17+),
/// else the helper: one read when the TCP header follows a header without options or
/// extension headers (nearly always), two otherwise.
#[inline(always)]
pub(crate) fn read_tuple<R: Read>(skb: *const u8) -> Result<Tuple, i32> {
    /// `ETH_P_IP` and `ETH_P_IPV6` as `skb->protocol` holds them (network order).
    const IPV4: u16 = 0x0800_u16.to_be();
    const IPV6: u16 = 0x86dd_u16.to_be();
    let head: *const u8 = field!(R, skb, skb_head)?;
    let network: u16 = field!(R, skb, skb_network_header)?;
    let transport: u16 = field!(R, skb, skb_transport_header)?;
    let protocol: u16 = field!(R, skb, skb_protocol)?;
    let ip = head.wrapping_add(network as usize);
    let tcp = head.wrapping_add(transport as usize);
    let options = transport.wrapping_sub(network);
    // Read as words: addresses in network order, the ports as they lie on the wire.
    let (saddr, daddr, ports, family) = match protocol {
        IPV4 if options == 20 => {
            // Addresses at 12..20, ports right after the header.
            let h: [u32; 3] = R::packet(ip, 12)?;
            (Addr::v4(h[0]), Addr::v4(h[1]), h[2], AF_INET)
        }
        IPV4 => {
            let a: [u32; 2] = R::packet(ip, 12)?;
            (Addr::v4(a[0]), Addr::v4(a[1]), R::packet(tcp, 0)?, AF_INET)
        }
        IPV6 if options == 40 => {
            // Addresses at 8..40, ports right after the header.
            let h: [u32; 9] = R::packet(ip, 8)?;
            (words16(&h, 0), words16(&h, 4), h[8], AF_INET6)
        }
        IPV6 => {
            let a: [u32; 8] = R::packet(ip, 8)?;
            (words16(&a, 0), words16(&a, 4), R::packet(tcp, 0)?, AF_INET6)
        }
        _ => return Err(-1),
    };
    let ports = ports.to_ne_bytes();
    Ok(Tuple {
        saddr,
        daddr,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        family,
    })
}

/// The 4-tuple of a request socket (`struct request_sock`, whose
/// `__req_common` is a `struct sock_common` at offset 0 like `struct sock`'s, so the
/// `sk_*` offsets apply; the daemon checks that). Client = remote end.
#[inline(always)]
pub(crate) fn read_request_tuple<R: Read>(req: *const u8) -> Result<Tuple, i32> {
    let family: u16 = field!(R, req, sk_family)?;
    let (saddr, daddr, family) = if family == AF_INET6 {
        (
            addr16::<R, { idx!(sk_v6_daddr) }>(req)?,
            addr16::<R, { idx!(sk_v6_rcv_saddr) }>(req)?,
            AF_INET6,
        )
    } else {
        (
            Addr::v4(field!(R, req, sk_daddr)?),
            Addr::v4(field!(R, req, sk_rcv_saddr)?),
            AF_INET,
        )
    };
    let dport: u16 = field!(R, req, sk_dport)?;
    Ok(Tuple {
        saddr,
        daddr,
        sport: u16::from_be(dport),
        dport: field!(R, req, sk_num)?,
        family,
    })
}

/// A per-namespace sysctl, field `F` of `net`, stored as `int` (5.x) or `u8` (6.0+):
/// `size` says which.
#[inline(always)]
pub(crate) fn read_sysctl<R: Read, const F: usize>(
    net: *const u8,
    size: usize,
) -> Result<u32, i32> {
    if size == 1 {
        Ok(u32::from(R::field::<u8, F, 0>(net)?))
    } else {
        R::field::<u32, F, 0>(net)
    }
}

/// Whether the namespace `net` answers ACK-time overflows with a reset.
#[inline(always)]
pub(crate) fn abort_on_overflow<R: Read>(net: *const u8) -> bool {
    read_sysctl::<R, { idx!(net_abort_on_overflow) }>(net, off!(net_abort_on_overflow_size))
        .is_ok_and(|v| v != 0)
}

/// The namespace's TCP MIB counters listendrop classifies with, on this CPU.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Mib {
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub reqq_full_drop: u64,
    pub syncookies_sent: u64,
}

/// Per CPU: slot [`CPU_OFFSET`] caches the CPU's per-CPU offset (0: not yet known), slot
/// [`LAUNDER`] is scratch space. The element address a lookup returns is this CPU's copy:
/// with the map's own per-CPU pointer of that element, it gives the offset.
#[map]
static PERCPU: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Slot of [`PERCPU`] caching the offset.
const CPU_OFFSET: u32 = 0;
/// Slot of [`PERCPU`] used to turn the map's address into a number.
const LAUNDER: u32 = 1;

/// This CPU's per-CPU offset: what turns a per-CPU pointer (`alloc_percpu`, `__percpu`)
/// into the address of this CPU's copy, as the kernel's `this_cpu_ptr` does.
///
/// Found without `__per_cpu_offset` (a data symbol in `/proc/kallsyms` only with
/// CONFIG_KALLSYMS_ALL=y, which Debian's arm64 5.10 and 6.1 kernels lack, and readable only
/// with CAP_SYSLOG): a lookup in a per-CPU array returns this CPU's copy of the element
/// (`this_cpu_ptr(array->pptrs[0])`), and the map itself holds `pptrs[0]`. Their difference
/// is the offset, computed once per CPU (offsets are fixed at boot). Reading the map's
/// memory needs its address as a number: stored into and loaded back from a map value,
/// which the verifier allows a program loaded with CAP_PERFMON or CAP_SYS_ADMIN (pointer
/// leaks are allowed to them, 5.8+; root before).
#[inline(always)]
fn cpu_offset() -> Result<u64, i32> {
    let cached = PERCPU.get_ptr_mut(CPU_OFFSET).ok_or(-1)?;
    // SAFETY: a valid pointer to this CPU's element, for this program's run only.
    let known = unsafe { core::ptr::read_volatile(cached) };
    if known != 0 {
        return Ok(known);
    }
    let scratch = PERCPU.get_ptr_mut(LAUNDER).ok_or(-1)?;
    // Both addresses as plain numbers: the verifier refuses arithmetic on a map value
    // pointer with an unknown number (checked on 5.10, 6.1 and 6.18).
    let launder = |address: u64| {
        // SAFETY: as above; the volatile store and load keep the compiler from folding
        // the round trip away (the verifier then sees a number, not a pointer).
        unsafe {
            core::ptr::write_volatile(scratch, address);
            core::ptr::read_volatile(scratch)
        }
    };
    let map = launder((&raw const PERCPU) as u64);
    let here = launder(cached as u64);
    let percpu: u64 = read(map as *const u8, off!(bpf_array_pptrs))?;
    let offset = here.wrapping_sub(percpu);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(cached, offset) };
    Ok(offset)
}

/// Reads this CPU's copy of `net->mib.net_statistics` (the per-CPU counters behind
/// `nstat`'s TcpExt lines). Within one softirq call on one CPU nothing else moves them,
/// so the difference across a call is exactly what that call counted.
#[inline(always)]
pub(crate) fn read_mib(net: *const u8) -> Result<Mib, i32> {
    if off!(bpf_array_pptrs) == 0 {
        return Err(-1);
    }
    let cpu_offset = cpu_offset()?;
    let percpu: u64 = read(net, off!(net_mib))?;
    let mibs = percpu.wrapping_add(cpu_offset) as *const u8;
    Ok(Mib {
        listen_overflows: read(mibs, off!(mib_listen_overflows) * 8)?,
        listen_drops: read(mibs, off!(mib_listen_drops) * 8)?,
        reqq_full_drop: read(mibs, off!(mib_reqq_full_drop) * 8)?,
        syncookies_sent: read(mibs, off!(mib_syncookies_sent) * 8)?,
    })
}
