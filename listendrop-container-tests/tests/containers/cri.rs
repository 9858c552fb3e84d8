//! Kubernetes pods made through containerd's CRI plugin the way a kubelet makes them (a
//! sandbox with a cgroup parent and a log directory on a CNI pod network, then a
//! container): pod, namespace, UID, QoS and container name come from the container's OCI
//! bundle, found through its shim in containerd's own state directory (the test's, no
//! default path), with no Kubernetes API and no container API.

use super::{
    check_drops, check_status, check_trace, stop_and_overflow, wait_for_info, Expected, Trace,
};
use crate::support::{
    containers::{self, containerd::Containerd, pid_of_container, podman::Podman, HTTPD_PORT},
    daemon::Daemon,
    netns::Netns,
    scenarios::unanswering_neighbour,
};

#[test]
fn cri_pods_are_named_from_their_oci_bundles() {
    let test = "cri_pods_are_named_from_their_oci_bundles";
    let programs = ["podman", "runc", "containerd", "ctr", "busybox"];
    if !containers::available(test, &programs) {
        return;
    }
    // Images built with podman, handed to containerd as OCI archives (no registry).
    let podman = Podman::new("cri-images");
    let image = podman.build_httpd();
    let pause = podman.build_busybox("ldt-pause", &["/bin/busybox", "sleep", "2147483647"]);
    let archives = podman.dir().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let (image_tar, pause_tar) = (archives.join("httpd.tar"), archives.join("pause.tar"));
    podman.save(&image, "oci-archive", &image_tar);
    podman.save(&pause, "oci-archive", &pause_tar);

    let mut containerd = Containerd::start("cri", &pause);
    containerd.import(&image_tar);
    containerd.import(&pause_tar);
    let daemon = Daemon::start(&[
        "--inventory-interval-secs",
        "1",
        "--docker-socket",
        "none",
        "--podman-socket",
        "none",
    ]);

    let cases = [
        ("web-1", "besteffort", "BestEffort"),
        ("api-0", "", "Guaranteed"),
    ];
    for (subnet, (pod_name, qos_dir, qos)) in (51u8..).zip(cases) {
        let uid = containers::uid();
        let pod = containerd.run_pod(pod_name, "shop", &uid, qos_dir);
        let id = containerd.run_container(&pod, "nginx", &image);
        let pid = pid_of_container(&id, std::time::Duration::from_secs(10));
        let ns = Netns::attach("cri", pid);
        let want = Expected {
            runtime: "containerd",
            id: id.clone(),
            name: "nginx".into(),
            image: image.clone(),
            pod: pod_name.into(),
            pod_namespace: "shop".into(),
            pod_uid: uid.clone(),
            qos,
        };
        unanswering_neighbour(&ns, subnet);
        wait_for_info(&daemon, &ns, HTTPD_PORT, &want);
        let no_sockets = ["--docker-socket", "none", "--podman-socket", "none"];
        let trace = Trace::start(&ns, &no_sockets);
        let done = stop_and_overflow(&ns, pid, HTTPD_PORT, subnet, 3);
        check_trace(&trace.stop(), HTTPD_PORT, done.overflows, &want);
        check_drops(&daemon, &ns, HTTPD_PORT, done.overflows, &want);
        check_status(&ns, HTTPD_PORT, &want, &no_sockets);
        drop(done);
        containerd.remove_pod(&pod.id);
    }
    assert!(daemon.stop().success());
}
