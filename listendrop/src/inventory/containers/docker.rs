//! Names of Docker and podman containers from the Docker-compatible API (Docker Engine,
//! `podman system service`), over its unix socket: one `GET /containers/json` filtered by
//! the ids wanted answers for every container of a pass at once (id, names, image,
//! labels). Kubernetes pods run by Docker (cri-dockerd) carry their pod's names as labels.
//!
//! The API version is negotiated with the server (`GET /version`): podman 4 and Docker 20
//! speak 1.41, Docker 29 refuses anything below 1.44. Every request is bounded by the
//! configured timeout, so an engine that hangs costs a pass at most that.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::{query_parameters::ListContainersOptionsBuilder, Docker, API_DEFAULT_VERSION};

use super::{ContainerError, Names};

/// The labels cri-dockerd (and podman's `--label`, by convention) puts on the containers
/// of a Kubernetes pod.
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// What one container is according to the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Full id.
    pub id: String,
    /// Names, each with Docker's leading `/`.
    pub names: Vec<String>,
    /// The image as the user named it.
    pub image: String,
    /// Labels.
    pub labels: HashMap<String, String>,
}

impl Summary {
    /// The names a container's labels and summary give: a pod's (cri-dockerd labels) or
    /// the container's own name without its `/`.
    pub fn names(&self) -> Names {
        let label = |key: &str| self.labels.get(key).filter(|v| !v.is_empty()).cloned();
        let own = self
            .names
            .first()
            .map(|n| n.trim_start_matches('/').to_owned());
        Names {
            runtime: None,
            name: label(CONTAINER_NAME).or(own),
            image: Some(self.image.clone()).filter(|i| !i.is_empty()),
            pod_name: label(POD_NAME),
            pod_namespace: label(POD_NAMESPACE),
            pod_uid: label(POD_UID),
        }
    }
}

/// One Docker-compatible API endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its unix socket.
    pub socket: PathBuf,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Endpoint {
    /// The containers among `ids` the engine knows (running or not), by id. Containers it
    /// does not know are absent, not an error.
    pub fn lookup(&self, ids: &[&str]) -> Result<BTreeMap<String, Summary>, ContainerError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        // A runtime of its own: the inventory thread is not async, and this never
        // outlives the call (nor leaves a pooled connection behind).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ContainerError::Runtime { source })?;
        runtime.block_on(self.lookup_async(ids))
    }

    async fn lookup_async(
        &self,
        ids: &[&str],
    ) -> Result<BTreeMap<String, Summary>, ContainerError> {
        let api = |source| ContainerError::Api {
            socket: self.socket.clone(),
            source,
        };
        let path = self
            .socket
            .to_str()
            .ok_or_else(|| ContainerError::SocketPath {
                socket: self.socket.clone(),
            })?;
        // bollard's own timeout is in whole seconds: longer than ours, which applies.
        let secs = self.timeout.as_secs() + 1;
        // The newest version bollard speaks, lowered to the server's by negotiation.
        let docker = Docker::connect_with_unix(path, secs, API_DEFAULT_VERSION).map_err(api)?;
        let docker = self
            .bounded(docker.negotiate_version())
            .await?
            .map_err(api)?;
        let filters = HashMap::from([("id", ids.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .bounded(docker.list_containers(Some(options)))
            .await?
            .map_err(api)?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let summary = Summary {
                    id: c.id?,
                    names: c.names.unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default(),
                };
                Some((summary.id.clone(), summary))
            })
            // The id filter matches prefixes: keep exact answers only.
            .filter(|(id, _)| ids.contains(&id.as_str()))
            .collect())
    }

    /// `request`, or a timeout error after [`Endpoint::timeout`].
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, ContainerError> {
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| ContainerError::ApiTimeout {
                socket: self.socket.clone(),
                after: self.timeout,
            })
    }
}

/// The rootless podman API socket of user `uid` (`podman system service` started by the
/// user's `podman.socket` unit).
pub fn rootless_podman_socket(uid: u32) -> PathBuf {
    Path::new("/run/user")
        .join(uid.to_string())
        .join("podman/podman.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(labels: &[(&str, &str)]) -> Summary {
        Summary {
            id: "0".repeat(64),
            names: vec!["/web-none".into()],
            image: "localhost/bbhttpd:1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_plain_container_is_its_name_and_image() {
        let names = summary(&[("io.buildah.version", "1.28.2")]).names();
        assert_eq!(names.name.as_deref(), Some("web-none"));
        assert_eq!(names.image.as_deref(), Some("localhost/bbhttpd:1"));
        assert_eq!(names.pod_name, None);
    }

    #[test]
    fn a_pod_container_is_named_by_its_kubernetes_labels() {
        // What cri-dockerd puts on a pod's containers (and what podman --label can).
        let names = summary(&[
            ("io.kubernetes.pod.name", "web-1"),
            ("io.kubernetes.pod.namespace", "shop"),
            (
                "io.kubernetes.pod.uid",
                "5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10",
            ),
            ("io.kubernetes.container.name", "nginx"),
        ])
        .names();
        assert_eq!(names.name.as_deref(), Some("nginx"));
        assert_eq!(names.pod_name.as_deref(), Some("web-1"));
        assert_eq!(names.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(
            names.pod_uid.as_deref(),
            Some("5f0b1c1e-8a0d-4f3c-9a51-7d0c6f1f2a10")
        );
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it() {
        let endpoint = Endpoint {
            socket: "/nonexistent/docker.sock".into(),
            timeout: Duration::from_millis(200),
        };
        let err = endpoint.lookup(&["abc"]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/docker.sock"), "{err}");
        assert!(endpoint.lookup(&[]).unwrap().is_empty(), "nothing asked");
    }

    #[test]
    fn a_silent_server_times_out() {
        // A socket that accepts and never answers.
        let dir = std::env::temp_dir().join(format!("listendrop-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("silent.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let endpoint = Endpoint {
            socket: socket.clone(),
            timeout: Duration::from_millis(300),
        };
        let started = std::time::Instant::now();
        let err = endpoint.lookup(&["abc"]).unwrap_err();
        assert!(matches!(err, ContainerError::ApiTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
