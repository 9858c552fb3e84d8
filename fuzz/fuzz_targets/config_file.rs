//! The TOML configuration file: any text parses or gives an error with a line.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = listendrop::config::parse(text);
    }
});
