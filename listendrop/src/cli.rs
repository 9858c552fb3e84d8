//! Command-line interface. The doc comments are the `--help` text. Every daemon option
//! can also come from a `LISTENDROP_*` environment variable or the TOML file (`--config`);
//! precedence: flag > environment > file > default (see `config.rs`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use listendrop_common::{
    Reason, DEFAULT_EPISODE_GAP_SECS, DEFAULT_EVENTS_BYTES, DEFAULT_EVENTS_PER_SEC,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_LISTENER_KEYS,
};

use crate::{
    bounds, http,
    inventory::containers::{
        self, DEFAULT_API_TIMEOUT_MS, DEFAULT_DOCKER_SOCKET, DEFAULT_PODMAN_SOCKET,
    },
    probes::KindChoice,
};

/// Which listening TCP sockets drop connections, why, and from whom.
///
/// listendrop attaches eBPF programs to the kernel's handshake drop points, counts every
/// dropped handshake per listening socket and reason in the kernel, logs each one with the
/// client's address, and serves the totals as Prometheus metrics. Without a command it
/// runs the daemon.
///
/// Needs root (or CAP_BPF + CAP_PERFMON for counting, CAP_SYS_ADMIN and CAP_SYS_PTRACE for
/// the listener inventory), kernel BTF (/sys/kernel/btf/vmlinux) and a mounted tracefs.
/// `listendrop check` says what this kernel allows.
#[derive(Debug, Parser)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: run the daemon).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Daemon options, when no command is given.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: count drops, log each one, serve /metrics (the default).
    Run(RunArgs),
    /// Print what this kernel supports (BTF, each hook and the kind chosen, each drop
    /// class observable or not, capabilities) and exit 0 if listendrop can count drops
    /// here, 1 if not. The first thing to run on a new host.
    Check(CheckArgs),
    /// A table of every listening socket of every network namespace: owner, accept queue
    /// (now/limit), SYN queue, drops (total, per second over the last minute, per reason)
    /// and a diagnosis. Works without the daemon (sock_diag); richer when it runs.
    Status(StatusArgs),
    /// Detach and remove everything a pinned daemon left in bpffs (stop the daemon first).
    Unpin(UnpinArgs),
    /// Live stream of dropped handshakes: time, listener, owner, client, reason, queue.
    /// Loads its own probes (root), with or without the daemon running. On Ctrl-C, SIGTERM
    /// or --count it prints what is still pending, then one line on stderr: events shown,
    /// and every loss with its fix, or "nothing lost".
    Trace(TraceArgs),
}

/// Options of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the daemon serves its metrics.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "LISTENDROP_WEB_LISTEN_ADDRESS",
        default_value = "127.0.0.1:9477"
    )]
    pub daemon: SocketAddr,
    /// The daemon's base URL instead of --daemon, for one behind --web.config.file, e.g.
    /// https://node1:9477 (then --ca-file, and the credentials its web configuration asks
    /// for: --basic-auth-file, --client-cert).
    #[arg(long, value_name = "URL", env = "LISTENDROP_DAEMON_URL")]
    pub daemon_url: Option<String>,
    /// The CA (PEM) that signed the daemon's certificate, for an https:// --daemon-url.
    #[arg(long, value_name = "FILE", env = "LISTENDROP_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A file holding `user:password` for a daemon with basic_auth_users (a password is
    /// never a flag). Without it, the environment variable LISTENDROP_BASIC_AUTH
    /// (`user:password`) is used when set.
    #[arg(long, value_name = "FILE", env = "LISTENDROP_BASIC_AUTH_FILE")]
    pub basic_auth_file: Option<PathBuf>,
    /// Client certificate (PEM; its key too, unless --client-key) for a daemon that asks
    /// for one (client_auth_type).
    #[arg(long, value_name = "FILE", env = "LISTENDROP_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "LISTENDROP_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Do not ask the daemon, even if it runs.
    #[arg(long)]
    pub no_daemon: bool,
    /// Only these network namespaces (inode numbers).
    #[arg(long, value_name = "INODE", value_delimiter = ',')]
    pub netns: Vec<u32>,
    /// Only these ports.
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Where container and pod names come from.
    #[command(flatten)]
    pub containers: ContainerArgs,
}

/// Where the names of a listener owner's container and pod come from (the daemon,
/// `status` and `trace`). The cgroup path and the OCI bundle (Kubernetes pods of
/// containerd and CRI-O) need no option; the Docker-compatible APIs name plain Docker and
/// podman containers and their image.
#[derive(Debug, Clone, Args)]
pub struct ContainerArgs {
    /// Docker Engine's API socket, asked for the name and image of Docker containers (and
    /// the pod of cri-dockerd's). `none`: never asked. An absent socket costs those labels
    /// only, and is logged once.
    #[arg(long, value_name = "PATH", env = "LISTENDROP_DOCKER_SOCKET",
          default_value = DEFAULT_DOCKER_SOCKET, value_parser = socket_path)]
    pub docker_socket: PathBuf,

    /// podman's Docker-compatible API socket (`podman system service`, the podman.socket
    /// unit), asked for the name and image of rootful podman containers; for a rootless
    /// one, its user's /run/user/UID/podman/podman.sock is asked first. `none`: never
    /// asked.
    #[arg(long, value_name = "PATH", env = "LISTENDROP_PODMAN_SOCKET",
          default_value = DEFAULT_PODMAN_SOCKET, value_parser = socket_path)]
    pub podman_socket: PathBuf,

    /// How long one request to those APIs may take: an engine that hangs delays an
    /// inventory pass by at most this (and is asked again 30 s later).
    #[arg(long, value_name = "MS", env = "LISTENDROP_CONTAINER_API_TIMEOUT_MS",
          default_value_t = DEFAULT_API_TIMEOUT_MS,
          value_parser = |s: &str| bounds::CONTAINER_API_TIMEOUT_MS.parse::<u64>(s))]
    pub container_api_timeout_ms: u64,
}

/// A socket option's value: a path, or `none` (also an empty value) for none.
fn socket_path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(if value == "none" { "" } else { value }))
}

impl ContainerArgs {
    /// The resolver's configuration (a socket of `none`: not asked).
    pub fn config(&self) -> containers::Config {
        let socket = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        containers::Config {
            docker_socket: socket(&self.docker_socket),
            podman_socket: socket(&self.podman_socket),
            api_timeout: std::time::Duration::from_millis(self.container_api_timeout_ms),
            ..containers::Config::default()
        }
    }
}

/// Options of `unpin`.
#[derive(Debug, Clone, Args)]
pub struct UnpinArgs {
    /// The pin directory the daemon used.
    #[arg(
        long,
        value_name = "DIR",
        env = "LISTENDROP_PIN_DIR",
        default_value = "/sys/fs/bpf/listendrop"
    )]
    pub pin_dir: PathBuf,
}

/// Options of `trace`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// One JSON object per line instead of columns.
    #[arg(long)]
    pub json: bool,
    /// Only these listener ports.
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Only these network namespaces (inode numbers).
    #[arg(long, value_name = "INODE", value_delimiter = ',')]
    pub netns: Vec<u32>,
    /// Only these reasons (comma-separated).
    #[arg(long, value_name = "REASON", value_delimiter = ',', value_enum)]
    pub reason: Vec<ReasonArg>,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Where container and pod names come from.
    #[command(flatten)]
    pub containers: ContainerArgs,
    /// Kernel-side options.
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Options of the kernel side, shared by every command that loads the programs.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The kernel's BTF, where listendrop reads struct offsets and enum values.
    #[arg(
        long,
        value_name = "FILE",
        env = "LISTENDROP_BTF",
        default_value = "/sys/kernel/btf/vmlinux"
    )]
    pub btf: PathBuf,

    /// Which kind of kernel hook to use: `auto` picks, per hook, the cheapest this kernel
    /// allows (kernel functions: fentry, then kprobe; tracepoints: tp_btf, then raw_tp,
    /// then the classic tracepoint); the others force one kind, for tests (a hook that
    /// cannot be attached that way is not attached, and the start-up log says so).
    #[arg(long, value_enum, value_name = "KIND", env = "LISTENDROP_PROBE_KIND",
          default_value_t = KindChoice::Auto)]
    pub probe_kind: KindChoice,

    /// Capacity of the in-kernel counter map, in (listener, reason) pairs. Drops of pairs
    /// beyond it are counted in listendrop_bpf_errors_total{kind="map_full"}.
    #[arg(long, value_name = "N", env = "LISTENDROP_MAX_LISTENER_KEYS",
          default_value_t = DEFAULT_MAX_LISTENER_KEYS,
          value_parser = |s: &str| bounds::MAX_LISTENER_KEYS.parse::<u32>(s))]
    pub max_listener_keys: u32,

    /// How many recently dropped handshakes the kernel remembers (LRU) to tell new
    /// handshakes from retransmits.
    #[arg(long, value_name = "N", env = "LISTENDROP_MAX_HANDSHAKES",
          default_value_t = DEFAULT_MAX_HANDSHAKES,
          value_parser = |s: &str| bounds::MAX_HANDSHAKES.parse::<u32>(s))]
    pub max_handshakes: u32,

    /// Size of the per-handshake event ring buffer in KiB (a power of two, at least 4).
    /// Events that do not fit are counted in listendrop_events_lost_total.
    #[arg(long, value_name = "KIB", env = "LISTENDROP_EVENTS_BUFFER_KIB",
          default_value_t = DEFAULT_EVENTS_BYTES / 1024,
          value_parser = |s: &str| bounds::EVENTS_BUFFER_KIB.parse::<u32>(s))]
    pub events_buffer_kib: u32,

    /// Per-handshake events (log lines) per listener per second; the rest are counted in
    /// listendrop_events_lost_total{cause="rate_limited"}. Counters are always exact.
    #[arg(long, value_name = "N", env = "LISTENDROP_EVENTS_PER_LISTENER_PER_SEC",
          default_value_t = DEFAULT_EVENTS_PER_SEC,
          value_parser = |s: &str| bounds::EVENTS_PER_SEC.parse::<u32>(s))]
    pub events_per_listener_per_sec: u32,

    /// A client 4-tuple dropped again within this many seconds of its last drop is the
    /// same handshake (a retransmit); after it, a new one (listendrop_dropped_handshakes_total).
    #[arg(long, value_name = "SECS", env = "LISTENDROP_EPISODE_GAP_SECS",
          default_value_t = DEFAULT_EPISODE_GAP_SECS,
          value_parser = |s: &str| bounds::EPISODE_GAP_SECS.parse::<u64>(s))]
    pub episode_gap_secs: u64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// key=value text (without timestamps under systemd: journald adds its own).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of the daemon.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML file with any of the options below (keys are the long option names without
    /// the dashes, e.g. `web-listen-address = "0.0.0.0:9477"`). Default:
    /// /etc/listendrop/config.toml when it exists.
    #[arg(long, value_name = "FILE", env = "LISTENDROP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address and port to serve /metrics and /healthz on. Port 0 picks a free port (the
    /// log says which).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR:PORT",
        env = "LISTENDROP_WEB_LISTEN_ADDRESS",
        default_value = "127.0.0.1:9477"
    )]
    pub listen_address: SocketAddr,

    /// TLS, client certificates and basic auth for /metrics and /healthz: a YAML file in
    /// the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users,
    /// http_server_config), read again when it or a file it names changes. Default: plain
    /// HTTP for everyone.
    #[arg(
        long = "web.config.file",
        value_name = "FILE",
        env = "LISTENDROP_WEB_CONFIG_FILE"
    )]
    pub web_config_file: Option<PathBuf>,

    /// HTTP connections served at once (scrapes, health checks and clients that have not
    /// yet sent their request); one more is answered 503 and closed, so clients that
    /// open connections and never send a request cannot exhaust the daemon's memory or
    /// file descriptors. Each connection must send its headers within 5 s.
    #[arg(
        long = "web.max-connections",
        value_name = "N",
        env = "LISTENDROP_WEB_MAX_CONNECTIONS",
        default_value_t = http::DEFAULT_MAX_CONNECTIONS,
        value_parser = |s: &str| bounds::WEB_MAX_CONNECTIONS.parse::<usize>(s)
    )]
    pub web_max_connections: usize,

    /// Only report listeners in these network namespaces (inode numbers, as in
    /// `ls -iL /proc/PID/ns/net`; comma-separated). Default: all.
    #[arg(
        long,
        value_name = "INODE,...",
        env = "LISTENDROP_INCLUDE_NETNS",
        value_delimiter = ','
    )]
    pub include_netns: Vec<u32>,

    /// Never report listeners in these network namespaces.
    #[arg(
        long,
        value_name = "INODE,...",
        env = "LISTENDROP_EXCLUDE_NETNS",
        value_delimiter = ','
    )]
    pub exclude_netns: Vec<u32>,

    /// Only report listeners on these ports (comma-separated). Default: all.
    #[arg(
        long,
        value_name = "PORT,...",
        env = "LISTENDROP_INCLUDE_PORTS",
        value_delimiter = ','
    )]
    pub include_ports: Vec<u16>,

    /// Never report listeners on these ports.
    #[arg(
        long,
        value_name = "PORT,...",
        env = "LISTENDROP_EXCLUDE_PORTS",
        value_delimiter = ','
    )]
    pub exclude_ports: Vec<u16>,

    /// Seconds between two passes of the listener inventory (queues, owners, sysctls and
    /// kernel counters of every namespace, read with sock_diag and /proc).
    #[arg(long, value_name = "SECS", env = "LISTENDROP_INVENTORY_INTERVAL_SECS", default_value_t = 5,
          value_parser = |s: &str| bounds::INVENTORY_INTERVAL_SECS.parse::<u64>(s))]
    pub inventory_interval_secs: u64,

    /// A listener gone from the system for this long has its series removed from /metrics
    /// and its in-kernel counters freed (bounded memory under listener churn).
    #[arg(long, value_name = "SECS", env = "LISTENDROP_STALE_AFTER_SECS", default_value_t = 600,
          value_parser = |s: &str| bounds::STALE_AFTER_SECS.parse::<u64>(s))]
    pub stale_after_secs: u64,

    /// bpffs directory where the hooks and counters are pinned, so that a restart or an
    /// upgrade continues the same counters and misses no drop in between.
    #[arg(
        long,
        value_name = "DIR",
        env = "LISTENDROP_PIN_DIR",
        default_value = "/sys/fs/bpf/listendrop"
    )]
    pub pin_dir: PathBuf,

    /// Pin nothing: everything is detached and freed when the daemon exits (ephemeral use,
    /// tests, `cargo xtask run`).
    #[arg(long, env = "LISTENDROP_NO_PIN")]
    pub no_pin: bool,

    /// Log filter: error, warn, info (every dropped handshake), debug, or a tracing
    /// directive such as `listendrop=debug`. RUST_LOG overrides it.
    #[arg(
        long,
        value_name = "FILTER",
        env = "LISTENDROP_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT", env = "LISTENDROP_LOG_FORMAT",
          default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where container and pod names come from.
    #[command(flatten)]
    pub containers: ContainerArgs,

    /// Kernel-side options.
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Options of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Kernel-side options (the same as the daemon's, to check what it would do).
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// A [`Reason`] as a command-line value (its label), so that an unknown one is refused
/// with the list of valid ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonArg(pub Reason);

/// Every reason, as command-line values.
const REASON_ARGS: [ReasonArg; Reason::ALL.len()] = {
    let mut out = [ReasonArg(Reason::ALL[0]); Reason::ALL.len()];
    let mut i = 0;
    while i < Reason::ALL.len() {
        out[i] = ReasonArg(Reason::ALL[i]);
        i += 1;
    }
    out
};

impl ValueEnum for ReasonArg {
    fn value_variants<'a>() -> &'a [Self] {
        &REASON_ARGS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["listendrop"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.listen_address, "127.0.0.1:9477".parse().unwrap());
        assert_eq!(cli.run.probes.btf, PathBuf::from("/sys/kernel/btf/vmlinux"));
        assert_eq!(
            cli.run.probes.events_buffer_kib * 1024,
            DEFAULT_EVENTS_BYTES
        );
        assert_eq!(cli.run.probes.probe_kind, KindChoice::Auto);
    }

    #[test]
    fn container_sources() {
        let cli = Cli::try_parse_from(["listendrop"]).unwrap();
        let config = cli.run.containers.config();
        assert_eq!(
            config.docker_socket.as_deref(),
            Some(std::path::Path::new("/var/run/docker.sock"))
        );
        assert_eq!(
            config.podman_socket.as_deref(),
            Some(std::path::Path::new("/run/podman/podman.sock"))
        );
        assert_eq!(config.api_timeout, std::time::Duration::from_secs(2));
        let cli = Cli::try_parse_from([
            "listendrop",
            "--docker-socket",
            "none",
            "--podman-socket",
            "/tmp/p.sock",
            "--container-api-timeout-ms",
            "250",
        ])
        .unwrap();
        let config = cli.run.containers.config();
        assert_eq!(config.docker_socket, None);
        assert_eq!(config.podman_socket, Some(PathBuf::from("/tmp/p.sock")));
        assert_eq!(config.api_timeout, std::time::Duration::from_millis(250));
        assert!(Cli::try_parse_from(["listendrop", "--container-api-timeout-ms", "5"]).is_err());
        // status and trace ask the same sources.
        let cli = Cli::try_parse_from(["listendrop", "status", "--docker-socket", "none"]).unwrap();
        let Some(Command::Status(status)) = cli.command else {
            panic!()
        };
        assert_eq!(status.containers.config().docker_socket, None);
    }

    #[test]
    fn run_and_check_commands() {
        let cli = Cli::try_parse_from(["listendrop", "run", "--probe-kind", "kprobe"]).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.probes.probe_kind, KindChoice::Kprobe);
        let cli = Cli::try_parse_from(["listendrop", "check", "--btf", "/x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check(_))));
        let cli = Cli::try_parse_from(["listendrop", "--exclude-ports", "22,80"]).unwrap();
        assert_eq!(cli.run.exclude_ports, [22, 80]);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["listendrop", "--web.listen-address", "nope"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--events-buffer-kib", "100"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--max-listener-keys", "0"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--probe-kind", "uprobe"]).is_err());
        assert!(Cli::try_parse_from(["listendrop", "--frobnicate"]).is_err());
    }
}
