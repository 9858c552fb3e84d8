//! Bad input: each is a one-line error that names the fix, and a non-zero exit. These run
//! as any user.

use listendrop_testsupport as support;

use std::{net::TcpListener, process::Command};

use support::daemon::{binary, run_to_exit, Failure};

fn assert_one_line_error(f: &Failure, needles: &[&str]) {
    assert_ne!(f.code, Some(0), "{}", f.stderr);
    let errors: Vec<_> = f.stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{}", f.stderr);
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "missing {needle:?} in {:?}",
            errors[0]
        );
    }
}

#[test]
fn unknown_flag_is_rejected_with_usage() {
    let f = run_to_exit(Command::new(binary()).arg("--frobnicate"));
    assert_eq!(f.code, Some(2), "{}", f.stderr);
    assert!(
        f.stderr.contains("unexpected argument '--frobnicate'"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("--help"), "{}", f.stderr);
    assert_eq!(f.stderr.trim().lines().count(), 1, "{}", f.stderr);
    // A near miss gets clap's suggestion, on the same line.
    let f = run_to_exit(Command::new(binary()).arg("--pin-di"));
    assert_eq!(f.code, Some(2), "{}", f.stderr);
    assert_eq!(f.stderr.trim().lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("--pin-dir"), "{}", f.stderr);
}

#[test]
fn address_in_use_names_the_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let f = run_to_exit(Command::new(binary()).args(["--web.listen-address", &addr]));
    assert_one_line_error(&f, &[&addr, "already in use", "--web.listen-address"]);
}

#[test]
fn missing_btf_names_the_kernel_option_and_flag() {
    let f = run_to_exit(Command::new(binary()).args([
        "--web.listen-address",
        "127.0.0.1:0",
        "--btf",
        "/nonexistent/vmlinux",
    ]));
    assert_one_line_error(
        &f,
        &["/nonexistent/vmlinux", "CONFIG_DEBUG_INFO_BTF", "--btf"],
    );
}

/// The binary as a user without capabilities: as root, become nobody (changing uid away
/// from 0 clears the effective capabilities); otherwise we already are one.
fn unprivileged() -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        cmd.arg(binary());
        cmd
    } else {
        Command::new(binary())
    }
}

#[test]
fn without_privileges_names_the_capabilities_and_the_fix() {
    let mut cmd = unprivileged();
    cmd.args(["--web.listen-address", "127.0.0.1:0"]);
    let f = run_to_exit(&mut cmd);
    assert_one_line_error(&f, &["CAP_BPF", "CAP_PERFMON", "root", "systemd"]);
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--web.listen-address",
        "--btf",
        "--max-listener-keys",
        "--events-buffer-kib",
        "--log-level",
    ] {
        assert!(
            help.contains(option),
            "{option} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[default: 127.0.0.1:9477]"), "{help}");
}

/// A port that is taken for as long as the returned listener lives.
fn taken() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn config_file(tag: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("listendrop-cli-{}-{tag}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn flag_beats_environment_beats_file() {
    // The address each source names is taken, so the daemon stops at once and its error
    // says which source won.
    let (_a, file_addr) = taken();
    let (_b, env_addr) = taken();
    let (_c, flag_addr) = taken();
    let path = config_file("prec", &format!("web-listen-address = \"{file_addr}\"\n"));
    let base = || {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&path)
            .env_remove("LISTENDROP_WEB_LISTEN_ADDRESS");
        cmd
    };
    let f = run_to_exit(&mut base());
    assert_one_line_error(&f, &[&file_addr]);
    let f = run_to_exit(base().env("LISTENDROP_WEB_LISTEN_ADDRESS", &env_addr));
    assert_one_line_error(&f, &[&env_addr]);
    let f = run_to_exit(
        base()
            .env("LISTENDROP_WEB_LISTEN_ADDRESS", &env_addr)
            .args(["--web.listen-address", &flag_addr]),
    );
    assert_one_line_error(&f, &[&flag_addr]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_config_file_names_the_file_and_line() {
    let path = config_file("bad", "log-level = \"info\"\nprobe-kind = \"uprobe\"\n");
    let f = run_to_exit(Command::new(binary()).arg("--config").arg(&path));
    assert_one_line_error(&f, &[path.to_str().unwrap(), "line 2", "uprobe"]);
    let _ = std::fs::remove_file(&path);
    let f = run_to_exit(Command::new(binary()).args(["--config", "/nonexistent/listendrop.toml"]));
    assert_one_line_error(&f, &["/nonexistent/listendrop.toml"]);
}

#[test]
fn check_without_privileges_says_so_and_fails() {
    let mut cmd = unprivileged();
    let out = cmd.arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("privileges  [--]") && text.contains("CAP_BPF"),
        "{text}"
    );
    assert!(text.contains("cannot load"), "{text}");
}

/// An out-of-range number is refused with the same sentence whether it comes from a flag,
/// the environment or the configuration file (which also names the line).
#[test]
fn out_of_range_is_the_same_error_from_flag_environment_and_file() {
    let sentence = "episode-gap-secs = 0 is out of range: episode-gap-secs takes a whole \
                    number (seconds) from 1 to 86400";
    let f = run_to_exit(Command::new(binary()).args(["--episode-gap-secs", "0"]));
    assert_eq!(f.code, Some(2), "{}", f.stderr);
    assert_one_line_error(&f, &[sentence]);
    let f = run_to_exit(
        Command::new(binary())
            .args(["--web.listen-address", "127.0.0.1:0"])
            .env("LISTENDROP_EPISODE_GAP_SECS", "0"),
    );
    assert_eq!(f.code, Some(2), "{}", f.stderr);
    assert_one_line_error(&f, &[sentence]);
    let dir = std::env::temp_dir().join(format!("listendrop-cli-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(&file, "# comment\nepisode-gap-secs = 0\n").unwrap();
    let f = run_to_exit(Command::new(binary()).args([
        "--web.listen-address",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
    ]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_one_line_error(&f, &[file.to_str().unwrap(), "line 2", sentence]);
}

/// A filter naming an unknown reason is refused with the valid ones (it used to start and
/// wait forever for events that cannot exist).
#[test]
fn unknown_reason_filter_lists_the_valid_ones() {
    let f = run_to_exit(Command::new(binary()).args(["trace", "--reason", "nope"]));
    assert_eq!(f.code, Some(2), "{}", f.stderr);
    assert_one_line_error(
        &f,
        &[
            "'nope'",
            "ack_accept_queue_full",
            "syn_queue_full",
            "synack_retransmit",
        ],
    );
}
