//! The production deployment artifacts under `deploy/`, each checked by the real tool that
//! consumes it: systemd-analyze (unit), setpriv (the unit's capabilities, on the real
//! daemon), kubernetes-validate and jsonschema (manifests), promtool (alerts, their unit
//! tests, the daemon's /metrics), a real Prometheus server (scraping the real daemon), and
//! the real daemon (configuration example, metric names of the dashboard and alerts).
//!
//! Tests that load eBPF programs need root, as in tests/privileged; tests that need a tool
//! skip with a printed reason when it is missing. Under `LISTENDROP_REQUIRE_PRIVILEGED`
//! (`cargo xtask test`, CI) both are failures. `deploy/ci-packages.txt` lists the
//! packages.

use listendrop_testsupport as support;

mod alerts;
mod config;
mod grafana;
mod kubernetes;
mod launch;
mod names;
mod pods;
mod prometheus;
mod scenario;
mod systemd;
mod tools;
mod web;
