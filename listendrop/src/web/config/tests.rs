//! Tests of `config`.

use super::*;

const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

fn parsed(text: &str) -> Result<WebConfig, String> {
    parse(text, Path::new("/etc/listendrop/web-config.yml")).map_err(|e| e.to_string())
}

/// The error for `text`, which must name the file.
fn error(text: &str) -> String {
    let err = parsed(text).expect_err(text);
    assert!(err.contains("/etc/listendrop/web-config.yml"), "{err}");
    err
}

#[test]
fn empty_file_and_comments_mean_plain_http_without_auth() {
    for text in ["", "\n", "# nothing\n", "---\n"] {
        let config = parsed(text).unwrap();
        assert_eq!(config.tls, None, "{text:?}");
        assert!(config.users.is_empty() && config.headers.is_empty());
    }
}

#[test]
fn every_documented_key() {
    let config = parsed(&format!(
        "tls_server_config:\n\
         \x20 cert_file: server.crt\n\
         \x20 key_file: /abs/server.key\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n\
         \x20 client_ca_file: ca.crt\n\
         \x20 min_version: TLS13\n\
         \x20 max_version: TLS13\n\
         \x20 cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n\
         \x20 prefer_server_cipher_suites: false\n\
         \x20 curve_preferences: [CurveP384, X25519, CurveP256]\n\
         \x20 client_allowed_sans: [prometheus.monitoring.svc, 10.0.0.1]\n\
         http_server_config:\n\
         \x20 http2: false\n\
         \x20 headers:\n\
         \x20   X-Frame-Options: deny\n\
         \x20   X-Content-Type-Options: nosniff\n\
         \x20   Strict-Transport-Security: max-age=31536000\n\
         \x20   Content-Security-Policy: \"\"\n\
         basic_auth_users:\n\
         \x20 prometheus: {HASH}\n\
         rate_limit:\n\
         \x20 interval: 1m30s\n\
         \x20 burst: 5\n"
    ))
    .unwrap();
    assert_eq!(
        config.rate_limit,
        Some(RateLimit {
            interval: std::time::Duration::from_secs(90),
            burst: 5
        })
    );
    let tls = config.tls.unwrap();
    assert_eq!(
        tls.client_allowed_sans,
        ["prometheus.monitoring.svc", "10.0.0.1"]
    );
    assert_eq!(
        tls.cert,
        Pem::File("/etc/listendrop/server.crt".into()),
        "relative to the file's directory"
    );
    assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
    assert_eq!(
        tls.client_ca,
        Some(Pem::File("/etc/listendrop/ca.crt".into()))
    );
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls13, TlsVersion::Tls13)
    );
    assert_eq!(
        tls.cipher_suites,
        [
            CipherSuite::EcdheRsaAes256Gcm,
            CipherSuite::EcdheEcdsaChacha20
        ]
    );
    assert!(!tls.prefer_server_cipher_suites);
    assert_eq!(tls.curves, [Curve::P384, Curve::X25519, Curve::P256]);
    assert_eq!(
        config.users.get("prometheus").map(String::as_str),
        Some(HASH)
    );
    // Sorted by name; the blank one is unset.
    assert_eq!(
        config.headers,
        [
            (
                "Strict-Transport-Security".into(),
                "max-age=31536000".into()
            ),
            ("X-Content-Type-Options".into(), "nosniff".into()),
            ("X-Frame-Options".into(), "deny".into()),
        ]
    );
}

#[test]
fn rate_limit_durations_read_as_go_reads_them() {
    let ms = std::time::Duration::from_millis;
    for (text, want) in [
        ("1s", Some(ms(1000))),
        ("100ms", Some(ms(100))),
        ("1m30s", Some(ms(90_000))),
        ("1.5h", Some(ms(5_400_000))),
        ("2h45m", Some(ms(9_900_000))),
        ("300us", Some(std::time::Duration::from_micros(300))),
        ("5µs", Some(std::time::Duration::from_micros(5))),
        ("1000000000", Some(ms(1000))), // yaml.v2: an integer is nanoseconds
        ("0", Some(ms(0))),
        ("-1s", Some(ms(0))),
        ("", None),
        ("s", None),
        ("1", Some(std::time::Duration::from_nanos(1))),
        ("1d", None),
        ("1 s", None),
        (".s", None),
    ] {
        assert_eq!(go_duration(text), want, "{text:?}");
    }
    // exporter-toolkit's own test files: interval 0 is no limiter; 1s with burst 0
    // refuses everything (the limiter then allows nothing).
    let off = parsed("rate_limit:\n  interval: 0\n  burst: 0\n").unwrap();
    assert_eq!(off.rate_limit, None);
    let none = parsed("rate_limit:\n  interval: \"1s\"\n  burst: 0\n").unwrap();
    assert_eq!(
        none.rate_limit,
        Some(RateLimit {
            interval: ms(1000),
            burst: 0
        })
    );
}

#[test]
fn defaults_and_inline_pem() {
    let config =
        parsed("tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key: k\n")
            .unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(
        tls.cert,
        Pem::Inline("-----BEGIN CERTIFICATE-----\n".into())
    );
    assert_eq!(
        format!("{:?}", tls.key),
        "Inline(..)",
        "a key is never printed"
    );
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(tls.prefer_server_cipher_suites && tls.cipher_suites.is_empty());
    assert!(tls.curves.is_empty());
    // A file wins over inline text, as in Go; an empty string is unset.
    let tls = parsed("tls_server_config:\n  cert: x\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: \"\"\n")
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.cert, Pem::File("/etc/listendrop/c.pem".into()));
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    // Basic auth without TLS is allowed (exporter-toolkit's web_config_users_noTLS).
    let config = parsed(&format!("basic_auth_users:\n  alice: {HASH}\n")).unwrap();
    assert!(config.tls.is_none() && config.users.len() == 1);
}

#[test]
fn every_client_auth_type() {
    for (name, want) in [
        ("NoClientCert", ClientAuth::NoClientCert),
        ("RequestClientCert", ClientAuth::RequestClientCert),
        ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
        ("RequireClientCert", ClientAuth::RequireAnyClientCert),
        (
            "VerifyClientCertIfGiven",
            ClientAuth::VerifyClientCertIfGiven,
        ),
        (
            "RequireAndVerifyClientCert",
            ClientAuth::RequireAndVerifyClientCert,
        ),
    ] {
        let ca = if want == ClientAuth::NoClientCert {
            ""
        } else {
            "  client_ca_file: ca.pem\n"
        };
        let tls = parsed(&format!(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: {name}\n{ca}"
        ))
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(tls.client_auth, want, "{name}");
    }
    let err =
        error("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Always\n");
    assert!(err.contains("invalid ClientAuth \"Always\""), "{err}");
    assert!(err.contains("RequireAndVerifyClientCert"), "{err}");
}

#[test]
fn inconsistent_tls_settings_are_refused_with_the_fix() {
    let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
    for (extra, needles) in [
        (
            "  client_ca_file: ca\n",
            &[
                "client_ca_file",
                "without a Client Auth Policy",
                "set client_auth_type",
            ][..],
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            &["client_auth_type", "set client_ca_file"],
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n",
            &["needs the CA"],
        ),
        (
            "  min_version: TLS11\n",
            &[
                "min_version",
                "TLS11 is not supported",
                "use TLS12 or TLS13",
            ],
        ),
        ("  max_version: TLS10\n", &["max_version", "TLS10"]),
        ("  min_version: SSL3\n", &["unknown TLS version \"SSL3\""]),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            &["above max_version"],
        ),
        (
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
            &[
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                "CBC",
                "use some of TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ],
        ),
        (
            "  cipher_suites: [TLS_INVENTED]\n",
            &["TLS_INVENTED: unknown cipher"],
        ),
        (
            "  curve_preferences: [CurveP521]\n",
            &["CurveP521", "X25519, CurveP256 or CurveP384"],
        ),
        (
            "  curve_preferences: [Curve9]\n",
            &["unknown curve \"Curve9\""],
        ),
        (
            "  client_allowed_sans: [one]\n",
            &[
                "client_allowed_sans",
                "NoClientCert",
                "no client could connect",
            ],
        ),
        (
            "  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: []\n",
            &["client_allowed_sans", "an empty list lets no client in"],
        ),
    ] {
        let err = error(&format!("{base}{extra}"));
        for needle in needles {
            assert!(err.contains(needle), "{extra}: {needle:?} not in {err}");
        }
    }
    let err = error("tls_server_config:\n  key_file: k\n");
    assert!(err.contains("missing one of cert or cert_file"), "{err}");
    let err = error("tls_server_config:\n  cert_file: \"\"\n  key_file: k\n");
    assert!(err.contains("missing one of cert or cert_file"), "{err}");
    let err = error("tls_server_config:\n  cert_file: c\n");
    assert!(err.contains("missing one of key or key_file"), "{err}");
    let err = error("tls_server_config:\n  min_version: TLS13\n");
    assert!(
        err.contains("no certificate: add cert_file and key_file"),
        "{err}"
    );
}

#[test]
fn unknown_duplicate_and_mistyped_keys_are_refused() {
    for (text, needle) in [
        (
            "tls_server_config:\n  cert_filse: server.crt\n",
            "cert_filse",
        ),
        ("tls_config:\n  cert_file: c\n", "tls_config"),
        ("http_server_config:\n  compression: true\n", "compression"),
        (
            "basic_auth_users:\n  a: x\nbasic_auth_users:\n  b: y\n",
            "duplicate",
        ),
        (
            "tls_server_config:\n  prefer_server_cipher_suites: sometimes\n",
            "line 2",
        ),
        ("tls_server_config: [1, 2]\n", "line 1"),
        ("tls_server_config:\n  cert_file: [\n", "line"),
        (
            "rate_limit:\n  interval: soon\n  burst: 1\n",
            "rate_limit.interval: \"soon\" is not a duration",
        ),
        ("rate_limit:\n  burst: -1\n", "line 2"),
        ("rate_limit:\n  every: 1s\n", "every"),
    ] {
        let err = error(text);
        assert!(err.contains(needle), "{text:?}: {needle:?} not in {err}");
    }
    assert!(error("tls_config: {}\n").contains("exporter-toolkit format"));
}

#[test]
fn users_need_bcrypt_hashes_and_headers_the_allowed_values() {
    let err = error("basic_auth_users:\n  alice: secret\n");
    assert!(
        err.contains("basic_auth_users.alice") && err.contains("not a bcrypt hash"),
        "{err}"
    );
    assert!(err.contains("htpasswd -nBC"), "{err}");
    assert!(
        !err.contains("secret\""),
        "the value is not repeated: {err}"
    );
    let err = error("http_server_config:\n  headers:\n    X-Powered-By: listendrop\n");
    assert!(
        err.contains("X-Powered-By") && err.contains("can not be configured"),
        "{err}"
    );
    let err = error("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
    assert!(err.contains("invalid value \"allow\""), "{err}");
    let err = error("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n");
    assert!(err.contains("[\"nosniff\"]"), "{err}");
    let err = error("http_server_config:\n  headers:\n    X-XSS-Protection: \"a\\nb\"\n");
    assert!(err.contains("not a valid header value"), "{err}");
}

#[test]
fn the_deploy_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/web-config.example.yml");
    let config = read(&path).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(
        tls.cert,
        Pem::File(path.parent().unwrap().join("server.crt"))
    );
    assert!(config.users.contains_key("prometheus"));
    assert_eq!(
        config.headers,
        [("X-Content-Type-Options".into(), "nosniff".into())]
    );
}

#[test]
fn a_missing_file_names_itself() {
    let err = read(Path::new("/nonexistent/web-config.yml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/web-config.yml"), "{err}");
    assert!(err.contains("No such file"), "{err}");
    assert!(err.contains("--web.config.file"), "{err}");
}
