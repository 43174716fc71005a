//! The control socket and its commands: `status` layout and exit codes, start/stop/restart,
//! `logs`, and a second `up` that steps aside.

mod supervisor_harness;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use supervisor_harness::{vastgate_bin, Up};
use vastgate::supervisor::ProgramState;

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_lines_and_exit_codes_follow_supervisorctl() {
    let mut up = Up::start(
        r#"
[program.web]
command = ["sh", "-c", "echo hello from web; exec sleep 1000"]

[program.manual]
command = ["sleep", "1000"]
autostart = false
"#,
    );
    let mode = std::fs::metadata(&up.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is root's only");

    up.wait_program("web", "RUNNING", |p| p.state == ProgramState::Running);
    let out = up.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<String> = text(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        "manual  STOPPED   not started (autostart = false)"
    );
    let web = &lines[1];
    assert!(web.starts_with("web     RUNNING   pid "), "{web}");
    assert!(web.contains(", uptime 0:00:0"), "{web}");

    let out = up.cli(&["stop", "web"]);
    assert_eq!(text(&out).trim(), "web: stopped");
    let out = up.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an autostart program is not RUNNING"
    );
    assert!(
        text(&out).contains("web     STOPPED   stopped by command, 0:00:0"),
        "{}",
        text(&out)
    );

    let out = up.cli(&["start", "all"]);
    assert!(out.status.success(), "{out:?}");
    up.wait_until("both RUNNING", |(_, ps)| {
        ps.iter().all(|p| p.state == ProgramState::Running)
    });
    let before = up.program("web").pid;
    let out = up.cli(&["restart", "web"]);
    assert_eq!(text(&out).trim(), "web: restarting");
    let after = up.wait_program("web", "RUNNING again", |p| {
        p.state == ProgramState::Running && p.pid != before
    });
    assert_eq!(after.restarts, 1);

    let out = up.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["programs"][1]["name"], "web");
    assert_eq!(json["programs"][1]["state"], "RUNNING");
    assert_eq!(json["programs"][1]["last_exit"]["kind"], "restart_command");

    let out = up.cli(&["logs", "web", "-n", "2"]);
    assert!(out.status.success());
    let logs = text(&out);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(logs.contains("hello from web"), "{logs}");

    let out = up.cli(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no program named \"nosuch\""));

    let (status, _) = up.terminate();
    assert!(status.success());
    let out = up.cli(&["status"]);
    assert_eq!(out.status.code(), Some(4), "no supervisor answers");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no supervisor answers"));
}

#[test]
fn logs_follow_streams_new_lines() {
    let up = Up::start(
        r#"
[program.ticker]
command = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
"#,
    );
    up.wait_program("ticker", "RUNNING", |p| p.state == ProgramState::Running);
    let mut follow = Command::new(vastgate_bin())
        .args(["logs", "ticker", "-f", "-n", "1", "--config"])
        .arg(&up.config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = follow.kill();
    let out = follow.wait_with_output().expect("output");
    let ticks = text(&out)
        .lines()
        .filter(|l| l.starts_with("tick "))
        .count();
    assert!(ticks >= 5, "new lines keep coming: {}", text(&out));
}

#[test]
fn a_second_up_refuses_politely() {
    let up = Up::start(
        r#"
[program.one]
command = ["sleep", "1000"]
"#,
    );
    up.wait_program("one", "RUNNING", |p| p.state == ProgramState::Running);
    let out = up.cli(&["up"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // The first one is untouched.
    let p = up.program("one");
    assert_eq!((p.state, p.restarts), (ProgramState::Running, 0));
}
