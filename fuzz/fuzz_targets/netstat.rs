//! `/proc/PID/net/netstat` as the kernel might print it (or not).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = listendrop::inventory::counters::parse_netstat(text);
        let _ = listendrop::inventory::counters::from_netstat(text);
    }
});
