//! The Markdown table the run prints: one row per measure, with its target and verdict.

pub struct Report {
    rows: Vec<String>,
}

/// "met" or a marked miss.
pub fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

impl Report {
    pub fn new() -> Self {
        Self { rows: Vec::new() }
    }

    /// Adds a row (and says it on stderr at once: the run takes minutes).
    pub fn row(&mut self, what: &str, value: String, target: &str, verdict: &str) {
        eprintln!("{what}: {value} ({target}: {verdict})");
        self.rows
            .push(format!("| {what} | {value} | {target} | {verdict} |"));
    }

    /// The section for docs/benchmarks.md, on stdout.
    pub fn print(&self) {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!(
            "## {} — kernel {}\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            kernel.trim()
        );
        println!(
            "Command: `cargo xtask bench` ({} cores, root, kernel.bpf_stats_enabled=1 during \
             the run)\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("| measure | result | target | |\n|---|---|---|---|");
        for r in &self.rows {
            println!("{r}");
        }
        println!();
    }
}
