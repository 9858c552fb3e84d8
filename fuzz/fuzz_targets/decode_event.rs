//! Ring-buffer records: any bytes decode to an event or a size error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(event) = listendrop::events::decode(data) {
        // Formatting a decoded event (addresses, reasons, flags) must not panic either.
        let _ = listendrop::events::LogLine { event: &event, owner: None }.to_string();
    }
});
