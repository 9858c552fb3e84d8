//! podman (Debian's, 4.3) with storage, run state and configuration of its own: runc, the
//! cgroupfs manager, explicit ulimits (these machines lack CAP_SYS_RESOURCE), and its
//! Docker-compatible API served on a socket of its own. Dropping it removes every
//! container and image it made, stops the API server (by pid) and deletes its storage.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{busybox_context, unique, Scratch};
use crate::netns::run;

const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#;

/// Held while a container starts (podman makes `/libpod_parent` and its `conmon` cgroup)
/// and while an installation removes them: one test never removes what another is about
/// to use.
static PARENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One podman installation of the test's own.
pub struct Podman {
    dir: Scratch,
    service: Option<Child>,
    socket: PathBuf,
}

/// A container it runs.
#[derive(Clone, Debug)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its main process, in the host's PID namespace.
    pub pid: i32,
}

impl Podman {
    /// A fresh installation under /tmp (nothing started yet).
    pub fn new(tag: &str) -> Self {
        let dir = Scratch::new(tag);
        std::fs::write(dir.path().join("containers.conf"), CONTAINERS_CONF).unwrap();
        let socket = dir.path().join("podman.sock");
        Self {
            dir,
            service: None,
            socket,
        }
    }

    /// `podman` with this installation's storage, run state and configuration.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            // Not /etc/cni/net.d: its lock file would stay behind.
            .arg("--network-config-dir")
            .arg(d.join("networks"))
            .args(["--storage-driver", "overlay", "--log-level", "error"]);
        cmd
    }

    /// Its scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Builds `localhost/NAME:1` from busybox alone, running `cmd`; returns its name.
    pub fn build_busybox(&self, name: &str, cmd: &[&str]) -> String {
        let image = format!("localhost/{name}:1");
        let context = busybox_context(&self.dir.path().join(name), cmd);
        run(self
            .command()
            .args(["build", "-q", "--network", "none", "-t", &image])
            .arg(&context));
        image
    }

    /// The busybox httpd image (`httpd -f -p 8080`).
    pub fn build_httpd(&self) -> String {
        self.build_busybox(
            "ldt-httpd",
            &["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/"],
        )
    }

    /// `podman save` of `image` into `file` (`oci-archive` for containerd).
    pub fn save(&self, image: &str, format: &str, file: &Path) {
        run(self
            .command()
            .args(["save", "--format", format, "-o"])
            .arg(file)
            .arg(image));
    }

    /// Runs a detached container named `name` (unique) with extra `args` before the
    /// image, and waits for its process.
    pub fn run(&self, tag: &str, args: &[&str], image: &str) -> Container {
        let name = unique(tag);
        let _cgroups = PARENT.lock().unwrap_or_else(|e| e.into_inner());
        let id = run(self
            .command()
            .args(["run", "-d", "--name", &name])
            .args(args)
            .arg(image))
        .trim()
        .to_owned();
        let pid: i32 = run(self
            .command()
            .args(["inspect", "-f", "{{.State.Pid}}", &id]))
        .trim()
        .parse()
        .expect("podman inspect printed a pid");
        Container { id, name, pid }
    }

    /// Runs `image` (networkless) as the container `container` of Kubernetes pod
    /// `namespace/name` with `uid`, the way cri-dockerd runs a pod's containers: under the
    /// kubelet-like cgroup parent `/kubepods/burstable/pod<uid>` (returned: runc leaves
    /// it behind), with the pod's `io.kubernetes.*` labels.
    pub fn run_in_pod(
        &self,
        image: &str,
        (namespace, name, uid): (&str, &str, &str),
        container: &str,
    ) -> (Container, String) {
        let parent = format!("/kubepods/burstable/pod{uid}");
        let labels = [
            format!("io.kubernetes.pod.name={name}"),
            format!("io.kubernetes.pod.namespace={namespace}"),
            format!("io.kubernetes.pod.uid={uid}"),
            format!("io.kubernetes.container.name={container}"),
        ];
        let mut args = vec!["--network", "none", "--cgroup-parent", &parent];
        for label in &labels {
            args.extend(["--label", label]);
        }
        (self.run(container, &args, image), parent)
    }

    /// Serves the Docker-compatible API on [`Podman::socket`] until dropped.
    pub fn serve_api(&mut self) -> &Path {
        if self.service.is_none() {
            let child = self
                .command()
                .args(["system", "service", "--time=0"])
                .arg(format!("unix://{}", self.socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn podman system service");
            self.service = Some(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "podman system service did not listen within 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        &self.socket
    }

    /// The API socket's path (served once [`Podman::serve_api`] ran).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Removes container `id` at once.
    pub fn remove(&self, id: &str) {
        let _ = self
            .command()
            .args(["rm", "-f", "-t", "0", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(self.command().args(["rm", "-a", "-f", "-t", "0"]));
        quiet(self.command().args(["pod", "rm", "-a", "-f"]));
        quiet(self.command().args(["rmi", "-a", "-f"]));
        if let Some(mut service) = self.service.take() {
            // Only our API server, by pid.
            let _ = service.kill();
            let _ = service.wait();
        }
        // The cgroupfs manager's parent (and conmon's cgroup in it), unless another
        // installation's containers still use it.
        let _cgroups = PARENT.lock().unwrap_or_else(|e| e.into_inner());
        super::cgroups::remove_everywhere("/libpod_parent", 0);
        // The storage is removed with the scratch directory (mounts first).
    }
}

/// A podman with the busybox httpd image built and its API served, a pod UID whose cgroup
/// is removed afterwards, and a daemon that names containers through that API. Fields
/// drop in order: the daemon stops first, the cgroup goes last.
pub struct WithDaemon {
    /// The daemon, asking `podman`'s API (`--docker-socket none`).
    pub daemon: crate::daemon::Daemon,
    /// The httpd image.
    pub image: String,
    /// The podman installation.
    pub podman: Podman,
    /// A fresh pod UID for `Podman::run_in_pod`.
    pub uid: String,
    _leftover: super::cgroups::Leftover,
}

impl WithDaemon {
    /// Sets it all up; `tag` names the installation.
    pub fn start(tag: &str) -> Self {
        let uid = super::uid();
        let leftover = super::cgroups::Leftover {
            path: format!("/kubepods/burstable/pod{uid}"),
            parents: 2,
        };
        let mut podman = Podman::new(tag);
        let image = podman.build_httpd();
        let socket = podman.serve_api().to_string_lossy().into_owned();
        let daemon = crate::daemon::Daemon::start(&[
            "--inventory-interval-secs",
            "1",
            "--podman-socket",
            &socket,
            "--docker-socket",
            "none",
            // Generous: podman's API server is slow on a loaded machine.
            "--container-api-timeout-ms",
            "10000",
        ]);
        Self {
            daemon,
            image,
            podman,
            uid,
            _leftover: leftover,
        }
    }
}
