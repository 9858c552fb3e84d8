//! What a process's cgroup path says about the container it runs in: the runtime, the
//! container id, and for a Kubernetes pod its UID and QoS class. A pure parser of the
//! paths `/proc/PID/cgroup` shows (read in the host's PID namespace), for every layout the
//! common setups produce:
//!
//! | setup | path (v2 line, or each v1 hierarchy's) |
//! |---|---|
//! | kubelet, cgroupfs driver (containerd, CRI-O, cri-dockerd) | `/kubepods/burstable/pod<uid>/<id>`, `…/pod<uid>/crio-<id>`; Guaranteed: `/kubepods/pod<uid>/<id>` |
//! | kubelet, systemd driver | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope` (`crio-`, `docker-`) |
//! | systemd-style path given to a cgroupfs runc | `/kubepods-burstable-pod<uid_>.slice:cri-containerd:<id>` |
//! | kind and other nested kubelets | any prefix (`/docker/<node>/kubelet/kubepods/…`, `…/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/…`) |
//! | Docker | `/docker/<id>`, `/system.slice/docker-<id>.scope` |
//! | podman, rootful | `/libpod_parent/libpod-<id>` (in a pod `/libpod_parent/<pod>/libpod-<id>`), `/machine.slice/libpod-<id>.scope[/container]`, `libpod-payload-<id>` (`--cgroups=split`) |
//! | podman, rootless | `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope` |
//! | containerd without kubelet | `/default/<id>` (ctr), `/system.slice/nerdctl-<id>.scope` |
//!
//! A daemon in a container of its own sees other containers' paths relative to its cgroup
//! namespace (`/../../../besteffort/pod<uid>/<id>`, where `kubepods` is among what `..`
//! hides): such a path is taken as inside `kubepods`, the rest still names the pod and the
//! container. The innermost container wins (a kind node is a
//! Docker container; the pods inside it are what listens). Conmon's own cgroups
//! (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not containers.

use std::fmt;

/// The runtime that made a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    /// containerd (its CRI plugin for Kubernetes, `ctr`, nerdctl).
    Containerd,
    /// CRI-O.
    CriO,
    /// Docker (dockerd, which runs its containers through containerd).
    Docker,
    /// podman, rootful or rootless.
    Podman,
}

impl Runtime {
    /// The label value: `containerd`, `cri-o`, `docker`, `podman`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes pod's QoS class, from where kubelet put its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `kubepods/burstable`.
    Burstable,
    /// Under `kubepods/besteffort`.
    BestEffort,
}

impl Qos {
    /// The label value, spelt as Kubernetes spells `status.qosClass`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// What a cgroup path says about the container of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupContainer {
    /// The runtime, when the path names it (kubelet's cgroupfs layout does not).
    pub runtime: Option<Runtime>,
    /// The container id (64 hex digits for every runtime but `ctr`, which takes any).
    pub id: String,
    /// The pod's UID, with dashes, for a container of a Kubernetes pod.
    pub pod_uid: Option<String>,
    /// The pod's QoS class.
    pub qos: Option<Qos>,
    /// The user of a rootless podman container (`user-UID.slice`), whose API socket is
    /// that user's.
    pub user: Option<u32>,
}

/// The first container found in `paths` (the unified hierarchy's first, then each v1
/// hierarchy's: on a hybrid host they usually agree, but a v1 controller the runtime did
/// not use can show the parent's path).
pub fn parse_any<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<CgroupContainer> {
    paths.into_iter().find_map(parse)
}

/// The container `path` names, if any; `None` for host processes (and for paths no
/// runtime makes).
pub fn parse(path: &str) -> Option<CgroupContainer> {
    // Seen from a child cgroup namespace, a path starts with `..` and kubelet's
    // `kubepods` directory may be among the hidden components.
    let relative = path.trim_start_matches('/').starts_with("..");
    let mut pod = PodScope {
        kubepods: relative,
        ..PodScope::default()
    };
    let mut user = None;
    let mut found: Option<CgroupContainer> = None;
    let mut previous = "";
    let components = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..");
    for (index, component) in components.enumerate() {
        if let Some(uid) = user_slice(component) {
            user = Some(uid);
        }
        let matched = match component.split_once(':') {
            // `<slice>:<prefix>:<id>`: a systemd-style cgroupsPath taken literally.
            Some((slice, rest)) => {
                pod.enter(slice);
                colon_form(rest)
            }
            None => container_component(component, &pod, previous, index),
        };
        match matched {
            Some((runtime, id)) => {
                found = Some(CgroupContainer {
                    runtime,
                    id: id.to_owned(),
                    pod_uid: pod.uid.clone(),
                    qos: pod.uid.as_ref().map(|_| pod.qos.unwrap_or(Qos::Guaranteed)),
                    user,
                });
                pod = PodScope::default();
            }
            None if !component.contains(':') => pod.enter(component),
            None => {}
        }
        previous = component;
    }
    found
}

/// Where the walk is with respect to kubelet's hierarchy.
#[derive(Clone, Debug, Default)]
struct PodScope {
    /// Inside `kubepods` (cgroupfs) or a `kubepods` slice.
    kubepods: bool,
    qos: Option<Qos>,
    uid: Option<String>,
    /// The component just read was the pod's: the next one is a container.
    at_pod: bool,
}

impl PodScope {
    /// Takes one component that is not a container.
    fn enter(&mut self, component: &str) {
        let was_at_pod = std::mem::replace(&mut self.at_pod, false);
        if let Some(name) = component.strip_suffix(".slice") {
            if let Some(rest) = kubepods_rest(name) {
                self.systemd_slice(rest);
                return;
            }
        }
        if component == "kubepods" {
            *self = Self {
                kubepods: true,
                ..Self::default()
            };
        } else if self.kubepods && self.uid.is_none() && !was_at_pod {
            match component {
                "besteffort" => self.qos = Some(Qos::BestEffort),
                "burstable" => self.qos = Some(Qos::Burstable),
                _ => {
                    if let Some(uid) = component.strip_prefix("pod").and_then(pod_uid) {
                        self.uid = Some(uid);
                        self.at_pod = true;
                    }
                }
            }
        }
    }

    /// `kubepods`, `kubepods-burstable`, `kubepods-burstable-pod<uid_>`, `kubepods-pod<uid_>`
    /// (whatever precedes `kubepods`, such as kind's `kubelet-`, already cut off).
    fn systemd_slice(&mut self, rest: &str) {
        if rest.is_empty() {
            *self = Self {
                kubepods: true,
                ..Self::default()
            };
            return;
        }
        self.kubepods = true;
        let rest = rest.trim_start_matches('-');
        let (qos, pod) = match rest.split_once('-') {
            Some((qos, pod)) => (Some(qos), Some(pod)),
            None if rest.starts_with("pod") => (None, Some(rest)),
            None => (Some(rest), None),
        };
        match qos {
            Some("besteffort") => self.qos = Some(Qos::BestEffort),
            Some("burstable") => self.qos = Some(Qos::Burstable),
            _ => {}
        }
        if let Some(uid) = pod.and_then(|p| p.strip_prefix("pod")).and_then(pod_uid) {
            self.uid = Some(uid);
            self.at_pod = true;
        }
    }
}

/// What follows `kubepods` in a slice name (`""`, `-burstable`, `-pod…`), when the name is
/// kubelet's: `kubepods…` or `<prefix>-kubepods…` (kind's `kubelet-kubepods…`).
fn kubepods_rest(name: &str) -> Option<&str> {
    let at = name.rfind("kubepods")?;
    if at > 0 && !name[..at].ends_with('-') {
        return None;
    }
    let rest = &name[at + "kubepods".len()..];
    (rest.is_empty() || rest.starts_with('-')).then_some(rest)
}

/// A pod UID as kubelet writes it in a cgroup name (dashes, or underscores under systemd;
/// 32 hex digits without dashes for static pods), normalised to dashes.
fn pod_uid(text: &str) -> Option<String> {
    let uid = text.replace('_', "-");
    let hex = uid.chars().filter(char::is_ascii_hexdigit).count();
    let ok = (32..=36).contains(&uid.len())
        && hex == 32
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    ok.then_some(uid)
}

/// `user-1000.slice` → 1000.
fn user_slice(component: &str) -> Option<u32> {
    component
        .strip_prefix("user-")?
        .strip_suffix(".slice")?
        .parse()
        .ok()
}

/// Runtimes by the prefix of their container cgroups (systemd scopes and cgroupfs
/// directories alike). Conmon's cgroups come first: they belong to no container process.
const PREFIXES: &[(&str, Option<Runtime>)] = &[
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("crio-", Some(Runtime::CriO)),
    ("docker-", Some(Runtime::Docker)),
    ("libpod-payload-", Some(Runtime::Podman)),
    ("libpod-", Some(Runtime::Podman)),
    ("nerdctl-", Some(Runtime::Containerd)),
];

type Match<'a> = (Option<Runtime>, &'a str);

/// The container a component names, given the pod scope and the component before it.
fn container_component<'a>(
    component: &'a str,
    pod: &PodScope,
    previous: &str,
    index: usize,
) -> Option<Match<'a>> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            return match runtime {
                Some(runtime) if is_hex64(id) => Some((Some(*runtime), id)),
                _ => None,
            };
        }
    }
    if component.ends_with(".scope") || component.ends_with(".slice") {
        return None;
    }
    if pod.at_pod && is_container_id(component) {
        // kubelet's cgroupfs layout: the container id alone, whatever the runtime.
        return Some((None, component));
    }
    match previous {
        "docker" if is_hex64(component) => Some((Some(Runtime::Docker), component)),
        // ctr's default: the namespace, then the id (any containerd identifier).
        "default" if index == 1 && is_container_id(component) => {
            Some((Some(Runtime::Containerd), component))
        }
        // A bare id at the top (a runtime's cgroup root of "/").
        _ if index == 0 && is_hex64(component) => Some((None, component)),
        _ => None,
    }
}

/// `cri-containerd:<id>`, `crio:<id>`, `docker:<id>` after a slice name.
fn colon_form(rest: &str) -> Option<Match<'_>> {
    let (prefix, id) = rest.split_once(':')?;
    let runtime = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    is_hex64(id).then_some((Some(runtime), id))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A containerd identifier (`[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*`, at most 76 bytes).
fn is_container_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 76
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests;
