//! The resolver without any source (every one missing): it keeps what the cgroup said,
//! caches once per container, forgets a container with its owners, and says once what
//! is missing.

use std::sync::Arc;

use super::*;

const ID: &str = "079a806d7b7f95b366ef55b568888b7f310e062b43cb9f3d25316c5247bed9f5";

fn owner(pid: i32, runtime: Option<Runtime>, id: &str) -> Owner {
    Owner {
        pid,
        comm: "httpd".into(),
        cgroup: format!("/libpod_parent/libpod-{id}"),
        holders: 1,
        container: Some(Arc::new(ContainerIdentity {
            runtime,
            id: id.to_owned(),
            ..ContainerIdentity::default()
        })),
    }
}

fn no_sources() -> Config {
    Config {
        docker_socket: None,
        podman_socket: Some("/nonexistent/podman.sock".into()),
        ..Config::default()
    }
}

#[test]
fn identity_merges_and_displays() {
    let mut id = ContainerIdentity::from_cgroup(&CgroupContainer {
        runtime: None,
        id: ID.into(),
        pod_uid: Some("5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10".into()),
        qos: Some(Qos::Burstable),
        user: None,
    });
    assert_eq!(id.short_id(), "079a806d7b7f");
    assert_eq!(id.display_name(), "079a806d7b7f");
    assert!(id.in_pod());
    id.merge(Names {
        runtime: Some(Runtime::Containerd),
        name: Some("nginx".into()),
        pod_name: Some("web-1".into()),
        pod_namespace: Some("shop".into()),
        pod_uid: Some("other".into()),
        ..Names::default()
    });
    assert_eq!(id.display_name(), "shop/web-1/nginx");
    assert_eq!(
        id.pod_uid, "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10",
        "first source wins"
    );
    assert_eq!(id.runtime, Some(Runtime::Containerd));
    let plain = ContainerIdentity {
        name: "web".into(),
        ..ContainerIdentity::default()
    };
    assert_eq!(plain.display_name(), "web");
    assert!(!plain.in_pod());
}

#[test]
fn each_runtime_asks_its_own_api() {
    let config = Config::default();
    let of = |runtime, user| ContainerIdentity {
        runtime,
        rootless_user: user,
        ..ContainerIdentity::default()
    };
    assert_eq!(
        of(Some(Runtime::Docker), None).api_sockets(&config),
        [PathBuf::from(DEFAULT_DOCKER_SOCKET)]
    );
    assert_eq!(
        of(Some(Runtime::Podman), Some(1000)).api_sockets(&config),
        [
            PathBuf::from("/run/user/1000/podman/podman.sock"),
            PathBuf::from(DEFAULT_PODMAN_SOCKET)
        ]
    );
    assert!(of(Some(Runtime::Containerd), None)
        .api_sockets(&config)
        .is_empty());
    assert!(of(Some(Runtime::CriO), None)
        .api_sockets(&config)
        .is_empty());
    assert_eq!(
        of(None, None).api_sockets(&config).len(),
        2,
        "unknown: both"
    );
    let off = Config {
        docker_socket: None,
        podman_socket: None,
        ..Config::default()
    };
    assert!(of(None, None).api_sockets(&off).is_empty());
}

#[test]
fn missing_sources_cost_labels_never_the_identity() {
    let mut resolver = Resolver::new(no_sources());
    // This test process is no container: no shim, no conmon, no bundle, no API.
    let me = std::process::id() as i32;
    let mut owners = vec![
        owner(me, Some(Runtime::Podman), ID),
        owner(me, Some(Runtime::Podman), ID),
        owner(me, Some(Runtime::Containerd), "web-1"),
    ];
    let host = Owner {
        container: None,
        ..owner(me, None, "x")
    };
    owners.push(host);
    resolver.annotate(owners.iter_mut());
    assert_eq!(resolver.cached(), 2, "once per container");
    let podman = owners[0].container.as_ref().unwrap();
    assert_eq!(podman.id, ID);
    assert_eq!(podman.runtime, Some(Runtime::Podman));
    assert!(podman.name.is_empty(), "no API: no name");
    assert!(
        Arc::ptr_eq(podman, owners[1].container.as_ref().unwrap()),
        "one identity shared by the container's owners"
    );
    assert!(owners[3].container.is_none(), "a host process stays one");
    assert_eq!(
        resolver.health.failing.len(),
        2,
        "the podman API and containerd's bundles: {:?}",
        resolver.health.failing
    );

    // The next pass meets only the podman container: the other is forgotten.
    let mut next = [owner(me, Some(Runtime::Podman), ID)];
    resolver.annotate(next.iter_mut());
    assert_eq!(resolver.cached(), 1);
    resolver.annotate(std::iter::empty());
    assert_eq!(resolver.cached(), 0, "gone with its last owner");
}
