//! A process in each cgroup layout the runtimes make (cgroups made by the test, in the
//! unified hierarchy or only in a v1 one): the parser's result on the info series, the
//! drop log line and `status`. No runtime made them, so no bundle and no API names them:
//! the daemon says once per runtime that it cannot, and keeps the id, runtime, pod UID
//! and QoS class the path gives.

use std::process::{Child, Stdio};

use super::{check_drops, check_status, count_lines, stop_and_overflow, wait_for_info, Expected};
use crate::support::{
    containers::{
        self,
        cgroups::{Hierarchy, TestCgroup},
    },
    daemon::Daemon,
    netns::Netns,
    scenarios::unanswering_neighbour,
};

/// A busybox httpd in a test cgroup, killed (by pid) on drop.
struct Server {
    child: Child,
    _cgroup: Option<TestCgroup>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 64-hex container id.
fn hex64() -> String {
    format!(
        "{}{}",
        containers::uid().replace('-', ""),
        containers::uid().replace('-', "")
    )
}

/// (cgroup path, hierarchy, expected runtime, pod QoS) of every layout, `{id}`, `{uid}`,
/// `{uid_}` (underscores) and `{node}` filled in by the test.
const LAYOUTS: &[(&str, Hierarchy, &str, &str)] = &[
    // kubelet, cgroupfs driver: containerd (runtime not in the path), CRI-O.
    ("/kubepods/besteffort/pod{uid}/{id}", Hierarchy::Unified, "", "BestEffort"),
    ("/kubepods/burstable/pod{uid}/crio-{id}", Hierarchy::Unified, "cri-o", "Burstable"),
    ("/kubepods/pod{uid}/{id}", Hierarchy::V1Pids, "", "Guaranteed"),
    // kubelet, systemd driver.
    (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
        Hierarchy::Unified,
        "containerd",
        "BestEffort",
    ),
    ("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{id}.scope", Hierarchy::Unified, "cri-o", "Guaranteed"),
    (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{id}.scope",
        Hierarchy::V1Pids,
        "docker",
        "Burstable",
    ),
    // A systemd cgroupsPath taken literally by a cgroupfs runc.
    ("/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}", Hierarchy::Unified, "containerd", "Burstable"),
    // Docker, podman rootful (cgroupfs, systemd) and rootless, ctr.
    ("/docker/{id}", Hierarchy::V1Pids, "docker", ""),
    ("/system.slice/docker-{id}.scope", Hierarchy::Unified, "docker", ""),
    ("/libpod_parent/libpod-{id}", Hierarchy::Unified, "podman", ""),
    ("/machine.slice/libpod-{id}.scope/container", Hierarchy::Unified, "podman", ""),
    (
        "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope",
        Hierarchy::Unified,
        "podman",
        "",
    ),
    ("/default/{id}", Hierarchy::Unified, "containerd", ""),
    // Nested kubelets (kind): cgroupfs on v1, systemd slices on v2.
    ("/docker/{node}/kubelet/kubepods/burstable/pod{uid}/{id}", Hierarchy::V1Pids, "", "Burstable"),
    (
        "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
        Hierarchy::Unified,
        "containerd",
        "BestEffort",
    ),
];

#[test]
fn every_cgroup_layout_names_its_container() {
    let test = "every_cgroup_layout_names_its_container";
    if !containers::available(test, &["busybox"]) {
        return;
    }
    let no_sources = ["--docker-socket", "none", "--podman-socket", "none"];
    let mut args = vec!["--inventory-interval-secs", "1"];
    args.extend(no_sources);
    let daemon = Daemon::start(&args);
    let ns = Netns::new("cglayout");
    let subnet = 61;
    unanswering_neighbour(&ns, subnet);

    let mut servers = Vec::new();
    let mut wanted = Vec::new();
    for (i, (layout, hierarchy, runtime, qos)) in LAYOUTS.iter().enumerate() {
        let (id, uid, node) = (hex64(), containers::uid(), hex64());
        let path = layout
            .replace("{id}", &id)
            .replace("{uid_}", &uid.replace('-', "_"))
            .replace("{uid}", &uid)
            .replace("{node}", &node);
        let cgroup = TestCgroup::new(&path, *hierarchy);
        let port = 8100 + u16::try_from(i).unwrap();
        let child = cgroup.spawn(httpd(&ns, port).stdin(Stdio::null()));
        let in_pod = !qos.is_empty();
        wanted.push((
            port,
            child.id(),
            Expected {
                runtime,
                id,
                pod_uid: if in_pod { uid } else { String::new() },
                qos,
                ..Expected::default()
            },
        ));
        servers.push(Server {
            child,
            _cgroup: Some(cgroup),
        });
    }
    // A host process: no container labels at all.
    let host_port = 8099;
    let host = httpd(&ns, host_port).stdin(Stdio::null()).spawn().unwrap();
    wanted.push((host_port, host.id(), Expected::default()));
    servers.push(Server {
        child: host,
        _cgroup: None,
    });

    for (port, _, want) in &wanted {
        wait_for_info(&daemon, &ns, *port, want);
    }
    let mut held = Vec::new();
    for (port, pid, want) in &wanted {
        let done = stop_and_overflow(&ns, i32::try_from(*pid).unwrap(), *port, subnet, 2);
        check_drops(&daemon, &ns, *port, done.overflows, want);
        check_status(&ns, *port, want, &no_sources);
        held.push(done);
    }
    // No bundle for any of them: said once per kind of container, not per container nor
    // per pass.
    for kind in ["containerd containers", "cri-o containers", "containers"] {
        let said = format!("container identity: cannot use the OCI bundles of {kind}:");
        assert_eq!(count_lines(&daemon, &said), 1, "{said}");
    }
    assert!(daemon.stop().success());
    drop(held);
    drop(servers);
}

/// `busybox httpd -f -p PORT` in `ns`.
fn httpd(ns: &Netns, port: u16) -> std::process::Command {
    let busybox = containers::which("busybox").expect("busybox");
    let mut cmd = ns.command(busybox.to_str().unwrap());
    cmd.args(["httpd", "-f", "-p", &port.to_string(), "-h", "/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
