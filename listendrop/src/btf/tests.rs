//! Checked against the running kernel's BTF, with `bpftool btf dump` as the independent
//! reader where it is installed (`cargo xtask test` installs it).
use std::process::Command;

use super::*;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn kernel() -> Option<KernelBtf> {
    if !Path::new(VMLINUX).exists() {
        crate::util::skip_test(&format!("this kernel has no BTF at {VMLINUX}"));
        return None;
    }
    Some(KernelBtf::open(Path::new(VMLINUX)).expect("parse vmlinux BTF"))
}

/// `bpftool btf dump file vmlinux format raw`, run once for every cross-check; `None`
/// (the test skips, or fails under `cargo xtask test`) only when bpftool cannot run.
fn bpftool_raw() -> Option<&'static str> {
    static DUMP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let dump = DUMP.get_or_init(|| {
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        String::from_utf8(out.stdout).ok()
    });
    if dump.is_none() {
        if std::env::var_os("LISTENDROP_REQUIRE_PRIVILEGED").is_some() {
            panic!("bpftool is needed for this check (cargo xtask test installs it)");
        }
        println!("skipped: bpftool cannot run here");
    }
    dump.as_deref()
}

/// `bits_offset` of a top-level member in bpftool's dump.
fn bpftool_bits_offset(dump: &str, strukt: &str, member: &str) -> Option<u32> {
    let header = format!("STRUCT '{strukt}' ");
    let mut inside = false;
    for line in dump.lines() {
        if line.starts_with('[') {
            inside = line.contains(&header);
            continue;
        }
        if inside && line.trim_start().starts_with(&format!("'{member}' ")) {
            let bits = line.split("bits_offset=").nth(1)?;
            return bits.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

#[test]
fn top_level_members_match_bpftool() {
    let Some(btf) = kernel() else { return };
    let Some(dump) = bpftool_raw() else { return };
    for (strukt, member) in [
        ("sock", "sk_ack_backlog"),
        ("sock", "sk_max_ack_backlog"),
        ("sk_buff", "head"),
    ] {
        let ours = btf.member(strukt, member).expect(member);
        let bits = bpftool_bits_offset(dump, strukt, member)
            .unwrap_or_else(|| panic!("bpftool's dump has no {strukt}.{member}"));
        assert_eq!(ours.offset * 8, bits, "{strukt}.{member}");
    }
}

#[test]
fn nested_and_anonymous_members_resolve() {
    let Some(btf) = kernel() else { return };
    // skc_num sits in an anonymous struct inside an anonymous union of sock_common.
    let common = btf.member("sock", "__sk_common").unwrap();
    let num = btf.member("sock_common", "skc_num").unwrap();
    assert_eq!(
        btf.member("sock", "__sk_common.skc_num").unwrap().offset,
        common.offset + num.offset
    );
    assert_eq!(num.size, 2);
    // network_header sits in a struct_group (anonymous) of sk_buff since 5.x.
    assert_eq!(btf.member("sk_buff", "network_header").unwrap().size, 2);
    assert_eq!(btf.member("net", "ns.inum").unwrap().size, 4);
    assert!(matches!(
        btf.member("sock", "no_such_member"),
        Err(BtfError::NoMember { .. })
    ));
    assert!(matches!(
        btf.member_sized("sock", "sk_ack_backlog", 8),
        Err(BtfError::Layout { .. })
    ));
}

#[test]
fn drop_reason_matches_tracepoint_print_format() {
    let Some(btf) = kernel() else { return };
    let Ok(value) = btf.enum_value("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW") else {
        println!("skipped: this kernel predates SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (6.15)");
        return;
    };
    // The tracepoint's print format maps numbers to names independently of BTF.
    let Some(format) =
        crate::tracefs::Tracefs::find().and_then(|t| t.read_format("skb", "kfree_skb").ok())
    else {
        crate::util::skip_test("tracefs is not mounted");
        return;
    };
    assert!(
        format.contains(&format!("{{ {value}, \"TCP_LISTEN_OVERFLOW\" }}")),
        "BTF says {value}"
    );
}

#[test]
fn anonymous_enumerators_and_prototypes() {
    let Some(btf) = kernel() else { return };
    // LINUX_MIB_* is an anonymous enum; SyncookiesSent is the first counter after NUM.
    assert_eq!(btf.enumerator("LINUX_MIB_SYNCOOKIESSENT").unwrap(), 1);
    let overflows = btf.enumerator("LINUX_MIB_LISTENOVERFLOWS").unwrap();
    assert_eq!(
        btf.enumerator("LINUX_MIB_LISTENDROPS").unwrap(),
        overflows + 1
    );
    // tcp_conn_request(rsk_ops, af_ops, sk, skb) on every kernel since 4.x.
    assert_eq!(btf.function_params("tcp_conn_request"), Some(4));
    let v4 = btf.function_params("tcp_v4_syn_recv_sock").unwrap();
    assert!((6..=7).contains(&v4), "{v4}");
    assert_eq!(btf.function_params("no_such_function_listendrop"), None);
    // btf_trace_kfree_skb: the context, skb, location, reason (5.17+), rx_sk (6.11+).
    let kfree = btf.typedef_params("btf_trace_kfree_skb").unwrap();
    assert!((4..=5).contains(&kfree), "{kfree}");
    assert_eq!(
        btf.typedef_params("btf_trace_tcp_retransmit_synack"),
        Some(3)
    );
}

#[test]
fn packet_loads_follow_bpftools_bpf_features() {
    let Some(btf) = kernel() else { return };
    let Some(dump) = bpftool_raw() else { return };
    let listed = dump.contains("'BPF_FEAT_RDONLY_CAST_TO_VOID' val=");
    assert_eq!(crate::layout::packet_loads(&btf), listed);
    // Checked on 6.18 (this host and the matrix's newest); the matrix's older kernels
    // have neither.
    if crate::layout::kernel_version() >= (6, 18) {
        assert!(listed, "a 6.18+ kernel without enum bpf_features");
    }
}

/// The id bpftool's dump gives `KIND 'name'` (`[id] KIND 'name' ...`).
fn bpftool_id(dump: &str, kind: &str, name: &str) -> Option<u32> {
    let needle = format!("] {kind} '{name}' ");
    let line = dump.lines().find(|l| l.contains(&needle))?;
    line.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[test]
fn attach_ids_match_bpftool() {
    let Some(btf) = kernel() else { return };
    let Some(dump) = bpftool_raw() else { return };
    let checks = [
        ("FUNC", "tcp_conn_request", btf.func_id("tcp_conn_request")),
        (
            "TYPEDEF",
            "btf_trace_kfree_skb",
            btf.typedef_id("btf_trace_kfree_skb"),
        ),
    ];
    for (kind, name, ours) in checks {
        let ours = ours.unwrap_or_else(|| panic!("no {kind} {name}"));
        let id = bpftool_id(dump, kind, name)
            .unwrap_or_else(|| panic!("bpftool's dump has no {kind} {name}"));
        assert_eq!(ours, id, "{kind} {name}");
    }
    // A name of the other kind is not taken for the one asked.
    assert_eq!(btf.func_id("btf_trace_kfree_skb"), None);
    assert_eq!(btf.typedef_id("tcp_conn_request"), None);
}

#[test]
fn missing_file_names_the_fix() {
    let err = KernelBtf::open(Path::new("/nonexistent/vmlinux"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    assert!(err.to_string().contains("--btf"), "{err}");
}
