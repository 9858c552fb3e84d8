//! Names of a container from its OCI bundle: the `config.json` the runtime wrote, whose
//! annotations carry a Kubernetes pod's names (containerd's CRI plugin: `io.kubernetes.cri.*`;
//! CRI-O: `io.kubernetes.pod.*`, `io.kubernetes.container.name`, `io.kubernetes.cri-o.*`).
//!
//! The bundle is found through the container's own processes, whatever state directory
//! the runtime was given: walking up the owner's parents to
//! - a `containerd-shim-runc-v2` (comm `containerd-shim`), whose working directory is the
//!   bundle of the task it was started for, `<state>/io.containerd.runtime.v2.task/<ns>/<id>`
//!   (one shim serves a whole pod: the container's bundle is the sibling named by its id);
//! - a `conmon` (podman, CRI-O), whose `-b` argument is the bundle and `-c` the container
//!   id (`-n` the container's name, for podman).
//!
//! Paths are opened through `/proc/<shim>/cwd` and `/proc/<conmon>/root`, so they resolve in
//! the runtime's mount namespace even when listendrop runs in a container (with the host's
//! PID namespace). When no such parent is found (a process re-parented elsewhere), the
//! usual state directories are tried, under `/proc/1/root`.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use procfs::process::Process;

use super::{ContainerError, Names, Runtime};

/// How far up the parents a shim or conmon is looked for.
const MAX_DEPTH: usize = 64;

/// A `config.json` larger than this is not read (they are tens of KiB).
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// State directories tried (under `/proc/1/root`) when no shim or conmon is found:
/// `{id}` is the container id, `{ns}` each containerd namespace found there.
const KNOWN_BUNDLES: &[&str] = &[
    "run/containerd/io.containerd.runtime.v2.task/{ns}/{id}",
    "run/containers/storage/overlay-containers/{id}/userdata",
    "var/lib/containers/storage/overlay-containers/{id}/userdata",
    "var/run/containers/storage/overlay-containers/{id}/userdata",
];

/// A bundle found for a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    /// `config.json` as opened (through /proc).
    pub config: PathBuf,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Who made it, as far as where it was found says (a containerd task of namespace
    /// `moby` is Docker's; a conmon's container is podman's or CRI-O's, by annotation).
    pub runtime: Option<Runtime>,
    /// The container's name on conmon's command line (podman's own name for it).
    pub conmon_name: Option<String>,
}

impl Bundle {
    /// The names the bundle's annotations give.
    pub fn names(&self) -> Names {
        let mut names = annotation_names(&self.annotations);
        names.runtime = names.runtime.or(self.runtime);
        names
    }

    /// The name to use when no better source gives one: a podman container's own name
    /// on its conmon's command line (the API's `io.kubernetes.container.name` label, when
    /// it has one, is better).
    pub fn fallback_name(&self) -> Option<String> {
        (self.names().runtime == Some(Runtime::Podman))
            .then(|| self.conmon_name.clone())
            .flatten()
    }
}

/// The bundle of container `id`, which process `pid` belongs to.
pub fn find(pid: i32, id: &str) -> Result<Bundle, ContainerError> {
    let mut current = pid;
    for _ in 0..MAX_DEPTH {
        let Ok(stat) = Process::new(current).and_then(|p| p.stat()) else {
            break;
        };
        match stat.comm.as_str() {
            // comm is cut at 15 bytes: containerd-shim-runc-v2, -runsc-v1, ...
            comm if comm.starts_with("containerd-shim") => {
                if let Some(bundle) = from_shim(current, id)? {
                    return Ok(bundle);
                }
            }
            "conmon" => {
                if let Some(bundle) = from_conmon(current, id)? {
                    return Ok(bundle);
                }
            }
            _ => {}
        }
        if stat.ppid <= 1 {
            break;
        }
        current = stat.ppid;
    }
    from_known_dirs(id)
}

/// The bundle of `id` among the tasks of the shim `shim` (its working directory is the
/// bundle it was started for; the pod's other containers are its siblings).
fn from_shim(shim: i32, id: &str) -> Result<Option<Bundle>, ContainerError> {
    let cwd = PathBuf::from(format!("/proc/{shim}/cwd"));
    let Ok(target) = std::fs::read_link(&cwd) else {
        return Ok(None);
    };
    let namespace = target
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let dir = if target.file_name().and_then(|n| n.to_str()) == Some(id) {
        cwd
    } else {
        cwd.join("..").join(id)
    };
    let config = dir.join("config.json");
    if !config.exists() {
        return Ok(None);
    }
    let annotations = read_annotations(&config)?;
    Ok(Some(Bundle {
        config,
        annotations,
        runtime: Some(task_namespace_runtime(namespace)),
        conmon_name: None,
    }))
}

/// Docker runs its containers in containerd namespace `moby`.
fn task_namespace_runtime(namespace: &str) -> Runtime {
    if namespace == "moby" {
        Runtime::Docker
    } else {
        Runtime::Containerd
    }
}

/// The bundle of `id` if `conmon` monitors it.
fn from_conmon(conmon: i32, id: &str) -> Result<Option<Bundle>, ContainerError> {
    let Ok(cmdline) = Process::new(conmon).and_then(|p| p.cmdline()) else {
        return Ok(None);
    };
    let args = ConmonArgs::parse(&cmdline);
    if args.cid.as_deref() != Some(id) {
        return Ok(None);
    }
    let Some(bundle) = args.bundle else {
        return Ok(None);
    };
    let root = PathBuf::from(format!("/proc/{conmon}/root"));
    let config = root
        .join(bundle.strip_prefix("/").unwrap_or(&bundle))
        .join("config.json");
    let annotations = read_annotations(&config)?;
    Ok(Some(Bundle {
        config,
        annotations,
        runtime: None,
        conmon_name: args.name,
    }))
}

/// What conmon's command line says (`-c ID -n NAME -b DIR`, long forms `--cid`, `--name`,
/// `--bundle`, with `=` or a separate value).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConmonArgs {
    /// `-c`: the container id.
    pub cid: Option<String>,
    /// `-n`: the container's name.
    pub name: Option<String>,
    /// `-b`: the bundle directory.
    pub bundle: Option<PathBuf>,
}

impl ConmonArgs {
    /// Parses conmon's argv.
    pub fn parse(argv: &[String]) -> Self {
        let mut out = Self::default();
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let slot = match key {
                "-c" | "--cid" => &mut out.cid,
                "-n" | "--name" => &mut out.name,
                "-b" | "--bundle" => {
                    let value = inline.or_else(|| args.next().cloned());
                    out.bundle = value.map(PathBuf::from);
                    continue;
                }
                _ => continue,
            };
            *slot = inline.or_else(|| args.next().cloned());
        }
        out
    }
}

/// The usual state directories of containerd, CRI-O and podman, under the host's root.
fn from_known_dirs(id: &str) -> Result<Bundle, ContainerError> {
    let root = Path::new("/proc/1/root");
    let task_root = root.join("run/containerd/io.containerd.runtime.v2.task");
    let namespaces: Vec<String> = std::fs::read_dir(&task_root)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for pattern in KNOWN_BUNDLES {
        let each_ns: Vec<&str> = if pattern.contains("{ns}") {
            namespaces.iter().map(String::as_str).collect()
        } else {
            vec![""]
        };
        for ns in each_ns {
            let dir = root.join(pattern.replace("{ns}", ns).replace("{id}", id));
            let config = dir.join("config.json");
            if config.exists() {
                let runtime = pattern.contains("{ns}").then(|| task_namespace_runtime(ns));
                return Ok(Bundle {
                    annotations: read_annotations(&config)?,
                    config,
                    runtime,
                    conmon_name: None,
                });
            }
        }
    }
    Err(ContainerError::NoBundle { id: id.to_owned() })
}

/// The annotations of an OCI runtime configuration file.
pub fn read_annotations(config: &Path) -> Result<BTreeMap<String, String>, ContainerError> {
    let read = |source| ContainerError::Read {
        path: config.to_owned(),
        source,
    };
    let file = std::fs::File::open(config).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ContainerError::TooLarge {
            path: config.to_owned(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    parse_annotations(&bytes).map_err(|source| ContainerError::Format {
        path: config.to_owned(),
        source,
    })
}

/// The `annotations` of a `config.json` (everything else is skipped).
pub fn parse_annotations(bytes: &[u8]) -> Result<BTreeMap<String, String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Spec>(bytes).map(|s| s.annotations)
}

/// The names that annotations give, for whichever runtime wrote them.
pub fn annotation_names(a: &BTreeMap<String, String>) -> Names {
    let get = |key: &str| a.get(key).filter(|v| !v.is_empty()).cloned();
    if a.contains_key("io.kubernetes.cri.container-type") {
        // containerd's CRI plugin.
        let sandbox = get("io.kubernetes.cri.container-type").as_deref() == Some("sandbox");
        return Names {
            runtime: Some(Runtime::Containerd),
            name: if sandbox {
                Some("POD".to_owned())
            } else {
                get("io.kubernetes.cri.container-name")
            },
            image: get("io.kubernetes.cri.image-name")
                .or_else(|| get("io.kubernetes.cri.podsandbox.image-name")),
            pod_name: get("io.kubernetes.cri.sandbox-name"),
            pod_namespace: get("io.kubernetes.cri.sandbox-namespace"),
            pod_uid: get("io.kubernetes.cri.sandbox-uid"),
        };
    }
    let manager = get("io.container.manager");
    let runtime = match manager.as_deref() {
        Some("libpod") => Some(Runtime::Podman),
        Some("cri-o") => Some(Runtime::CriO),
        _ if a.contains_key("io.kubernetes.cri-o.ContainerType") => Some(Runtime::CriO),
        _ => None,
    };
    Names {
        runtime,
        name: get("io.kubernetes.container.name"),
        // The image as the pod spec names it (`io.kubernetes.cri-o.Image` is its id).
        image: get("io.kubernetes.cri-o.ImageName"),
        pod_name: get("io.kubernetes.pod.name"),
        pod_namespace: get("io.kubernetes.pod.namespace"),
        pod_uid: get("io.kubernetes.pod.uid"),
    }
}

#[cfg(test)]
mod tests;
