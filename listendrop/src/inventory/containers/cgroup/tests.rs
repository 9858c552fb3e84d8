//! Fixtures of every layout: paths seen on real hosts (the podman one on this project's
//! machines, the others as the runtimes' and kubelet's sources and public bug reports show
//! them), each with what it must give.

use super::*;

const ID: &str = "079a806d7b7f95b366ef55b568888b7f310e062b43cb9f3d25316c5247bed9f5";
const UID: &str = "ac04f3f2-1f2c-11e9-b015-1ebee232acfa";
const UID_: &str = "ac04f3f2_1f2c_11e9_b015_1ebee232acfa";

fn container(runtime: Option<Runtime>, id: &str) -> CgroupContainer {
    CgroupContainer {
        runtime,
        id: id.to_owned(),
        pod_uid: None,
        qos: None,
        user: None,
    }
}

fn in_pod(runtime: Option<Runtime>, id: &str, uid: &str, qos: Qos) -> CgroupContainer {
    CgroupContainer {
        pod_uid: Some(uid.to_owned()),
        qos: Some(qos),
        ..container(runtime, id)
    }
}

#[track_caller]
fn check(path: &str, expected: Option<CgroupContainer>) {
    assert_eq!(parse(path), expected, "{path}");
}

#[test]
fn kubelet_cgroupfs_driver() {
    use Qos::*;
    let p = |rest: &str| format!("/kubepods/{rest}");
    // containerd and cri-dockerd: the id alone (the runtime is not in the path).
    check(
        &p(&format!("besteffort/pod{UID}/{ID}")),
        Some(in_pod(None, ID, UID, BestEffort)),
    );
    check(
        &p(&format!("burstable/pod{UID}/{ID}")),
        Some(in_pod(None, ID, UID, Burstable)),
    );
    check(
        &p(&format!("pod{UID}/{ID}")),
        Some(in_pod(None, ID, UID, Guaranteed)),
    );
    // CRI-O names its container cgroups crio-<id>.
    check(
        &p(&format!("besteffort/pod{UID}/crio-{ID}")),
        Some(in_pod(Some(Runtime::CriO), ID, UID, BestEffort)),
    );
    // podman --cgroup-parent /kubepods/besteffort/pod<uid> (a kubelet-like parent).
    check(
        &p(&format!("besteffort/pod{UID}/libpod-{ID}")),
        Some(in_pod(Some(Runtime::Podman), ID, UID, BestEffort)),
    );
    // ctr with a kubelet-like --cgroup: any containerd identifier.
    check(
        &p(&format!("besteffort/pod{UID}/web-1")),
        Some(in_pod(None, "web-1", UID, BestEffort)),
    );
    // A static pod's UID is a 32-digit hash without dashes.
    let hash = "bd12dd3393227d950605a2444b13c27a";
    check(
        &p(&format!("burstable/pod{hash}/{ID}")),
        Some(in_pod(None, ID, hash, Burstable)),
    );
    // A sub-cgroup made inside the container still belongs to it.
    check(
        &p(&format!("pod{UID}/{ID}/init")),
        Some(in_pod(None, ID, UID, Guaranteed)),
    );
    // The pod's and the QoS class's own cgroups hold no container.
    check(&p(&format!("besteffort/pod{UID}")), None);
    check("/kubepods/burstable", None);
    check("/kubepods", None);
    // Conmon of CRI-O under the pod.
    check(&p(&format!("burstable/pod{UID}/crio-conmon-{ID}")), None);
}

#[test]
fn kubelet_systemd_driver() {
    use Qos::*;
    let be =
        format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice");
    check(
        &format!("{be}/cri-containerd-{ID}.scope"),
        Some(in_pod(Some(Runtime::Containerd), ID, UID, BestEffort)),
    );
    check(
        &format!("{be}/crio-{ID}.scope"),
        Some(in_pod(Some(Runtime::CriO), ID, UID, BestEffort)),
    );
    check(
        &format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/\
             docker-{ID}.scope"
        ),
        Some(in_pod(Some(Runtime::Docker), ID, UID, Burstable)),
    );
    check(
        &format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
        Some(in_pod(Some(Runtime::Containerd), ID, UID, Guaranteed)),
    );
    // runc's nested "container" cgroup of a systemd scope.
    check(
        &format!("{be}/crio-{ID}.scope/container"),
        Some(in_pod(Some(Runtime::CriO), ID, UID, BestEffort)),
    );
    check(&format!("{be}/crio-conmon-{ID}.scope"), None);
    check(&be, None);
    check("/kubepods.slice/kubepods-besteffort.slice", None);
}

#[test]
fn systemd_style_path_given_to_cgroupfs_runc() {
    // containerd with SystemdCgroup=false under a kubelet with the systemd driver: runc
    // takes "slice:prefix:name" as one directory.
    let hash = "bd12dd3393227d950605a2444b13c27a";
    let id = "d52db56a9c80d536a91354c0951c061187ca46249e64865a12703003d8f42366";
    check(
        &format!("/kubepods-burstable-pod{hash}.slice:cri-containerd:{id}"),
        Some(in_pod(Some(Runtime::Containerd), id, hash, Qos::Burstable)),
    );
    check(
        &format!("/kubepods-besteffort-pod{UID_}.slice:crio:{ID}"),
        Some(in_pod(Some(Runtime::CriO), ID, UID, Qos::BestEffort)),
    );
    check(&format!("/kubepods-pod{UID_}.slice:other:{ID}"), None);
}

#[test]
fn nested_kubelets_kind_style() {
    use Qos::*;
    let node = "7951fb549ab99e0722a949b6c121634e1f3a36b5bacbe5392991e3b12251e6b8";
    // kind on a cgroup v1 host: the node is a Docker container, kubelet runs with
    // --cgroup-root=/kubelet inside it. The pod's container is what listens.
    check(
        &format!("/docker/{node}/kubelet/kubepods/burstable/pod{UID}/{ID}"),
        Some(in_pod(None, ID, UID, Burstable)),
    );
    // kind on cgroup v2 with the systemd driver: kubelet-kubepods-… slices.
    check(
        &format!(
            "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/\
             cri-containerd-{ID}.scope"
        ),
        Some(in_pod(Some(Runtime::Containerd), ID, UID, BestEffort)),
    );
    check(
        &format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/\
             cri-containerd-{ID}.scope"
        ),
        Some(in_pod(Some(Runtime::Containerd), ID, UID, Guaranteed)),
    );
    // The node itself (its kubelet, its containerd) is a Docker container.
    check(
        &format!("/docker/{node}/kubelet"),
        Some(container(Some(Runtime::Docker), node)),
    );
    // Seen from a daemon in a container of its own (cgroup namespace): relative paths.
    // From a pod's cgroup /kubepods/besteffort/pod<x>/<y>, `kubepods` itself is hidden.
    check(
        &format!("/../../../burstable/pod{UID}/{ID}"),
        Some(in_pod(None, ID, UID, Burstable)),
    );
    check(
        &format!("/../../../pod{UID}/{ID}"),
        Some(in_pod(None, ID, UID, Guaranteed)),
    );
    check(
        &format!("/../../../kubepods/besteffort/pod{UID}/{ID}"),
        Some(in_pod(None, ID, UID, BestEffort)),
    );
    check(
        &format!(
            "/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"
        ),
        Some(in_pod(Some(Runtime::CriO), ID, UID, BestEffort)),
    );
}

#[test]
fn docker() {
    check(
        &format!("/docker/{ID}"),
        Some(container(Some(Runtime::Docker), ID)),
    );
    check(
        &format!("/system.slice/docker-{ID}.scope"),
        Some(container(Some(Runtime::Docker), ID)),
    );
    check(
        &format!("/docker.slice/docker-{ID}.scope"),
        Some(container(Some(Runtime::Docker), ID)),
    );
    // dockerd itself and other units are no containers.
    check("/system.slice/docker.service", None);
    check("/system.slice/docker-ce.service", None);
    check("/docker/not-a-container-id", None);
}

#[test]
fn podman_rootful_and_rootless() {
    // As podman 4.3 with cgroup_manager = "cgroupfs" made it on this project's machines.
    check(
        &format!("/libpod_parent/libpod-{ID}"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    let pod = "4a3d1a4f5c0b4ad2b8a1c0a2d6e9f7b34a3d1a4f5c0b4ad2b8a1c0a2d6e9f7b3";
    check(
        &format!("/libpod_parent/{pod}/libpod-{ID}"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    check(&format!("/libpod_parent/libpod-conmon-{ID}"), None);
    check("/libpod_parent/conmon", None);
    // The systemd manager.
    check(
        &format!("/machine.slice/libpod-{ID}.scope"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    check(
        &format!("/machine.slice/libpod-{ID}.scope/container"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    check(
        &format!("/machine.slice/machine-libpod_pod_{pod}.slice/libpod-{ID}.scope"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    check(
        &format!("/machine.slice/libpod-payload-{ID}.scope"),
        Some(container(Some(Runtime::Podman), ID)),
    );
    check(&format!("/machine.slice/libpod-conmon-{ID}.scope"), None);
    // Rootless: under the user's systemd; the user tells whose API socket to ask.
    let rootless = parse(&format!(
        "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
    ));
    assert_eq!(
        rootless,
        Some(CgroupContainer {
            user: Some(1000),
            ..container(Some(Runtime::Podman), ID)
        })
    );
    let rootless_crun = parse(&format!(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-{ID}.scope/container"
    ));
    assert_eq!(rootless_crun.unwrap().user, Some(1000));
}

#[test]
fn containerd_without_kubelet() {
    check(
        "/default/test_container",
        Some(container(Some(Runtime::Containerd), "test_container")),
    );
    check(
        &format!("/default/{ID}"),
        Some(container(Some(Runtime::Containerd), ID)),
    );
    check(
        &format!("/system.slice/nerdctl-{ID}.scope"),
        Some(container(Some(Runtime::Containerd), ID)),
    );
    // Only the first level: /x/default/y is not ctr's.
    check("/x/default/test_container", None);
}

#[test]
fn host_processes_have_no_container() {
    for path in [
        "",
        "/",
        "/init.scope",
        "/system.slice/nginx.service",
        "/system.slice/containerd.service",
        "/system.slice/crio.service",
        "/user.slice/user-1000.slice/session-2.scope",
        "/user.slice/user-1000.slice/user@1000.service/init.scope",
        "/process_api/7d7684d393718cbbdcc38f2b794e9b0e",
        "/machine.slice",
        "/kubepods.slice/kubelet.service",
        "/podcast/abc",
    ] {
        check(path, None);
    }
}

#[test]
fn first_hierarchy_that_names_a_container() {
    // A hybrid host: the v2 line says "/", a v1 controller the runtime used says more.
    let paths = ["/", "/user.slice", &format!("/docker/{ID}")];
    assert_eq!(
        parse_any(paths.iter().copied()),
        Some(container(Some(Runtime::Docker), ID))
    );
    assert_eq!(parse_any(["/", "/system.slice/x.service"]), None);
}

#[test]
fn label_spellings() {
    assert_eq!(Runtime::CriO.as_str(), "cri-o");
    assert_eq!(Runtime::Containerd.to_string(), "containerd");
    assert_eq!(Qos::BestEffort.as_str(), "BestEffort");
}
