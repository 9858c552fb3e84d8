//! NETLINK_SOCK_DIAG datagrams: any bytes decode or give an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = listendrop::inventory::sockdiag::parse_datagram(data, &mut out);
});
