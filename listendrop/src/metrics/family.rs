//! Metric families built from values read just now (node_exporter's const metrics): a
//! family is made, filled and encoded at each render; nothing is kept between renders, so
//! nothing can drift, double-add or go backwards, and a series exists exactly while its
//! source does.

use prometheus::{
    core::Desc,
    proto::{self, LabelPair, Metric, MetricFamily, MetricType},
    Encoder as _, TextEncoder,
};

use super::names::Spec;

/// One family being filled.
pub struct Family {
    spec: &'static Spec,
    inner: MetricFamily,
}

impl Family {
    /// An empty family of `spec`.
    pub fn new(spec: &'static Spec) -> Self {
        let mut inner = MetricFamily::default();
        inner.set_name(spec.name.to_owned());
        inner.set_help(spec.help.to_owned());
        inner.set_field_type(spec.kind);
        Self { spec, inner }
    }

    /// Adds one series: `values` in the order of the spec's label names.
    pub fn add<S: AsRef<str>>(&mut self, values: &[S], value: f64) -> &mut Self {
        debug_assert_eq!(
            values.len(),
            self.spec.labels.len(),
            "label values of {}",
            self.spec.name
        );
        let labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value(value.as_ref().to_owned());
                pair
            })
            .collect();
        let mut metric = Metric::from_label(labels);
        match self.spec.kind {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
        }
        self.inner.mut_metric().push(metric);
        self
    }

    /// Adds one series with a whole-number value.
    pub fn add_u64<S: AsRef<str>>(&mut self, values: &[S], value: u64) -> &mut Self {
        // Counters are exact up to 2^53 in the float the format carries (Prometheus'
        // own limit), far beyond any drop count.
        self.add(values, value as f64)
    }

    /// The family, with or without series (an empty one is left out of the exposition).
    pub fn finish(self) -> MetricFamily {
        self.inner
    }
}

/// The registry descriptor of `spec` (a custom collector declares what it produces).
pub fn desc(spec: &Spec) -> prometheus::Result<Desc> {
    Desc::new(
        spec.name.to_owned(),
        spec.help.to_owned(),
        spec.labels.iter().map(|l| (*l).to_owned()).collect(),
        std::collections::HashMap::new(),
    )
}

/// The text exposition of `families` (empty ones left out).
pub fn encode(families: &[MetricFamily]) -> String {
    let families: Vec<&MetricFamily> = families
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    for family in families {
        // Encoding cannot fail for a non-empty family with a valid name.
        if let Err(e) = encoder.encode(std::slice::from_ref(family), &mut out) {
            tracing::error!("encoding {} failed: {e}", family.name());
        }
    }
    String::from_utf8(out).unwrap_or_default()
}
