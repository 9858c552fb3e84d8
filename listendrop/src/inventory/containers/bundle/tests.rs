//! Fixtures: the annotations containerd's CRI plugin, CRI-O and podman write (trimmed
//! config.json files), and conmon's command line as podman starts it.

use super::*;

/// containerd 1.6 (CRI plugin), an application container of pod shop/web-1.
const CONTAINERD_CRI: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {"args": ["/bin/busybox", "httpd", "-f", "-p", "8080"]},
  "root": {"path": "rootfs"},
  "linux": {"cgroupsPath": "/kubepods/besteffort/pod5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10/4d6c"},
  "annotations": {
    "io.kubernetes.cri.container-name": "nginx",
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.image-name": "localhost/bbhttpd:1",
    "io.kubernetes.cri.sandbox-id": "9c1f0e3a",
    "io.kubernetes.cri.sandbox-name": "web-1",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10"
  }
}"#;

/// The same pod's sandbox (pause) container.
const CONTAINERD_SANDBOX: &str = r#"{
  "annotations": {
    "io.kubernetes.cri.container-type": "sandbox",
    "io.kubernetes.cri.podsandbox.image-name": "localhost/pause:1",
    "io.kubernetes.cri.sandbox-id": "9c1f0e3a",
    "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/shop_web-1_5f0b",
    "io.kubernetes.cri.sandbox-name": "web-1",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10"
  }
}"#;

/// CRI-O 1.28, an application container.
const CRIO: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "hostname": "redis-0",
  "annotations": {
    "io.container.manager": "cri-o",
    "io.kubernetes.container.hash": "3fdc8c5",
    "io.kubernetes.container.name": "redis",
    "io.kubernetes.cri-o.ContainerID": "49ecc282021562c567a8159ef424a06cdd8637efdca5953de9794eafe29adcad",
    "io.kubernetes.cri-o.ContainerName": "k8s_redis_redis-0_cache_7c3b_0",
    "io.kubernetes.cri-o.ContainerType": "container",
    "io.kubernetes.cri-o.Image": "sha256:1f04600dc6949359da68eee5fe7c4069706a567c07d1ef89fe3bbfdeac7a6dca",
    "io.kubernetes.cri-o.ImageName": "quay.io/crio/redis:alpine",
    "io.kubernetes.cri-o.SandboxID": "1f04600dc6949359da68eee5fe7c4069706a567c07d1ef89fe3bbfdeac7a6dca",
    "io.kubernetes.pod.name": "redis-0",
    "io.kubernetes.pod.namespace": "cache",
    "io.kubernetes.pod.uid": "7c3b9e0a-1d2e-4f50-8a6b-0c1d2e3f4a5b"
  }
}"#;

/// podman 4.3 `podman run` (as on this project's machines): no names in the bundle.
const PODMAN: &str = r#"{
  "annotations": {
    "io.container.manager": "libpod",
    "io.kubernetes.cri-o.Created": "2026-12-02T03:42:50.888992951Z",
    "io.kubernetes.cri-o.TTY": "false",
    "io.podman.annotations.autoremove": "FALSE",
    "io.podman.annotations.init": "FALSE",
    "org.opencontainers.image.stopSignal": "15"
  }
}"#;

fn names(json: &str) -> Names {
    annotation_names(&parse_annotations(json.as_bytes()).unwrap())
}

#[test]
fn containerd_cri_names_the_pod_and_container() {
    let n = names(CONTAINERD_CRI);
    assert_eq!(n.runtime, Some(Runtime::Containerd));
    assert_eq!(n.name.as_deref(), Some("nginx"));
    assert_eq!(n.image.as_deref(), Some("localhost/bbhttpd:1"));
    assert_eq!(n.pod_name.as_deref(), Some("web-1"));
    assert_eq!(n.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(
        n.pod_uid.as_deref(),
        Some("5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10")
    );
    let sandbox = names(CONTAINERD_SANDBOX);
    assert_eq!(
        sandbox.name.as_deref(),
        Some("POD"),
        "kubelet's name for it"
    );
    assert_eq!(sandbox.pod_name.as_deref(), Some("web-1"));
    assert_eq!(sandbox.image.as_deref(), Some("localhost/pause:1"));
}

#[test]
fn crio_names_the_pod_and_container() {
    let n = names(CRIO);
    assert_eq!(n.runtime, Some(Runtime::CriO));
    assert_eq!(n.name.as_deref(), Some("redis"));
    assert_eq!(n.image.as_deref(), Some("quay.io/crio/redis:alpine"));
    assert_eq!(n.pod_name.as_deref(), Some("redis-0"));
    assert_eq!(n.pod_namespace.as_deref(), Some("cache"));
    assert_eq!(
        n.pod_uid.as_deref(),
        Some("7c3b9e0a-1d2e-4f50-8a6b-0c1d2e3f4a5b")
    );
}

#[test]
fn podman_bundles_name_nothing_but_the_runtime() {
    let n = names(PODMAN);
    assert_eq!(n.runtime, Some(Runtime::Podman));
    assert_eq!((n.name, n.image, n.pod_name), (None, None, None));
    // Its conmon knows the name.
    let bundle = Bundle {
        annotations: parse_annotations(PODMAN.as_bytes()).unwrap(),
        conmon_name: Some("web-none".into()),
        ..Bundle::default()
    };
    assert_eq!(bundle.names().name, None, "a fallback only");
    assert_eq!(bundle.fallback_name().as_deref(), Some("web-none"));
}

#[test]
fn a_plain_containerd_or_docker_bundle_names_nothing() {
    let n = names(r#"{"ociVersion": "1.0.2", "process": {}}"#);
    assert_eq!(n, Names::default());
    let docker = Bundle {
        runtime: Some(task_namespace_runtime("moby")),
        ..Bundle::default()
    };
    assert_eq!(docker.names().runtime, Some(Runtime::Docker));
    assert_eq!(task_namespace_runtime("k8s.io"), Runtime::Containerd);
}

#[test]
fn bad_configurations_are_errors() {
    assert!(parse_annotations(b"not json").is_err());
    assert!(parse_annotations(br#"{"annotations": {"a": 1}}"#).is_err());
    let err = read_annotations(Path::new("/nonexistent/config.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/config.json"),
        "{err}"
    );
}

#[test]
fn conmon_command_line() {
    // As podman 4.3 starts it (trimmed).
    let argv: Vec<String> = "/usr/bin/conmon --api-version 1 -c 079a80 -u 079a80 -r /usr/bin/runc \
        -b /var/lib/containers/storage/overlay-containers/079a80/userdata \
        -p /run/containers/storage/overlay-containers/079a80/userdata/pidfile -n web-none \
        --exit-dir /run/libpod/exits --full-attach"
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let args = ConmonArgs::parse(&argv);
    assert_eq!(args.cid.as_deref(), Some("079a80"));
    assert_eq!(args.name.as_deref(), Some("web-none"));
    assert_eq!(
        args.bundle.as_deref(),
        Some(Path::new(
            "/var/lib/containers/storage/overlay-containers/079a80/userdata"
        ))
    );
    let long: Vec<String> = ["conmon", "--cid=abc", "--name", "x", "--bundle=/b"]
        .map(str::to_owned)
        .to_vec();
    let args = ConmonArgs::parse(&long);
    assert_eq!(
        (args.cid.as_deref(), args.name.as_deref()),
        (Some("abc"), Some("x"))
    );
    assert_eq!(args.bundle.as_deref(), Some(Path::new("/b")));
    assert_eq!(
        ConmonArgs::parse(&["conmon".to_owned(), "-c".to_owned()]),
        ConmonArgs::default()
    );
}

#[test]
fn a_host_process_has_no_bundle() {
    let err = find(std::process::id() as i32, "no-such-container").unwrap_err();
    assert!(matches!(err, ContainerError::NoBundle { .. }), "{err}");
}
