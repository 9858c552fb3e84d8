//! The optional TOML configuration file and its place in the precedence
//! flag > environment (`LISTENDROP_*`) > file > default.
//!
//! Keys are the long option names without their dashes (`web-listen-address`,
//! `probe-kind`, ...). An unknown key, a wrong type or a syntax error is an error naming
//! the file and the line: a typo must never silently fall back to a default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context as _};
use clap::{parser::ValueSource, ArgMatches};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    bounds::{self, Bounds},
    cli::{ContainerArgs, LogFormat, ProbeArgs, RunArgs},
    probes::KindChoice,
};

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/listendrop/config.toml";

/// Everything the file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    web_listen_address: Option<SocketAddr>,
    web_config_file: Option<PathBuf>,
    web_max_connections: Option<Spanned<u64>>,
    include_netns: Option<Vec<u32>>,
    exclude_netns: Option<Vec<u32>>,
    include_ports: Option<Vec<u16>>,
    exclude_ports: Option<Vec<u16>>,
    inventory_interval_secs: Option<Spanned<u64>>,
    stale_after_secs: Option<Spanned<u64>>,
    pin_dir: Option<PathBuf>,
    no_pin: Option<bool>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    docker_socket: Option<String>,
    podman_socket: Option<String>,
    container_api_timeout_ms: Option<Spanned<u64>>,
    btf: Option<PathBuf>,
    probe_kind: Option<KindChoice>,
    max_listener_keys: Option<Spanned<u64>>,
    max_handshakes: Option<Spanned<u64>>,
    events_buffer_kib: Option<Spanned<u64>>,
    events_per_listener_per_sec: Option<Spanned<u64>>,
    episode_gap_secs: Option<Spanned<u64>>,
}

/// Applies the configuration file to `args` for every option that was neither given as
/// a flag nor in the environment (`matches` tells which). Returns the file used, if any.
pub fn apply(args: &mut RunArgs, matches: &ArgMatches) -> anyhow::Result<Option<PathBuf>> {
    let path = match &args.config {
        Some(path) => path.clone(),
        None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let file =
        parse_file(&text).map_err(|e| anyhow!("configuration file {}: {e}", path.display()))?;
    merge(args, file, &text, |id| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })
    .map_err(|e| anyhow!("configuration file {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Parses the file; errors say the line. (Public for the fuzz target; the result is
/// opaque outside this module.)
pub fn parse(text: &str) -> Result<impl std::fmt::Debug, String> {
    parse_file(text)
}

fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| line_of(text, span.start));
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        }
    })
}

/// Sets `$to` to the file's `$from` unless `$explicit($id)` says the user set the option
/// by flag or environment.
macro_rules! take {
    ($explicit:expr, $id:literal, $from:expr, $to:expr) => {
        if let Some(value) = $from {
            if !$explicit($id) {
                $to = value;
            }
        }
    };
}

/// The file's numbers: checked against the same [`Bounds`] as the flags, an error naming
/// the key's line in `text`.
struct Numbers<'a> {
    text: &'a str,
}

impl Numbers<'_> {
    fn get(
        &self,
        value: Option<Spanned<u64>>,
        bounds: &'static Bounds,
    ) -> anyhow::Result<Option<u64>> {
        value
            .map(|v| {
                let line = line_of(self.text, v.span().start);
                bounds
                    .check(*v.get_ref())
                    .map_err(|e| anyhow!("line {line}: {e}"))
            })
            .transpose()
    }

    /// A u32 option's: its bounds all fit in u32, so this never saturates.
    fn get_u32(
        &self,
        value: Option<Spanned<u64>>,
        bounds: &'static Bounds,
    ) -> anyhow::Result<Option<u32>> {
        Ok(self
            .get(value, bounds)?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

/// Copies each value the file sets into `args`, unless `explicit(option id)` says the
/// user set it by flag or environment. Numbers are checked against the same [`Bounds`] as
/// the flags; an error names the key and its line in `text`.
fn merge(
    args: &mut RunArgs,
    mut file: FileConfig,
    text: &str,
    explicit: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let numbers = Numbers { text };
    take!(
        explicit,
        "listen_address",
        file.web_listen_address.take(),
        args.listen_address
    );
    take!(
        explicit,
        "web_config_file",
        file.web_config_file.take().map(Some),
        args.web_config_file
    );
    take!(
        explicit,
        "web_max_connections",
        numbers
            .get(
                file.web_max_connections.take(),
                &bounds::WEB_MAX_CONNECTIONS
            )?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        args.web_max_connections
    );
    take!(
        explicit,
        "include_netns",
        file.include_netns.take(),
        args.include_netns
    );
    take!(
        explicit,
        "exclude_netns",
        file.exclude_netns.take(),
        args.exclude_netns
    );
    take!(
        explicit,
        "include_ports",
        file.include_ports.take(),
        args.include_ports
    );
    take!(
        explicit,
        "exclude_ports",
        file.exclude_ports.take(),
        args.exclude_ports
    );
    take!(
        explicit,
        "inventory_interval_secs",
        numbers.get(
            file.inventory_interval_secs.take(),
            &bounds::INVENTORY_INTERVAL_SECS
        )?,
        args.inventory_interval_secs
    );
    take!(
        explicit,
        "stale_after_secs",
        numbers.get(file.stale_after_secs.take(), &bounds::STALE_AFTER_SECS)?,
        args.stale_after_secs
    );
    take!(explicit, "pin_dir", file.pin_dir.take(), args.pin_dir);
    take!(explicit, "no_pin", file.no_pin.take(), args.no_pin);
    take!(explicit, "log_level", file.log_level.take(), args.log_level);
    take!(
        explicit,
        "log_format",
        file.log_format.take(),
        args.log_format
    );
    merge_containers(&mut args.containers, &mut file, &numbers, &explicit)?;
    merge_probes(&mut args.probes, file, &numbers, &explicit)
}

/// The container identity's sources (`none`: a socket off).
fn merge_containers(
    c: &mut ContainerArgs,
    file: &mut FileConfig,
    numbers: &Numbers,
    explicit: &impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let socket = |s: Option<String>| s.map(|s| PathBuf::from(if s == "none" { "" } else { &s }));
    take!(
        explicit,
        "docker_socket",
        socket(file.docker_socket.take()),
        c.docker_socket
    );
    take!(
        explicit,
        "podman_socket",
        socket(file.podman_socket.take()),
        c.podman_socket
    );
    take!(
        explicit,
        "container_api_timeout_ms",
        numbers.get(
            file.container_api_timeout_ms.take(),
            &bounds::CONTAINER_API_TIMEOUT_MS
        )?,
        c.container_api_timeout_ms
    );
    Ok(())
}

/// What the kernel side is loaded with.
fn merge_probes(
    p: &mut ProbeArgs,
    file: FileConfig,
    numbers: &Numbers,
    explicit: &impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    take!(explicit, "btf", file.btf, p.btf);
    take!(explicit, "probe_kind", file.probe_kind, p.probe_kind);
    take!(
        explicit,
        "max_listener_keys",
        numbers.get_u32(file.max_listener_keys, &bounds::MAX_LISTENER_KEYS)?,
        p.max_listener_keys
    );
    take!(
        explicit,
        "max_handshakes",
        numbers.get_u32(file.max_handshakes, &bounds::MAX_HANDSHAKES)?,
        p.max_handshakes
    );
    take!(
        explicit,
        "events_buffer_kib",
        numbers.get_u32(file.events_buffer_kib, &bounds::EVENTS_BUFFER_KIB)?,
        p.events_buffer_kib
    );
    take!(
        explicit,
        "events_per_listener_per_sec",
        numbers.get_u32(file.events_per_listener_per_sec, &bounds::EVENTS_PER_SEC)?,
        p.events_per_listener_per_sec
    );
    take!(
        explicit,
        "episode_gap_secs",
        numbers.get(file.episode_gap_secs, &bounds::EPISODE_GAP_SECS)?,
        p.episode_gap_secs
    );
    Ok(())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::Cli;

    /// Parses `argv` and applies `file`, as main does. (Environment precedence is tested
    /// on the real binary in tests/cli.rs, where the environment is the child's own.)
    fn resolve(argv: &[&str], file: &str) -> anyhow::Result<RunArgs> {
        let dir = std::env::temp_dir().join(format!(
            "listendrop-config-{}-{:x}",
            std::process::id(),
            file.len() * 31 + argv.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, file).unwrap();
        let mut full = vec!["listendrop", "--config", path.to_str().unwrap()];
        full.extend_from_slice(argv);
        let matches = Cli::command().try_get_matches_from(full)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let result = apply(&mut cli.run, &matches);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        Ok(cli.run)
    }

    #[test]
    fn file_sets_what_flags_do_not() {
        let run = resolve(
            &["--probe-kind", "kprobe"],
            "web-listen-address = \"0.0.0.0:9999\"\nprobe-kind = \"fentry\"\nexclude-ports = [22]\n",
        )
        .unwrap();
        assert_eq!(run.listen_address, "0.0.0.0:9999".parse().unwrap());
        assert_eq!(run.probes.probe_kind, KindChoice::Kprobe, "flag beats file");
        assert_eq!(run.exclude_ports, [22]);
    }

    #[test]
    fn container_sources_from_the_file_unless_a_flag_says() {
        let file = "docker-socket = \"none\"\npodman-socket = \"/run/p.sock\"\n\
                    container-api-timeout-ms = 300\n";
        let run = resolve(&[], file).unwrap();
        let config = run.containers.config();
        assert_eq!(config.docker_socket, None);
        assert_eq!(config.podman_socket, Some(PathBuf::from("/run/p.sock")));
        assert_eq!(config.api_timeout, std::time::Duration::from_millis(300));
        let run = resolve(&["--podman-socket", "/x.sock"], file).unwrap();
        assert_eq!(run.containers.podman_socket, PathBuf::from("/x.sock"));
        let err = resolve(&[], "\ncontainer-api-timeout-ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("from 10 to 30000"),
            "{err}"
        );
    }

    #[test]
    fn web_config_file_from_the_file_unless_a_flag_says() {
        let file = "web-config-file = \"/etc/listendrop/web-config.yml\"\n";
        let run = resolve(&[], file).unwrap();
        assert_eq!(
            run.web_config_file,
            Some(PathBuf::from("/etc/listendrop/web-config.yml"))
        );
        let run = resolve(&["--web.config.file", "/x.yml"], file).unwrap();
        assert_eq!(run.web_config_file, Some(PathBuf::from("/x.yml")));
        assert_eq!(resolve(&[], "").unwrap().web_config_file, None);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_line() {
        let err = resolve(&[], "log-level = \"info\"\nweb-listen-adress = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("web-listen-adress"),
            "{err}"
        );
        let err = resolve(&[], "\n\nmax-handshakes = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = resolve(&[], "probe-kind = [\n").unwrap_err().to_string();
        assert!(err.contains("line"), "{err}");
        let err = resolve(&[], "events-buffer-kib = 100\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("power of two"), "{err}");
        // The same sentence as the flag's, with the line: the bound is defined once.
        let err = resolve(&[], "log-level = \"info\"\n\nepisode-gap-secs = 0\n")
            .unwrap_err()
            .to_string();
        let flag = crate::bounds::EPISODE_GAP_SECS
            .check(0)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(&format!("line 3: {flag}")), "{err}");
        // A value too large for seconds in nanoseconds used to overflow; refused now.
        let err = resolve(&[], "episode-gap-secs = 18446744073709551\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 1 to 86400"), "{err}");
        let err = resolve(&[], "web-max-connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("web-max-connections = 0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn the_connection_cap_comes_from_the_file_unless_a_flag_sets_it() {
        let run = resolve(&[], "web-max-connections = 64\n").unwrap();
        assert_eq!(run.web_max_connections, 64);
        let run = resolve(
            &["--web.max-connections", "8"],
            "web-max-connections = 64\n",
        )
        .unwrap();
        assert_eq!(run.web_max_connections, 8);
        assert_eq!(
            resolve(&[], "").unwrap().web_max_connections,
            crate::http::DEFAULT_MAX_CONNECTIONS
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let matches = Cli::command()
            .try_get_matches_from(["listendrop", "--config", "/nonexistent/listendrop.toml"])
            .unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let err = apply(&mut cli.run, &matches).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/listendrop.toml"), "{err}");
    }
}
