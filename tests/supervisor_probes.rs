//! Probes: liveness restarts a hung program; a slow starter is left alone until its startup
//! deadline; one that misses the deadline is restarted; dependencies wait for readiness.

mod supervisor_harness;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use supervisor_harness::{alive, wait_for_stamps, Up};
use vastgate::supervisor::{ExitReason, ProgramState};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

#[test]
fn a_hung_program_is_restarted_by_its_liveness_probe() {
    // Healthy while the file exists; after a second it "hangs": alive, but failing its probe.
    let up = Up::start(
        r#"
[program.hangs]
command = ["sh", "-c", "date +%s%N >> starts; touch healthy; sleep 1; rm healthy; exec sleep 1000"]
ready_after = "100ms"
liveness_probe = { command = ["test", "-f", "healthy"], period = "100ms", timeout = "2s", failure_threshold = 3 }
backoff = { initial = "100ms", jitter = 0.0 }
"#,
    );
    let first = up.wait_program("hangs", "RUNNING", |p| p.state == ProgramState::Running);
    let first_pid = first.pid.expect("a pid while RUNNING") as i32;
    wait_for_stamps(&up.path("starts"), 2);
    let p = up.program("hangs");
    match &p.last_exit {
        Some(ExitReason::LivenessProbe { error }) => {
            assert!(error.contains("3 times in a row"), "{error}")
        }
        other => panic!("expected a liveness failure, got {other:?}"),
    }
    assert!(!alive(first_pid), "the hung process was stopped");
}

#[test]
fn a_slow_starter_is_not_killed_before_its_startup_deadline() {
    let port = free_port();
    let up = Up::start(&format!(
        r#"
[program.slow]
command = ["sh", "-c", "sleep 2; exec python3 -m http.server {port} --bind 127.0.0.1"]
startup_probe = {{ http = "http://127.0.0.1:{port}/", period = "200ms", timeout = "1s", deadline = "60s" }}
liveness_probe = {{ http = "http://127.0.0.1:{port}/", period = "200ms", timeout = "1s", failure_threshold = 1 }}
"#
    ));
    let start = Instant::now();
    let starting = up.program("slow");
    assert_eq!(starting.state, ProgramState::Starting, "{starting:?}");
    assert_eq!(starting.detail, "waiting for the startup probe");
    let running = up.wait_program("slow", "RUNNING", |p| p.state == ProgramState::Running);
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "not ready before it listens"
    );
    assert_eq!(running.restarts, 0, "{running:?}");
    std::thread::sleep(Duration::from_millis(800));
    let later = up.program("slow");
    assert_eq!(
        (later.state, later.restarts),
        (ProgramState::Running, 0),
        "{later:?}"
    );
}

#[test]
fn a_program_that_misses_its_startup_deadline_is_restarted() {
    let port = free_port();
    let up = Up::start(&format!(
        r#"
[program.never_ready]
command = ["sh", "-c", "date +%s%N >> starts; exec sleep 1000"]
startup_probe = {{ tcp = "127.0.0.1:{port}", period = "100ms", timeout = "500ms", deadline = "1s" }}
backoff = {{ initial = "100ms", jitter = 0.0 }}
"#
    ));
    let stamps = wait_for_stamps(&up.path("starts"), 2);
    let gap_ms = (stamps[1] - stamps[0]) / 1_000_000;
    assert!(
        gap_ms >= 900,
        "restarted only after the deadline: {gap_ms} ms"
    );
    let p = up.program("never_ready");
    match &p.last_exit {
        Some(ExitReason::StartupProbe { error }) => {
            assert!(error.contains("not ready within 1s"), "{error}")
        }
        other => panic!("expected a startup probe failure, got {other:?}"),
    }
}

#[test]
fn dependents_wait_until_their_dependencies_are_running() {
    let up = Up::start(
        r#"
[program.db]
command = ["sh", "-c", "sleep 1; touch ready; exec sleep 1000"]
startup_probe = { command = ["test", "-f", "ready"], period = "100ms" }

[program.app]
command = ["sh", "-c", "date +%s%N >> app_started; exec sleep 1000"]
depends_on = ["db"]
"#,
    );
    let waiting = up.program("app");
    assert_eq!(waiting.state, ProgramState::Starting, "{waiting:?}");
    assert_eq!(waiting.detail, "waiting for db to be RUNNING");
    assert_eq!(waiting.pid, None);
    up.wait_program("app", "RUNNING", |p| p.state == ProgramState::Running);
    let db = up.program("db");
    assert_eq!(db.state, ProgramState::Running);
    assert!(up.path("ready").exists());
}
