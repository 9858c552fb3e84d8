//! End to end against the real system (root): a namespace of the test's own with a
//! listener held by a real `sleep` process, compared with `ss`, `nstat` and `/proc/sys`
//! inside that namespace.

use std::time::Duration;

use crate::support::{
    netns::Netns,
    require_root,
    sockets::{connect, listen, local},
    tools::{ns_cat, ss_listeners, Sleeper},
};
use listendrop::inventory::*;

#[test]
fn collect_reports_owner_queues_counters_and_diagnosis() {
    if !require_root("collect_reports_owner_queues_counters_and_diagnosis") {
        return;
    }
    let ns = Netns::new("inv-collect");
    // Backlog 5 and 6 connections nobody accepts: the accept queue is full.
    let (socket, _clients) = ns.enter(|| {
        let socket = listen("127.0.0.1:0".parse().unwrap(), 5, None);
        let addr = local(&socket);
        let clients: Vec<_> = (0..6).map(|_| connect(addr)).collect();
        (socket, clients)
    });
    let port = local(&socket).port();
    let owner = Sleeper::start(&ns, &[&socket]);
    drop(socket);
    let inode = u32::try_from(ns.inode).unwrap();

    let mut inventory = Inventory::new();
    let first = inventory.collect();
    std::thread::sleep(Duration::from_millis(300));
    let second = inventory.collect();
    assert!(second.namespaces[0].namespace.host, "host first");

    let find = |s: &Snapshot| {
        let report = s
            .namespace(inode)
            .unwrap_or_else(|| panic!("namespace {inode} missing: {s:#?}"))
            .clone();
        let listener = report
            .listeners
            .iter()
            .find(|l| l.socket.port == port)
            .unwrap_or_else(|| panic!("port {port} missing: {report:#?}"))
            .clone();
        (report, listener)
    };
    let (_, before) = find(&first);
    assert_eq!(before.owner_busy, None, "first look: no CPU history");
    let (report, l) = find(&second);

    assert_eq!(report.namespace.names, std::slice::from_ref(&ns.name));
    assert_eq!(report.namespace.pid, Some(owner.pid()));

    let ss = ss_listeners(&ns);
    let theirs = ss.iter().find(|s| s.inode == l.socket.inode).unwrap();
    assert_eq!(
        (l.socket.accept_queue_len, l.socket.accept_queue_limit),
        (theirs.recv_q, theirs.send_q)
    );
    assert_eq!((theirs.recv_q, theirs.send_q), (6, 5));

    let owner_found = l.owner.as_ref().expect("owner");
    assert_eq!(owner_found.pid, owner.pid());
    assert_eq!(owner_found.comm, owner.comm());
    assert_eq!(owner_found.holders, 1);
    assert_eq!(l.owner_busy, Some(false), "sleep uses no CPU");

    let somaxconn: u32 = ns_cat(&ns, "/proc/sys/net/core/somaxconn").parse().unwrap();
    assert_eq!(report.sysctls.somaxconn, somaxconn);
    let syncookies: u32 = ns_cat(&ns, "/proc/sys/net/ipv4/tcp_syncookies")
        .parse()
        .unwrap();
    assert_eq!(report.sysctls.tcp_syncookies, syncookies);

    let nstat = ns.nstat();
    for (name, value) in report.counters.named() {
        assert_eq!(Some(&value), nstat.get(name), "{name}");
    }

    let wanted = format!(
        "backlog 5 caps the accept queue below net.core.somaxconn {somaxconn} — raise the \
         application's listen backlog"
    );
    assert!(l.diagnosis.contains(&wanted), "{:#?}", l.diagnosis);
    assert!(
        l.diagnosis
            .iter()
            .any(|d| d.starts_with("accept queue full while the owner is idle")),
        "{:#?}",
        l.diagnosis
    );
}
