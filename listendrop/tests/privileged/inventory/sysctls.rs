//! Against the real system (root): non-default values set with `ip netns exec NS sysctl
//! -w` and read back with `ip netns exec NS cat`.

use crate::support::{netns::Netns, require_root, tools::ns_cat};
use listendrop::inventory::namespaces::run_in;
use listendrop::inventory::sysctls::*;
use std::path::Path;

#[test]
fn read_inside_a_namespace_sees_its_values() {
    if !require_root("read_inside_a_namespace_sees_its_values") {
        return;
    }
    let ns = Netns::new("inv-sysctl");
    let wanted = ["1234", "333", "1", "0", "2"];
    for (key, value) in KEYS.iter().zip(wanted) {
        ns.sysctl(key, value);
    }
    let path = format!("/run/netns/{}", ns.name);
    let ours = run_in(Path::new(&path), ns.inode as u32, read).unwrap();
    let truth = |key: &str| -> u32 {
        ns_cat(&ns, &path_of(Path::new(PROC_SYS), key).to_string_lossy())
            .parse()
            .unwrap()
    };
    assert_eq!(
        ours,
        Sysctls {
            somaxconn: truth(KEYS[0]),
            tcp_max_syn_backlog: truth(KEYS[1]),
            tcp_abort_on_overflow: truth(KEYS[2]),
            tcp_syncookies: truth(KEYS[3]),
            tcp_synack_retries: truth(KEYS[4]),
        }
    );
    assert_eq!(ours.somaxconn, 1234, "the value set in the namespace");
    assert_eq!(ours.tcp_syncookies, 0);
    let host = read().unwrap();
    assert_ne!(host.somaxconn, 1234, "the caller's namespace is untouched");
}
