//! The families of the listener inventory (queues, members, owner, drop rate, sysctls),
//! rendered once per inventory pass from that pass's view: with 10,000 listeners they are
//! most of the exposition, and a scrape then only copies the text.

use prometheus::proto::MetricFamily;

use super::{
    family::Family,
    names::{self, listener_values},
};
use crate::{context::Context, filter::Filter, listener::Netns};

/// The inventory families of `ctx`'s latest pass, for the listeners `filter` allows.
pub fn families(ctx: &Context, filter: &Filter) -> Vec<MetricFamily> {
    let mut accept_len = Family::new(&names::ACCEPT_LEN);
    let mut accept_limit = Family::new(&names::ACCEPT_LIMIT);
    let mut high_water = Family::new(&names::HIGH_WATER);
    let mut syn_len = Family::new(&names::SYN_LEN);
    let mut members = Family::new(&names::REUSEPORT_MEMBERS);
    let mut rate = Family::new(&names::DROP_RATE);
    let mut info = Family::new(&names::INFO);
    for (id, group) in &ctx.view.listeners {
        if !filter.allows(id) {
            continue;
        }
        let values = listener_values(id);
        let fullest = group.fullest();
        let s = &fullest.socket;
        accept_len.add(&values, f64::from(s.accept_queue_len));
        accept_limit.add(&values, f64::from(s.accept_queue_limit));
        let high = ctx.high_water(s.cookie).max(s.accept_queue_len);
        high_water.add(&values, f64::from(high));
        syn_len.add(&values, f64::from(group.syn_queue()));
        members.add(&values, group.members.len() as f64);
        if let Some(r) = ctx.rate(id) {
            rate.add(&values, r);
        }
        let owner = group.owner();
        let (pid, comm, cgroup) = owner.map_or_else(
            || (String::new(), String::new(), String::new()),
            |o| (o.pid.to_string(), o.comm.clone(), o.cgroup.clone()),
        );
        let [netns, family, addr, port] = values;
        let container = names::container_values(owner.and_then(|o| o.container.as_deref()));
        let mut labels = Vec::with_capacity(names::INFO.labels.len());
        labels.extend([netns, family, addr, port, pid, comm, cgroup]);
        labels.extend(container);
        info.add(&labels, 1.0);
    }
    let mut sysctl = Family::new(&names::SYSCTL);
    for ns in &ctx.view.inventory.namespaces {
        let netns = Netns(ns.namespace.inode);
        if !filter.allows_netns(netns) {
            continue;
        }
        let netns = netns.to_string();
        for (name, value) in ns.sysctls.named() {
            sysctl.add(&[netns.as_str(), name], f64::from(value));
        }
    }
    [
        accept_len,
        accept_limit,
        high_water,
        syn_len,
        members,
        rate,
        info,
        sysctl,
    ]
    .map(Family::finish)
    .into()
}
