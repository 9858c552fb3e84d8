//! The web configuration file (exporter-toolkit YAML) and the `Authorization` header:
//! any bytes parse or give an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = listendrop::web::auth::basic_credentials(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = listendrop::web::config::parse(text, std::path::Path::new("/fuzz/web.yml"));
    }
});
