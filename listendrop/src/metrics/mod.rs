//! The Prometheus exposition. [`names`] is the table of families; [`kernel`] renders the
//! kernel's values at each scrape from one snapshot; [`inventory`] renders the listener
//! inventory once per pass; this module puts them together with what never changes while
//! the daemon runs (hooks, coverage, build) and the daemon's own gauges.

pub mod family;
pub mod inventory;
pub mod kernel;
pub mod names;

#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use listendrop_common::Reason;
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Registry,
};

use crate::{context::Context, filter::Filter, probes::Hook, util::lock};
use family::{desc, encode, Family};
use kernel::KernelCollector;

/// Every metric family listendrop exports.
pub struct Metrics {
    registry: Registry,
    scrape_duration: prometheus::Gauge,
    inventory_duration: prometheus::Gauge,
    /// The inventory families of the latest pass, as text.
    inventory_text: Mutex<Arc<String>>,
}

impl Metrics {
    /// Registers every family: the `kernel` collector, the attach outcome of `hooks` and
    /// the `coverage` it gives, the build, the daemon's own gauges and process metrics.
    pub fn new(
        hooks: &[Hook],
        coverage: &[(Reason, bool)],
        kernel: KernelCollector,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        registry.register(Box::new(kernel))?;
        registry.register(Box::new(Fixed::new(hooks, coverage)?))?;
        let gauge = |spec: &names::Spec| -> prometheus::Result<prometheus::Gauge> {
            let g = prometheus::Gauge::new(spec.name, spec.help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let scrape_duration = gauge(&names::SCRAPE_DURATION)?;
        let inventory_duration = gauge(&names::INVENTORY_DURATION)?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            scrape_duration,
            inventory_duration,
            inventory_text: Mutex::new(Arc::new(String::new())),
        })
    }

    /// The text exposition: the kernel's values now, the inventory as of the last pass.
    pub fn render(&self) -> String {
        let mut out = encode(&self.registry.gather());
        out.push_str(&lock(&self.inventory_text));
        out
    }

    /// Records how long a scrape took (shown by the next one).
    pub fn observe_scrape(&self, took: Duration) {
        self.scrape_duration.set(took.as_secs_f64());
    }

    /// Renders the inventory families of `ctx`'s latest pass for the scrapes until the
    /// next pass, and records how long the pass took (`took`, rendering included).
    pub fn update_inventory(&self, ctx: &Context, filter: &Filter, started: std::time::Instant) {
        let text = Arc::new(encode(&inventory::families(ctx, filter)));
        *lock(&self.inventory_text) = text;
        self.inventory_duration.set(started.elapsed().as_secs_f64());
    }
}

/// What does not change while the daemon runs: which hooks attached (and how), the
/// coverage they give, the build.
struct Fixed {
    families: Vec<MetricFamily>,
    descs: Vec<Desc>,
}

impl Fixed {
    fn new(hooks: &[Hook], coverage: &[(Reason, bool)]) -> prometheus::Result<Self> {
        let mut attached = Family::new(&names::PROBE_ATTACHED);
        for hook in hooks {
            attached.add(
                &[hook.probe(), hook.kind.as_str()],
                f64::from(u8::from(hook.status.is_ok())),
            );
        }
        let mut covered = Family::new(&names::COVERAGE);
        for (reason, yes) in coverage {
            covered.add(&[reason.as_str()], f64::from(u8::from(*yes)));
        }
        let mut build = Family::new(&names::BUILD_INFO);
        build.add(&[env!("CARGO_PKG_VERSION"), &kernel_release()], 1.0);
        let specs = [&names::PROBE_ATTACHED, &names::COVERAGE, &names::BUILD_INFO];
        Ok(Self {
            families: vec![attached.finish(), covered.finish(), build.finish()],
            descs: specs
                .iter()
                .map(|s| desc(s))
                .collect::<prometheus::Result<_>>()?,
        })
    }
}

impl Collector for Fixed {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families.clone()
    }
}

/// `uname -r` of the running kernel.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
