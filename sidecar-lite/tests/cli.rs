//! The command line: `check` validates and prints the effective config, naming the line and
//! field of each error; `certs` writes a dev CA and workload certificates.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

use std::{path::PathBuf, process::Command};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar-lite"))
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sidecar-lite-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check(test: &str, text: &str) -> (bool, String, String) {
    check_with(test, text, &[])
}

fn check_with(test: &str, text: &str, flags: &[&str]) -> (bool, String, String) {
    let dir = temp_dir(test);
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, text).unwrap();
    let output = bin()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .args(flags)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_effective_config_with_defaults_filled_in() {
    let (ok, stdout, stderr) = check(
        "good",
        "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:15001\"\nendpoints = [\"127.0.0.1:8080\"]\n",
    );
    assert!(ok, "{stderr}");
    for default in [
        "listen = \"127.0.0.1:15000\"",
        "attempts = 3",
        "on = [\n",
        "\"gateway-error\"",
        "max_concurrent_requests = 1024",
        "timeout = \"15s\"",
        "ratio = 0.2",
    ] {
        assert!(
            stdout.contains(default),
            "missing {default:?} in:\n{stdout}"
        );
    }
    assert!(stderr.ends_with(": ok\n"), "{stderr}");
}

#[test]
fn check_names_the_line_and_field_of_each_error() {
    let text = "\
[admin]
listen = \"127.0.0.1:15000\"

[[outbound]]
name = \"orders\"
listen = \"127.0.0.1:15001\"
endpoints = [\"127.0.0.1:8080\"]

[outbound.retry]
attempts = 0

[outbound.breaker]
failure_rate = 1.5
";
    let (ok, _, stderr) = check("semantic", text);
    assert!(!ok);
    assert!(
        stderr.contains("line 10: `outbound[0].retry.attempts`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 13: `outbound[0].breaker.failure_rate`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
}

#[test]
fn check_reports_syntax_errors_and_unknown_keys_with_their_line() {
    let (ok, _, stderr) = check(
        "unknown",
        "[admin]\nlisten = \"127.0.0.1:15000\"\nlisen = 1\n",
    );
    assert!(!ok);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("unknown field `lisen`"), "{stderr}");

    let (ok, _, stderr) = check(
        "duration",
        "[[outbound]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nendpoints = [\"127.0.0.1:2\"]\ntimeout = \"-2s\"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains("`-2s`"), "{stderr}");

    let (ok, _, stderr) = check("missing", "[inbound]\nlisten = \"127.0.0.1:1\"\n");
    assert!(!ok);
    assert!(stderr.contains("missing field `app`"), "{stderr}");
}

#[test]
fn check_names_bad_discovered_endpoints() {
    let route = |endpoints: &str| {
        format!("[[outbound]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nendpoints = [{endpoints}]\n")
    };
    let (ok, _, stderr) = check("dns-port", &route("\"dns:payments.shop.svc\""));
    assert!(!ok);
    assert!(
        stderr
            .contains("line 4: `endpoints`: \"dns:payments.shop.svc\" needs a port: dns:NAME:PORT"),
        "{stderr}"
    );

    let (ok, _, stderr) = check(
        "file-missing",
        &route("\"file:/nonexistent/endpoints.txt\""),
    );
    assert!(!ok);
    assert!(
        stderr.contains("line 4: `outbound[0].endpoints`: \"file:/nonexistent/endpoints.txt\": cannot read the file"),
        "{stderr}"
    );

    let dir = temp_dir("file-good");
    let file = dir.join("endpoints.txt");
    std::fs::write(&file, "127.0.0.1:8080\n").unwrap();
    let (ok, stdout, stderr) = check(
        "file-good",
        &format!(
            "[discovery]\nfile_poll = \"2s\"\n{}",
            route(&format!("\"file:{}\"", file.display()))
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("file_poll = \"2s\""), "{stdout}");
    assert!(stdout.contains("dns_refresh = \"5s\""), "{stdout}");
}

#[test]
fn check_requires_an_identity_for_mtls() {
    let (ok, _, stderr) = check(
        "mtls",
        "[inbound]\nlisten = \"127.0.0.1:15006\"\napp = \"127.0.0.1:8080\"\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains("`inbound.mtls`: needs an [identity] section"),
        "{stderr}"
    );
}

#[test]
fn an_outbound_listener_off_loopback_needs_an_explicit_opt_in() {
    let route = |listen: &str, extra: &str| {
        format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"{listen}\"\nendpoints = [\"127.0.0.1:8080\"]\n{extra}"
        )
    };
    for listen in ["0.0.0.0:15001", "[::]:15001", "10.0.0.5:15001"] {
        let (ok, _, stderr) = check("remote-callers", &route(listen, ""));
        assert!(!ok, "{listen}");
        assert!(
            stderr.contains("line 3: `outbound[0].listen`")
                && stderr.contains("is not a loopback address")
                && stderr.contains("allow_remote_callers = true"),
            "{stderr}"
        );
    }
    let (ok, _, stderr) = check(
        "remote-callers",
        &route("0.0.0.0:15001", "allow_remote_callers = true\n"),
    );
    assert!(ok, "{stderr}");
    for listen in ["127.0.0.1:15001", "[::1]:15001"] {
        let (ok, _, stderr) = check("remote-callers", &route(listen, ""));
        assert!(ok, "{listen}: {stderr}");
    }
}

#[test]
fn certs_writes_a_ca_and_workload_certificates() {
    let dir = temp_dir("certs");
    let output = bin()
        .args(["certs", "--out"])
        .arg(&dir)
        .args([
            "--workload",
            "ns/shop/sa/orders",
            "--workload",
            "ns/shop/sa/frontend",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("orders-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "private keys are readable by their owner only"
        );
    }
    for file in [
        "ca.pem",
        "orders.pem",
        "orders-key.pem",
        "frontend.pem",
        "frontend-key.pem",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_the_commands() {
    let output = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in ["run", "check", "certs", "outbound listener"] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn the_example_config_documents_valid_keys() {
    // The identity files do not exist here, but every key must parse and validate.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sidecar.toml"
    ))
    .unwrap();
    let (ok, stdout, stderr) = check("example", &text);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name = \"payments\""));
    // The README shows what check explains of this file: it must stay true.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let explained = &stdout[stdout.find("# What this config does").unwrap()..];
    assert!(
        readme.contains(explained),
        "README.md should show:\n{explained}"
    );
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/kubernetes/configmap.yaml"
    ))
    .unwrap();
    let (_, block) = manifest.split_once("sidecar.toml: |\n").unwrap();
    let text: String = block
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let (ok, _, stderr) = check("configmap", &text);
    assert!(ok, "{stderr}\n{text}");
}

#[test]
fn a_log_filter_with_a_space_and_a_non_ascii_target_is_checked_without_panicking() {
    // tracing-subscriber slices such a filter in the middle of a character unless each
    // directive is trimmed first: `check` panicked on it.
    let (ok, stdout, stderr) = check("log-filter", "[log]\nfilter = \"info, hyp\u{e9}=warn\"\n");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("filter = \"info, hyp\u{e9}=warn\""),
        "{stdout}"
    );
}

/// A route whose per-try timeouts add up past its timeout.
const CONTRADICTORY: &str = "[[outbound]]\nname = \"r\"\nlisten = \"127.0.0.1:15001\"\n\
    endpoints = [\"127.0.0.1:8080\"]\ntimeout = \"1s\"\n[outbound.retry]\nattempts = 3\n\
    per_try_timeout = \"600ms\"\n";

#[test]
fn check_explains_each_route_and_warns_of_contradictions() {
    let (ok, stdout, stderr) = check("explain", CONTRADICTORY);
    assert!(ok, "a warning alone is not an error: {stderr}");
    assert!(stdout.contains("# route \"r\" (line 2):"), "{stdout}");
    assert!(
        stdout.contains("#   load on the upstream: at most 3x"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#   worst-case latency: 1s, the timeout"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: line 7: `outbound[0].retry.attempts`: 3 attempts of up to 600ms"),
        "{stderr}"
    );
    // The explanation is in comments: what check prints is still a config.
    assert!(sidecar_lite::Config::parse(&stdout).is_ok(), "{stdout}");

    let (ok, _, stderr) = check_with("explain-strict", CONTRADICTORY, &["--strict"]);
    assert!(!ok);
    assert!(
        stderr.contains("1 warning(s), and --strict makes them errors"),
        "{stderr}"
    );
    let clean = CONTRADICTORY.replace("600ms", "300ms");
    let (ok, _, stderr) = check_with("explain-strict-clean", &clean, &["--strict"]);
    assert!(ok, "{stderr}");
}

#[test]
fn check_writes_json_for_machines() {
    let (ok, stdout, _) = check_with("explain-json", CONTRADICTORY, &["--format", "json"]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["routes"][0]["route"], "r");
    assert_eq!(report["routes"][0]["load"]["per_request"], 3);
    assert_eq!(report["routes"][0]["latency"]["worst_ms"], 1000);
    assert_eq!(report["warnings"][0]["field"], "outbound[0].retry.attempts");
    assert_eq!(report["warnings"][0]["line"], 7);
}
