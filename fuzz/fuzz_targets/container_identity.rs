//! What names a listener's container: a cgroup path (`/proc/PID/cgroup`), an OCI
//! `config.json` (a runtime's file), conmon's command line. The first line is taken as a
//! cgroup path and a command line, the whole input as a configuration file.
#![no_main]

use listendrop::inventory::containers::{bundle, cgroup};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let first = text.lines().next().unwrap_or("");
        let _ = cgroup::parse(first);
        let _ = cgroup::parse_any(text.lines());
        let argv: Vec<String> = first.split(' ').map(str::to_owned).collect();
        let _ = bundle::ConmonArgs::parse(&argv);
    }
    if let Ok(annotations) = bundle::parse_annotations(data) {
        let _ = bundle::annotation_names(&annotations);
    }
});
