//! `vastgate check` and `vastgate serve` on configuration files with mistakes: each is reported
//! as `FILE:LINE:COL: message` pointing at the mistake, with a non-zero exit.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `vastgate check` on `text` and expects it to fail at `line`:`col` with a message
/// containing `fragment`. Returns the error line.
fn check_fails_at(text: &str, line: usize, col: usize, fragment: &str) -> String {
    let (_dir, path) = write_temp_config(text);
    let out = run_vastgate(&["check".as_ref(), "--config".as_ref(), path_arg(&path)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "check accepted:\n{text}");
    let location = format!("{}:{line}:{col}: ", path.display());
    let error = stderr
        .lines()
        .find(|l| l.contains(&location))
        .unwrap_or_else(|| panic!("no {location:?} in:\n{stderr}"))
        .to_string();
    assert!(
        error.contains(fragment),
        "{fragment:?} missing from: {error}"
    );
    error
}

#[test]
fn check_accepts_a_valid_file() {
    let text = r#"# The shipped routes, trimmed.
[gateway]
listen = "0.0.0.0:8000"
auth = "none"
header_timeout = "10s"

[[route]]
prefix = "/"
upstream = "http://127.0.0.1:7860"
drop_accept_encoding = true

[[route]]
prefix = "/files/"
upstream = "http://127.0.0.1:8081"

[[route]]
prefix = "/logs/"
upstream = "http://127.0.0.1:8082"
strip_prefix = true
"#;
    let (_dir, path) = write_temp_config(text);
    let out = run_vastgate(&["check".as_ref(), "--config".as_ref(), path_arg(&path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok"), "{stdout}");
    assert!(stdout.contains("3 routes"), "{stdout}");
}

#[test]
fn check_locates_an_unknown_key() {
    let text = "# vastgate\n[gateway]\nlisten = \"127.0.0.1:8000\"\nauth = \"none\"\nacces_log = \"off\"\n";
    let error = check_fails_at(text, 5, 1, "unknown field `acces_log`");
    // It says what would have been right.
    assert!(error.contains("access_log"), "{error}");
}

#[test]
fn check_locates_an_unknown_key_in_a_route() {
    let text = "[gateway]\nauth = \"none\"\n\n[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:7860\"\n    strip = true\n";
    check_fails_at(text, 7, 5, "unknown field `strip`");
}

#[test]
fn check_locates_a_bad_listen_address() {
    let text = "[gateway]\nauth = \"none\"\nlisten = \"0.0.0.0\"\n";
    check_fails_at(text, 3, 10, "expected IP:PORT");
    let text = "[gateway]\nlisten   =   \"localhost:8000\"\n";
    check_fails_at(text, 2, 14, "is not an address");
}

#[test]
fn check_locates_a_prefix_without_leading_slash() {
    let text = "[gateway]\nauth = \"none\"\n\n[[route]]\nprefix = \"/files/\"\nupstream = \"http://127.0.0.1:8081\"\n\n[[route]]\n  prefix = \"logs/\"\n  upstream = \"http://127.0.0.1:8082\"\n";
    check_fails_at(text, 9, 12, "must start with \"/\"");
}

#[test]
fn check_locates_the_second_of_duplicate_prefixes() {
    let text = "[gateway]\nauth = \"none\"\n\n[[route]]\nprefix = \"/files/\"\nupstream = \"http://127.0.0.1:8081\"\n\n[[route]]\nupstream = \"http://127.0.0.1:9000\"\nprefix = \"/files/\"\n";
    check_fails_at(text, 10, 10, "duplicate route prefix \"/files/\"");
}

#[test]
fn check_locates_a_bad_upstream() {
    for bad in [
        "127.0.0.1:7860",
        "https://127.0.0.1:7860",
        "http://127.0.0.1",
        "http://127.0.0.1:7860/forge",
    ] {
        let text = format!(
            "[gateway]\nauth = \"none\"\n\n[[route]]\nprefix = \"/\"\nupstream = \"{bad}\"\n"
        );
        check_fails_at(&text, 6, 12, "expected \"http://HOST:PORT\"");
    }
}

#[test]
fn check_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let out = run_vastgate(&["check".as_ref(), "--config".as_ref(), path_arg(&path)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

/// `serve` on `path`: expects a refusal (non-zero exit, quickly) and returns its stderr.
fn serve_refuses(path: &Path) -> String {
    let mut child = Command::new(vastgate_bin())
        .arg("serve")
        .arg("--config")
        .arg(path)
        .env("NO_COLOR", "1")
        .env_remove("VASTGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started on an invalid file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn serve_refuses_an_invalid_file_with_the_same_message() {
    let port = free_port();
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\nauth = \"none\"\n\n[[route]]\nprefix = \"files/\"\nupstream = \"http://127.0.0.1:8081\"\n"
    );
    let (_dir, path) = write_temp_config(&text);
    let out = run_vastgate(&["check".as_ref(), "--config".as_ref(), path_arg(&path)]);
    let check_error = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.contains(":6:10: "))
        .expect("check locates the prefix")
        .trim()
        .to_string();

    let stderr = serve_refuses(&path);
    assert!(
        stderr.contains(&check_error),
        "serve said:\n{stderr}\ncheck said:\n{check_error}"
    );
    // Nothing was left listening.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
