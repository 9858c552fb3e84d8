//! `deploy/config.example.toml`: every option of `listendrop --help`, at its default, and
//! accepted by the real daemon.

use std::{collections::BTreeMap, process::Command};

use crate::{
    support::{daemon::binary, daemon::Daemon, require_root},
    tools,
};

/// Options of `listendrop --help` that are not settings: name → default (`None` when the
/// help shows none).
fn help_options() -> BTreeMap<String, Option<String>> {
    let out = tools::output(Command::new(binary()).arg("--help"));
    assert!(out.status.success(), "{}", tools::text(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    let mut options = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let option = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.split_once(", --").map(|(_, rest)| rest))
            // Option lines are indented 2 to 6 columns, their help text 10.
            .filter(|_| (2..=6).contains(&(line.len() - trimmed.len())));
        if let Some(rest) = option {
            let name = rest.split([' ', '=']).next().unwrap().to_owned();
            options.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(rest)) = (&current, trimmed.strip_prefix("[default: ")) {
            options.insert(name.clone(), Some(rest.trim_end_matches(']').to_owned()));
        }
    }
    for meta in ["config", "help", "version"] {
        assert!(
            options.remove(meta).is_some(),
            "--{meta} missing from --help"
        );
    }
    options
}

/// A TOML value as the help text prints a default.
fn as_default(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(a) if a.is_empty() => None,
        other => panic!("unexpected value {other:?}"),
    }
}

#[test]
fn config_example_sets_every_option_to_its_default() {
    let text = std::fs::read_to_string(tools::deploy("config.example.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).expect("valid TOML");
    let options = help_options();
    assert!(options.len() >= 10, "parsed too few options: {options:?}");
    // An option without a default that is not a flag (a file to name) is shown commented
    // out, with an example value.
    let commented: BTreeMap<String, toml::Value> = text
        .lines()
        .filter_map(|l| {
            let entry: toml::Table = toml::from_str(l.strip_prefix("# ")?).ok()?;
            let (key, value) = entry.into_iter().next()?;
            let option = options.keys().any(|o| o.replace('.', "-") == key);
            option.then_some((key, value))
        })
        .collect();
    let mut keys: Vec<_> = table.keys().chain(commented.keys()).cloned().collect();
    keys.sort();
    let want: Vec<_> = options.keys().map(|o| o.replace('.', "-")).collect();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert_eq!(keys, sorted_want, "keys vs `listendrop --help` options");
    for (option, default) in &options {
        let key = option.replace('.', "-");
        if let Some(example) = commented.get(&key) {
            assert!(
                default.is_none(),
                "{key} has a default: set it, uncommented"
            );
            assert!(example.is_str(), "{key}: a commented example names a file");
            let at = text.find(&format!("\n# {key} = ")).unwrap();
            assert!(text[..at]
                .lines()
                .next_back()
                .unwrap_or("")
                .starts_with('#'));
            continue;
        }
        let value = &table[&key];
        // A flag (no default in the help) is off by default.
        let flag_off = default.is_none() && value.as_bool() == Some(false);
        assert!(
            flag_off || as_default(value) == *default,
            "{key} = {value:?}: the example must show the default {default:?}"
        );
        // Each key has a comment right above it.
        let at = text.find(&format!("\n{key} = ")).unwrap();
        let above = text[..at].lines().next_back().unwrap_or("");
        assert!(above.starts_with('#'), "{key} has no comment");
    }
}

#[test]
fn config_example_starts_the_daemon() {
    if !require_root("config_example_starts_the_daemon") {
        return;
    }
    let path = tools::deploy("config.example.toml");
    // Daemon::start passes --web.listen-address 127.0.0.1:0, which beats the file.
    let daemon = Daemon::start(&["--config", path.to_str().unwrap()]);
    let lines = daemon.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("configuration from") && l.contains("config.example.toml")),
        "{lines:#?}"
    );
    // Whatever this kernel allows, the example's defaults attach something.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("listendrop::session: attached ")),
        "{lines:#?}"
    );
    assert_eq!(daemon.get("/healthz").0, 200);
    assert_eq!(daemon.get("/metrics").0, 200);
    assert!(daemon.stop().success());
}
