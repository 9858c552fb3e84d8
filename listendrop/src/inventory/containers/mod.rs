//! Which container and Kubernetes pod a listener's owner runs in, without the Kubernetes
//! API server (a node agent must work when it is slow or down, and needs no RBAC).
//!
//! - [`cgroup`]: the owner's cgroup path gives the runtime, the container id, the pod UID
//!   and QoS class (every layout of cgroupfs and systemd drivers, containerd, CRI-O,
//!   Docker, podman rootful and rootless, nested kubelets).
//! - [`bundle`]: the container's OCI `config.json` gives a Kubernetes pod's names (the
//!   annotations containerd's CRI plugin and CRI-O write), found through the container's
//!   shim or conmon.
//! - [`docker`]: the Docker-compatible API (Docker, podman) names plain containers and
//!   their image.
//!
//! The [`Resolver`] asks them once per container and keeps the answer in a bounded
//! [`cache`] that forgets a container with its last listener. Each source is optional: one
//! that fails costs the labels it gives, is logged once (and once more when it works
//! again), and is tried again after `retry_after`; it never stops a pass for longer than
//! the API timeout.

pub mod bundle;
pub mod cache;
pub mod cgroup;
pub mod docker;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

pub use cgroup::{CgroupContainer, Qos, Runtime};

use crate::inventory::owners::Owner;
use cache::{Cache, Lookup};

/// Why a source could not name a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No shim or conmon among the owner's parents, and no known state directory holds
    /// the container's bundle.
    #[error(
        "no OCI bundle found for container {id} (no containerd-shim or conmon among its \
         processes' parents, none in the usual state directories; listendrop needs the \
         host's PID namespace and CAP_SYS_PTRACE to see them)"
    )]
    NoBundle {
        /// The container id.
        id: String,
    },
    /// A bundle's `config.json` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as opened through /proc.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bundle's `config.json` is not JSON with string annotations.
    #[error("{path} is not an OCI runtime configuration: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A bundle's `config.json` is implausibly large.
    #[error("{path} is larger than {limit} bytes: not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The Docker-compatible API failed (no socket, refused, an HTTP error).
    #[error("the container API at {socket}: {source}")]
    Api {
        /// Its socket.
        socket: PathBuf,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// The Docker-compatible API did not answer in time.
    #[error("the container API at {socket} did not answer within {after:?}")]
    ApiTimeout {
        /// Its socket.
        socket: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// A socket path that is not UTF-8 (bollard takes a `&str`).
    #[error("the container API socket {socket} is not a UTF-8 path")]
    SocketPath {
        /// The path.
        socket: PathBuf,
    },
    /// The async runtime for an API request could not start.
    #[error("cannot start an async runtime for the container API: {source}")]
    Runtime {
        /// The OS error.
        source: std::io::Error,
    },
}

/// Who a listener's owner is, container-wise. Fields a source could not give are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// The runtime that made it, when known.
    pub runtime: Option<Runtime>,
    /// The full container id.
    pub id: String,
    /// The container's name (for a pod's container, the name in the pod spec).
    pub name: String,
    /// The image, as the user or the pod spec named it.
    pub image: String,
    /// The Kubernetes pod's name.
    pub pod_name: String,
    /// The Kubernetes pod's namespace.
    pub pod_namespace: String,
    /// The Kubernetes pod's UID.
    pub pod_uid: String,
    /// The pod's QoS class (from its cgroup).
    pub qos: Option<Qos>,
    /// The user whose rootless podman runs it (`user-UID.slice` in its cgroup).
    pub rootless_user: Option<u32>,
}

/// What one source says of a container; `None` where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// The runtime.
    pub runtime: Option<Runtime>,
    /// The container's name.
    pub name: Option<String>,
    /// The image.
    pub image: Option<String>,
    /// The pod's name.
    pub pod_name: Option<String>,
    /// The pod's namespace.
    pub pod_namespace: Option<String>,
    /// The pod's UID.
    pub pod_uid: Option<String>,
}

impl ContainerIdentity {
    /// What the cgroup path alone says.
    pub fn from_cgroup(c: &CgroupContainer) -> Self {
        Self {
            runtime: c.runtime,
            id: c.id.clone(),
            pod_uid: c.pod_uid.clone().unwrap_or_default(),
            qos: c.qos,
            rootless_user: c.user.filter(|&u| u != 0),
            ..Self::default()
        }
    }

    /// Fills what is still unknown from `names`.
    pub fn merge(&mut self, names: Names) {
        fn fill(slot: &mut String, value: Option<String>) {
            if slot.is_empty() {
                if let Some(v) = value {
                    *slot = v;
                }
            }
        }
        self.runtime = self.runtime.or(names.runtime);
        fill(&mut self.name, names.name);
        fill(&mut self.image, names.image);
        fill(&mut self.pod_name, names.pod_name);
        fill(&mut self.pod_namespace, names.pod_namespace);
        fill(&mut self.pod_uid, names.pod_uid);
    }

    /// The first 12 characters of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// Whether it is a container of a Kubernetes pod.
    pub fn in_pod(&self) -> bool {
        !self.pod_name.is_empty() || !self.pod_uid.is_empty()
    }

    /// One word for people: `namespace/pod/container` for a pod's container (what is
    /// known of it), the name of a plain container, else its short id.
    pub fn display_name(&self) -> String {
        let name = if self.name.is_empty() {
            self.short_id()
        } else {
            &self.name
        };
        if self.pod_name.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{}/{name}", self.pod_namespace, self.pod_name)
        }
    }

    /// The JSON of `status --json` and `trace --json`: `runtime`, `id`, `name`, `image`,
    /// and `pod` (`name`, `namespace`, `uid`, `qos`) or null; unknown fields are null.
    pub fn to_json(&self) -> serde_json::Value {
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let pod = self.in_pod().then(|| {
            serde_json::json!({
                "name": text(&self.pod_name),
                "namespace": text(&self.pod_namespace),
                "uid": text(&self.pod_uid),
                "qos": self.qos.map(Qos::as_str),
            })
        });
        serde_json::json!({
            "runtime": self.runtime.map(Runtime::as_str),
            "id": self.id,
            "name": text(&self.name),
            "image": text(&self.image),
            "pod": pod,
        })
    }

    /// The Docker-compatible APIs that may know it: Docker's for Docker containers,
    /// podman's (the user's own, for rootless ones) for podman's, both when the runtime is
    /// unknown and nothing else named it. Containers of containerd and CRI-O have none.
    fn api_sockets(&self, config: &Config) -> Vec<PathBuf> {
        let docker = config.docker_socket.iter().cloned();
        let podman = || {
            self.rootless_user
                .map(docker::rootless_podman_socket)
                .into_iter()
                .chain(config.podman_socket.iter().cloned())
        };
        match self.runtime {
            Some(Runtime::Docker) => docker.collect(),
            Some(Runtime::Podman) => podman().collect(),
            None if self.name.is_empty() => docker.chain(podman()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Where the resolver looks, and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Docker's API socket; `None`: not asked.
    pub docker_socket: Option<PathBuf>,
    /// podman's API socket (rootful); `None`: not asked. A rootless container's user's
    /// own socket (`/run/user/UID/podman/podman.sock`) is asked first.
    pub podman_socket: Option<PathBuf>,
    /// How long one API request may take.
    pub api_timeout: Duration,
    /// When to ask a source that failed again.
    pub retry_after: Duration,
    /// How many containers the cache holds at most.
    pub capacity: usize,
}

/// `--docker-socket`'s default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// `--podman-socket`'s default.
pub const DEFAULT_PODMAN_SOCKET: &str = "/run/podman/podman.sock";
/// `--container-api-timeout-ms`'s default.
pub const DEFAULT_API_TIMEOUT_MS: u64 = 2000;

impl Default for Config {
    fn default() -> Self {
        Self {
            docker_socket: Some(DEFAULT_DOCKER_SOCKET.into()),
            podman_socket: Some(DEFAULT_PODMAN_SOCKET.into()),
            api_timeout: Duration::from_millis(DEFAULT_API_TIMEOUT_MS),
            retry_after: Duration::from_secs(30),
            capacity: 16_384,
        }
    }
}

/// A container waiting to be resolved: one of its processes, and what is known.
struct Pending {
    pid: i32,
    identity: ContainerIdentity,
    /// What to fill in last, if no source said better.
    fallback: Names,
}

/// Resolves and caches container identities for the inventory.
#[derive(Debug)]
pub struct Resolver {
    config: Config,
    cache: Cache,
    health: Health,
}

impl Resolver {
    /// A resolver with nothing cached.
    pub fn new(config: Config) -> Self {
        Self {
            cache: Cache::new(config.capacity),
            config,
            health: Health::default(),
        }
    }

    /// How many containers are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Completes the identity of every owner that runs in a container (its cgroup said
    /// so): from the cache, or from the sources for containers met for the first time (or
    /// due for another try). Then forgets the containers no owner runs in anymore.
    pub fn annotate<'a>(&mut self, owners: impl IntoIterator<Item = &'a mut Owner>) {
        let now = Instant::now();
        self.cache.begin_pass();
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        let mut waiting = Vec::new();
        for owner in owners {
            let Some(known) = owner.container.clone() else {
                continue;
            };
            match self.cache.lookup(&known.id, now) {
                Lookup::Fresh(identity) => owner.container = Some(identity),
                found => {
                    let identity = match found {
                        Lookup::Due(cached) => (*cached).clone(),
                        _ => (*known).clone(),
                    };
                    pending.entry(known.id.clone()).or_insert(Pending {
                        pid: owner.pid,
                        identity,
                        fallback: Names::default(),
                    });
                    waiting.push(owner);
                }
            }
        }
        if !pending.is_empty() {
            self.resolve(pending, now);
        }
        for owner in waiting {
            if let Some(known) = &owner.container {
                owner.container = self.cache.get(&known.id).or(owner.container.take());
            }
        }
        self.cache.end_pass();
    }

    /// Asks the sources about `pending` and caches the answers.
    fn resolve(&mut self, mut pending: BTreeMap<String, Pending>, now: Instant) {
        let mut incomplete: BTreeSet<String> = BTreeSet::new();
        for (id, p) in &mut pending {
            // Named after what the cgroup said, before the bundle says more.
            let source = bundle_source(p.identity.runtime);
            match bundle::find(p.pid, id) {
                Ok(bundle) => {
                    p.identity.merge(bundle.names());
                    p.fallback.name = bundle.fallback_name();
                    self.health.ok(&source);
                }
                // Docker's and podman's bundles name nothing the API does not.
                Err(_) if matches!(p.identity.runtime, Some(Runtime::Docker | Runtime::Podman)) => {
                }
                Err(e) => {
                    self.health.failed(&source, &e, BUNDLE_LABELS);
                    incomplete.insert(id.clone());
                }
            }
        }
        // One request per API socket for all the containers it may know.
        let mut by_socket: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (id, p) in &pending {
            for socket in p.identity.api_sockets(&self.config) {
                by_socket.entry(socket).or_default().push(id.clone());
            }
        }
        let mut named: BTreeSet<String> = BTreeSet::new();
        let mut asked: BTreeSet<String> = BTreeSet::new();
        for (socket, ids) in by_socket {
            asked.extend(ids.iter().cloned());
            let endpoint = docker::Endpoint {
                socket: socket.clone(),
                timeout: self.config.api_timeout,
            };
            let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
            let source = format!("the container API at {}", socket.display());
            match endpoint.lookup(&wanted) {
                Ok(found) => {
                    self.health.ok(&source);
                    for (id, summary) in found {
                        if let Some(p) = pending.get_mut(&id) {
                            p.identity.merge(summary.names());
                            named.insert(id);
                        }
                    }
                }
                Err(e) => self.health.failed(&source, &e, API_LABELS),
            }
        }
        // Asked, but no API knew it: try again later.
        incomplete.extend(asked.difference(&named).cloned());
        for (id, mut p) in pending {
            p.identity.merge(p.fallback);
            let retry = incomplete
                .contains(&id)
                .then(|| now + self.config.retry_after);
            self.cache.insert(p.identity, retry);
        }
    }
}

/// The labels a failing source costs, for its log line.
const BUNDLE_LABELS: &str = "container, image, pod, pod_namespace";
const API_LABELS: &str = "container, image";

/// The name of the bundle source of a runtime's containers, for the log.
fn bundle_source(runtime: Option<Runtime>) -> String {
    match runtime {
        Some(r) => format!("the OCI bundles of {r} containers"),
        None => "the OCI bundles of containers".to_owned(),
    }
}

/// Which sources failed, so that each failure and each recovery is logged once.
#[derive(Debug, Default)]
struct Health {
    failing: BTreeSet<String>,
}

impl Health {
    fn ok(&mut self, source: &str) {
        if self.failing.remove(source) {
            tracing::info!("container identity: {source} answers again");
        }
    }

    fn failed(&mut self, source: &str, error: &ContainerError, labels: &str) {
        if self.failing.insert(source.to_owned()) {
            tracing::warn!(
                "container identity: cannot use {source}: {error}; their listeners keep \
                 their container id and runtime but not {labels} (tried again at later \
                 passes; logged once until it works)"
            );
        } else {
            tracing::debug!("container identity: {source} still failing: {error}");
        }
    }
}

#[cfg(test)]
mod tests;
