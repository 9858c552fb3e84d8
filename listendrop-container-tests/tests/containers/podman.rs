//! podman containers (runc, cgroupfs manager), named through podman's Docker-compatible
//! API: a plain container (name, image), and one with a kubelet-like cgroup parent and
//! the pod labels cri-dockerd puts on Docker containers (pod, namespace, UID, QoS). And
//! without the API: the labels it gives are lost, the daemon says so once and goes on.

use std::time::Duration;

use super::{
    check_drops, check_status, check_trace, count_lines, stop_and_overflow, wait_for_info,
    Expected, Trace,
};
use crate::support::{
    containers::{
        self,
        podman::{Podman, WithDaemon},
        HTTPD_PORT,
    },
    daemon::Daemon,
    netns::Netns,
    scenarios::unanswering_neighbour,
};

const PROGRAMS: &[&str] = &["podman", "runc", "conmon", "busybox"];

#[test]
fn podman_containers_are_named_by_the_docker_compatible_api() {
    let test = "podman_containers_are_named_by_the_docker_compatible_api";
    if !containers::available(test, PROGRAMS) {
        return;
    }
    let setup = WithDaemon::start("podman");
    let (daemon, podman, image, uid) = (&setup.daemon, &setup.podman, &setup.image, &setup.uid);
    let socket = podman.socket().to_string_lossy().into_owned();

    let plain = podman.run("web", &["--network", "none"], image);
    // A pod's container as cri-dockerd runs them (its cgroup under kubepods, the pod's
    // names in labels).
    let (kube, _) = podman.run_in_pod(image, ("shop", "web-1", uid), "nginx");
    let cases = [
        (
            &plain,
            Expected {
                runtime: "podman",
                id: plain.id.clone(),
                name: plain.name.clone(),
                image: image.clone(),
                ..Expected::default()
            },
        ),
        (
            &kube,
            Expected {
                runtime: "podman",
                id: kube.id.clone(),
                name: "nginx".into(),
                image: image.clone(),
                pod: "web-1".into(),
                pod_namespace: "shop".into(),
                pod_uid: uid.clone(),
                qos: "Burstable",
            },
        ),
    ];
    for (subnet, (container, want)) in (41u8..).zip(&cases) {
        let ns = Netns::attach("podman", container.pid);
        unanswering_neighbour(&ns, subnet);
        wait_for_info(daemon, &ns, HTTPD_PORT, want);
        let trace = Trace::start(&ns, &["--podman-socket", &socket]);
        let done = stop_and_overflow(&ns, container.pid, HTTPD_PORT, subnet, 3);
        check_trace(&trace.stop(), HTTPD_PORT, done.overflows, want);
        check_drops(daemon, &ns, HTTPD_PORT, done.overflows, want);
        check_status(&ns, HTTPD_PORT, want, &["--podman-socket", &socket]);
        drop(done);
        podman.remove(&container.id);
    }
    // The API answered every time: nothing to say about it. (The daemon may say things
    // about other tests' containers: the inventory is host-wide.)
    let ours = format!("container identity: cannot use the container API at {socket}");
    assert_eq!(count_lines(daemon, &ours), 0);
    assert!(setup.daemon.stop().success());
}

#[test]
fn without_the_api_a_podman_container_keeps_its_id_and_name() {
    let test = "without_the_api_a_podman_container_keeps_its_id_and_name";
    if !containers::available(test, PROGRAMS) {
        return;
    }
    let podman = Podman::new("noapi");
    let image = podman.build_httpd();
    let missing = podman.dir().join("no-such.sock");
    let missing = missing.to_string_lossy();
    let daemon = Daemon::start(&[
        "--inventory-interval-secs",
        "1",
        "--podman-socket",
        &missing,
        "--docker-socket",
        "none",
        // Generous: podman's API server is slow on a loaded machine.
        "--container-api-timeout-ms",
        "10000",
    ]);
    let container = podman.run("noapi", &["--network", "none"], &image);
    let ns = Netns::attach("noapi", container.pid);
    // The cgroup gives the runtime and id, conmon's command line the name; only the
    // image (the API's) is missing.
    let want = Expected {
        runtime: "podman",
        id: container.id.clone(),
        name: container.name.clone(),
        ..Expected::default()
    };
    unanswering_neighbour(&ns, 43);
    wait_for_info(&daemon, &ns, HTTPD_PORT, &want);
    let done = stop_and_overflow(&ns, container.pid, HTTPD_PORT, 43, 2);
    check_drops(&daemon, &ns, HTTPD_PORT, done.overflows, &want);
    check_status(&ns, HTTPD_PORT, &want, &["--podman-socket", &missing]);
    // Said once (a pass that asks again later and fails again says it at debug level
    // only); the daemon goes on serving.
    let said = format!("container identity: cannot use the container API at {missing}");
    assert!(
        daemon.wait_for_lines(Duration::from_secs(10), |l| l
            .iter()
            .any(|l| l.contains(&said))),
        "the daemon never said the API is missing"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count_lines(&daemon, &said), 1, "logged once");
    assert_eq!(daemon.get("/healthz").0, 200);
    drop(done);
    podman.remove(&container.id);
    assert!(daemon.stop().success());
}
