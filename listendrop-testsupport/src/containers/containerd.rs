//! containerd (Debian's, 1.6) started by the test with a configuration, root, state and
//! socket of its own, and Kubernetes pods made through its CRI plugin the way a kubelet
//! makes them: a pod sandbox with a cgroup parent and a log directory, on a pod network
//! (CNI bridge of the test's own), then a container in it. Dropping it removes the pods,
//! stops containerd (by pid), and deletes the bridge, the mounts and the state.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{cgroups, unique, Scratch};
use crate::netns::run;

/// The CRI namespace of containerd.
const K8S_NAMESPACE: &str = "k8s.io";

/// A containerd of the test's own.
pub struct Containerd {
    dir: Scratch,
    child: Child,
    socket: PathBuf,
    bridge: String,
    runtime: tokio::runtime::Runtime,
    cri: RuntimeServiceClient<Channel>,
    pods: Vec<Pod>,
}

/// A pod sandbox made through CRI.
#[derive(Clone, Debug)]
pub struct Pod {
    /// The sandbox id.
    pub id: String,
    /// Its metadata name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID.
    pub uid: String,
    /// The cgroup parent kubelet would give it.
    pub cgroup_parent: String,
    containers: Vec<String>,
}

impl Containerd {
    /// Starts containerd with `sandbox_image` as the pods' pause image (already imported
    /// or to be imported with [`Containerd::import`] before the first pod).
    pub fn start(tag: &str, sandbox_image: &str) -> Self {
        let dir = Scratch::new(tag);
        let d = dir.path();
        let socket = d.join("containerd.sock");
        // A bridge name of at most 15 bytes, unique to this process.
        let n = unique("");
        let bridge = format!("ldt{}", &n[n.len().saturating_sub(11)..].replace('-', ""));
        let octet = std::process::id() % 200 + 20;
        write_config(d, &socket, sandbox_image, &bridge, octet);
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cri = runtime.block_on(connect(&socket, d));
        Self {
            dir,
            child,
            socket,
            bridge,
            runtime,
            cri,
            pods: Vec::new(),
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Imports an OCI archive (`podman save --format oci-archive`) into the CRI namespace.
    pub fn import(&self, archive: &Path) {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", K8S_NAMESPACE, "images", "import"])
            .arg(archive));
    }

    /// Runs a pod sandbox as kubelet does for pod `namespace/name` with `uid`, under the
    /// cgroup parent of its QoS class (`besteffort`, `burstable`, or `` for Guaranteed).
    pub fn run_pod(&mut self, name: &str, namespace: &str, uid: &str, qos: &str) -> Pod {
        let cgroup_parent = if qos.is_empty() {
            format!("/kubepods/pod{uid}")
        } else {
            format!("/kubepods/{qos}/pod{uid}")
        };
        let logs = self.dir.path().join("pods").join(uid);
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: logs.to_string_lossy().into_owned(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    namespace.to_owned(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), uid.to_owned()),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let mut cri = self.cri.clone();
        let id = self
            .runtime
            .block_on(cri.run_pod_sandbox(request))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()))
            .into_inner()
            .pod_sandbox_id;
        let pod = Pod {
            id,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: uid.to_owned(),
            cgroup_parent,
            containers: Vec::new(),
        };
        self.pods.push(pod.clone());
        pod
    }

    /// Creates and starts container `name` of `image` in `pod`, as kubelet does; returns
    /// its id.
    pub fn run_container(&mut self, pod: &Pod, name: &str, image: &str) -> String {
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: pod.cgroup_parent.clone(),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..ImageSpec::default()
            }),
            log_path: format!("{name}/0.log"),
            labels: HashMap::from([
                ("io.kubernetes.container.name".to_owned(), name.to_owned()),
                ("io.kubernetes.pod.name".to_owned(), pod.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    pod.namespace.clone(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), pod.uid.clone()),
            ]),
            ..ContainerConfig::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let mut cri = self.cri.clone();
        let id = self
            .runtime
            .block_on(cri.create_container(request))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log()))
            .into_inner()
            .container_id;
        self.runtime
            .block_on(cri.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.log()));
        if let Some(p) = self.pods.iter_mut().find(|p| p.id == pod.id) {
            p.containers.push(id.clone());
        }
        id
    }

    /// Stops and removes `pod` with its containers, as kubelet does when it is deleted.
    pub fn remove_pod(&mut self, pod_id: &str) {
        let Some(at) = self.pods.iter().position(|p| p.id == pod_id) else {
            return;
        };
        let pod = self.pods.remove(at);
        let mut cri = self.cri.clone();
        self.runtime.block_on(async {
            for id in &pod.containers {
                let _ = cri
                    .stop_container(StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    })
                    .await;
                let _ = cri
                    .remove_container(RemoveContainerRequest {
                        container_id: id.clone(),
                    })
                    .await;
            }
            let _ = cri
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await;
            let _ = cri
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await;
        });
        // runc removes the containers' cgroups, not the pod's parent it made.
        cgroups::remove_everywhere(&pod.cgroup_parent, 3);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids: Vec<String> = self.pods.iter().map(|p| p.id.clone()).collect();
        for id in ids {
            self.remove_pod(&id);
        }
        // Only our containerd, by pid (its shims exit with their tasks).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // libcni's result cache (its default, which containerd 1.6 does not let us move):
        // emptied by the pods' removal, removed unless something else uses it.
        let _ = std::fs::remove_dir("/var/lib/cni/results");
        let _ = std::fs::remove_dir("/var/lib/cni");
        // containerd 1.6 puts its shims' sockets in /run/containerd/s whatever its state
        // directory: gone with the shims, the directories stay unless removed.
        for dir in ["/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(dir);
        }
        // The scratch directory unmounts what is left under it, then goes.
    }
}

/// containerd's configuration (root, state, sockets, CRI with runc, a CNI bridge of the
/// test's own).
fn write_config(d: &Path, socket: &Path, sandbox_image: &str, bridge: &str, octet: u32) {
    let cni = d.join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    std::fs::write(
        cni.join("10-ldt.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "{bridge}", "plugins": [{{
  "type": "bridge", "bridge": "{bridge}", "isGateway": false, "ipMasq": false,
  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.250.{octet}.0/24"}}]],
           "dataDir": "{ipam}"}}}}]}}"#,
            ipam = d.join("ipam").display()
        ),
    )
    .unwrap();
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # These machines lack CAP_SYS_RESOURCE: no lowering of oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        root = d.join("root").display(),
        state = d.join("state").display(),
        socket = socket.display(),
        cni = cni.display(),
        opt = d.join("opt").display(),
        runc = d.join("runc").display(),
    );
    std::fs::write(d.join("config.toml"), config).unwrap();
}

/// A CRI client over containerd's socket, once it answers.
async fn connect(socket: &Path, dir: &Path) -> RuntimeServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = socket.to_owned();
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        if let Ok(channel) = channel {
            let mut client = RuntimeServiceClient::new(channel);
            if client.version(VersionRequest::default()).await.is_ok() {
                return client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "containerd's CRI did not answer within 30 s:\n{}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
