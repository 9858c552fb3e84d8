//! Kernel layout facts the eBPF programs need, resolved by the daemon at start from the
//! running kernel's BTF and tracepoint format files, and handed over as
//! read-only globals, plus the daemon's settings for the programs.
//!
//! rustc emits no CO-RE relocations, so the programs cannot carry offsets for one kernel
//! baked in: every offset here comes from the kernel the daemon runs on.

/// Byte offsets, sizes and enum values for the running kernel. Zero means "not resolved"
/// for fields whose hook is then not attached. No implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct bpf_array`: `pptrs` (its per-CPU element pointers): with the address of
    /// this CPU's copy of an element, it gives the CPU's per-CPU offset. 0 when unknown.
    pub bpf_array_pptrs: u32,

    /// `skb:kfree_skb` record: offset of `skbaddr` (all kernels).
    pub tp_kfree_skb_skbaddr: u32,
    /// `skb:kfree_skb` record: offset of `rx_sk` (6.11+).
    pub tp_kfree_skb_rx_sk: u32,
    /// `skb:kfree_skb` record: offset of `reason` (5.17+, backported to 5.15).
    pub tp_kfree_skb_reason: u32,
    /// `enum skb_drop_reason` value of `SKB_DROP_REASON_TCP_LISTEN_OVERFLOW` (6.15+).
    pub reason_tcp_listen_overflow: u32,

    /// `tcp:tcp_retransmit_synack` record: `skaddr` (the listener).
    pub tp_synack_skaddr: u32,
    /// `tcp:tcp_retransmit_synack`: `sport` (server port, host order, u16).
    pub tp_synack_sport: u32,
    /// `tcp:tcp_retransmit_synack`: `dport` (client port, host order, u16).
    pub tp_synack_dport: u32,
    /// `tcp:tcp_retransmit_synack`: `saddr_v6` (server, 16 bytes; v4-mapped for IPv4).
    pub tp_synack_saddr_v6: u32,
    /// `tcp:tcp_retransmit_synack`: `daddr_v6` (client, 16 bytes; v4-mapped for IPv4).
    pub tp_synack_daddr_v6: u32,

    /// `struct sock`: `__sk_common.skc_family` (u16).
    pub sk_family: u32,
    /// `struct sock`: `__sk_common.skc_state` (u8).
    pub sk_state: u32,
    /// `struct sock`: `__sk_common.skc_num` (u16, host order).
    pub sk_num: u32,
    /// `struct sock`: `__sk_common.skc_rcv_saddr` (u32, network order).
    pub sk_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_daddr` (u32, network order): a request socket's
    /// client address.
    pub sk_daddr: u32,
    /// `struct sock`: `__sk_common.skc_dport` (u16, network order): a request socket's
    /// client port.
    pub sk_dport: u32,
    /// `struct sock`: `__sk_common.skc_v6_daddr` (16 bytes).
    pub sk_v6_daddr: u32,
    /// `struct sock`: `__sk_common.skc_net` (`possible_net_t`, a `struct net *`).
    pub sk_net: u32,
    /// `struct sock`: `__sk_common.skc_cookie` (u64; 0 until generated).
    pub sk_cookie: u32,
    /// `struct sock`: `sk_ack_backlog` (u32).
    pub sk_ack_backlog: u32,
    /// `struct sock`: `sk_max_ack_backlog` (u32).
    pub sk_max_ack_backlog: u32,
    /// `struct inet_connection_sock`: `icsk_accept_queue.qlen` (atomic_t): SYN queue.
    pub icsk_syn_qlen: u32,

    /// `struct net`: `ns.inum` (u32).
    pub net_ns_inum: u32,
    /// `struct net`: `mib.net_statistics` (`struct linux_mib __percpu *`).
    pub net_mib: u32,
    /// `struct net`: `ipv4.sysctl_tcp_syncookies`.
    pub net_syncookies: u32,
    /// Size in bytes of `sysctl_tcp_syncookies` (int until 6.0, u8 since).
    pub net_syncookies_size: u32,
    /// `struct net`: `ipv4.sysctl_max_syn_backlog` (int).
    pub net_max_syn_backlog: u32,
    /// `struct net`: `ipv4.sysctl_tcp_abort_on_overflow`.
    pub net_abort_on_overflow: u32,
    /// Size in bytes of `sysctl_tcp_abort_on_overflow` (int until 6.0, u8 since).
    pub net_abort_on_overflow_size: u32,

    /// Index in `linux_mib.mibs` of LINUX_MIB_LISTENOVERFLOWS.
    pub mib_listen_overflows: u32,
    /// Index of LINUX_MIB_LISTENDROPS.
    pub mib_listen_drops: u32,
    /// Index of LINUX_MIB_TCPREQQFULLDROP.
    pub mib_reqq_full_drop: u32,
    /// Index of LINUX_MIB_SYNCOOKIESSENT.
    pub mib_syncookies_sent: u32,

    /// `struct sk_buff`: `head` (pointer).
    pub skb_head: u32,
    /// `struct sk_buff`: `network_header` (u16, offset from `head`).
    pub skb_network_header: u32,
    /// `struct sk_buff`: `transport_header` (u16, offset from `head`).
    pub skb_transport_header: u32,
    /// `struct sk_buff`: `protocol` (u16, network order: ETH_P_IP or ETH_P_IPV6).
    pub skb_protocol: u32,
    /// 1 when a BTF-typed program may load packet bytes through `sk_buff.head` itself:
    /// the verifier types a loaded pointer to a primitive type (`unsigned char *head`) as
    /// read-only untrusted memory, whose loads fault to zero (6.17+, the kernels whose
    /// BTF has `enum bpf_features`). 0: the bytes are read with `bpf_probe_read_kernel`.
    pub packet_loads: u32,
}

// Only u32: no implicit padding byte (an uninitialised one would make the bytes, and the pin
// fingerprint, vary from run to run). A wider field needs explicit padding.
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == KernelOffsets::FIELDS * 4);

impl KernelOffsets {
    /// How many `u32` fields there are.
    pub const FIELDS: usize = 39;

    /// The fields in declaration order (index = `offset_of!(KernelOffsets, f) / 4`).
    pub fn words(&self) -> [u32; Self::FIELDS] {
        // SAFETY: repr(C), FIELDS u32 fields and nothing else (asserted above).
        unsafe { core::mem::transmute::<Self, [u32; Self::FIELDS]>(*self) }
    }
}

/// Field loads patched at load time (rustc emits no CO-RE relocations, which is how libbpf
/// puts a field's offset into the instruction that loads it).
///
/// A BTF-typed program loads field `i` of [`KernelOffsets`] (`+ delta` bytes) with the
/// marker [`FieldMark::offset`] as the load instruction's 16-bit offset; before the object
/// reaches the kernel, the daemon replaces every marker with that field's offset on the
/// running kernel (plus `delta`). One load with an immediate offset instead of a `.rodata`
/// load, a register move and an add per field. No instruction of ours loads at an offset
/// in the marker range otherwise: the stack is below the frame pointer, map values and
/// contexts are far smaller. Nor does any other immediate of ours fall in it: the daemon
/// refuses an object that holds a marker in arithmetic, a store or a 64-bit immediate
/// (an address computed from it would load elsewhere), and its test runs on the real
/// object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMark {
    /// Index of the field in [`KernelOffsets`].
    pub field: usize,
    /// Bytes past the field's start (a word of an address).
    pub delta: usize,
}

impl FieldMark {
    /// The first marker.
    pub const BASE: i16 = 0x4000;
    /// Markers per field: `delta` is below this.
    pub const STRIDE: usize = 32;

    /// The marker for this field and delta (a compile-time constant in the programs).
    pub const fn offset(self) -> i16 {
        assert!(self.field < KernelOffsets::FIELDS && self.delta < Self::STRIDE);
        Self::BASE + (self.field * Self::STRIDE + self.delta) as i16
    }

    /// The field and delta a load offset marks, if it is a marker.
    pub const fn of(offset: i16) -> Option<Self> {
        let end = Self::BASE as usize + KernelOffsets::FIELDS * Self::STRIDE;
        if offset < Self::BASE || offset as usize >= end {
            return None;
        }
        let n = (offset - Self::BASE) as usize;
        Some(Self {
            field: n / Self::STRIDE,
            delta: n % Self::STRIDE,
        })
    }
}

/// A value of [`KernelOffsets`] as an instruction's 32-bit immediate (the drop reason a
/// program compares with), patched like [`FieldMark`]: field `i` is marked by
/// `BASE + i`, a number no compare or move of ours uses otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueMark {
    /// Index of the field in [`KernelOffsets`].
    pub field: usize,
}

impl ValueMark {
    /// The first marker (`"LD\0\0"`).
    pub const BASE: i32 = 0x4c44_0000;

    /// The marker (a compile-time constant in the programs).
    pub const fn imm(self) -> i32 {
        assert!(self.field < KernelOffsets::FIELDS);
        Self::BASE + self.field as i32
    }

    /// The field an immediate marks, if it is a marker.
    pub const fn of(imm: i32) -> Option<Self> {
        if imm < Self::BASE || imm >= Self::BASE + KernelOffsets::FIELDS as i32 {
            return None;
        }
        Some(Self {
            field: (imm - Self::BASE) as usize,
        })
    }
}

/// What the daemon asks of the programs (command-line settings). Durations are in kernel
/// ticks (jiffies): the programs read the time with `bpf_jiffies64`, which the verifier
/// turns into one load (5.5+, 64-bit JITs), where `bpf_ktime_get_ns` is a helper call that
/// reads the clock source; only an event handed to the daemon is stamped in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// A drop of a 4-tuple more than this many ticks after its previous drop starts a new
    /// episode (counts as a new dropped handshake).
    pub episode_gap_ticks: u64,
    /// Ticks in one second: the window of the event budget.
    pub window_ticks: u64,
    /// Ticks between write-backs of a CPU's handshake slot to the LRU
    /// ([`crate::HANDSHAKE_SYNC_NS`]).
    pub sync_ticks: u64,
    /// Ticks within which a call with the same socket and packet as the call in progress
    /// is nested in it ([`NESTED_CALL_NS`], rounded up: a tick may pass within a call).
    pub nested_ticks: u64,
    /// Events per listener per second handed to the daemon; the rest are counted in
    /// `COUNTERS[Health::RateLimited]`. 0 disables events.
    pub events_per_sec: u32,
    /// Explicit padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Settings>() == 40);

/// A nested call (`tcp_v6_syn_recv_sock` calling `tcp_v4_syn_recv_sock`) begins within
/// microseconds of its outer call; one with the same socket and packet later than this is
/// a new call whose packet reuses a freed skb's address (the previous return was missed).
pub const NESTED_CALL_NS: u64 = 10_000_000;
