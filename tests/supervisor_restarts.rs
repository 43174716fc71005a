//! Restarts: the backoff schedule, its reset after a stable run, `always` never giving up, the
//! restart a program asks for (Forge's restart button) and log triggers.

mod supervisor_harness;

use std::time::Duration;

use supervisor_harness::{gaps_ms, wait_for_stamps, Up};
use vastgate::supervisor::{ExitReason, ProgramState};

#[test]
fn crash_restarts_with_growing_delays() {
    let up = Up::start(
        r#"
[program.crashy]
command = ["sh", "-c", "date +%s%N >> starts; exit 1"]
backoff = { initial = "200ms", max = "1600ms", jitter = 0.0 }
"#,
    );
    let stamps = wait_for_stamps(&up.path("starts"), 7);
    let gaps = gaps_ms(&stamps);
    let expected = [200, 400, 800, 1600, 1600, 1600];
    for (i, (&gap, &want)) in gaps.iter().zip(&expected).enumerate() {
        assert!(
            gap + 20 >= want && gap <= want + 700,
            "gap {i} was {gap} ms, expected about {want} ms (all gaps: {gaps:?})"
        );
    }
    let p = up.program("crashy");
    assert!(p.restarts >= 6, "{p:?}");
    assert_eq!(p.last_exit, Some(ExitReason::Exited { code: 1 }));
}

#[test]
fn a_stable_run_resets_the_backoff() {
    // Each run lasts 600 ms, longer than reset_after: every delay is the initial one again.
    let up = Up::start(
        r#"
[program.flaky]
command = ["sh", "-c", "date +%s%N >> starts; sleep 0.6; exit 1"]
backoff = { initial = "200ms", max = "5s", reset_after = "400ms", jitter = 0.0 }
"#,
    );
    let gaps = gaps_ms(&wait_for_stamps(&up.path("starts"), 6));
    // Without the reset, the 4th and 5th gaps would be 600 + 1600 and 600 + 3200 ms.
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            (750..=1700).contains(gap),
            "gap {i} was {gap} ms, expected about 800 ms (all gaps: {gaps:?})"
        );
    }
}

#[test]
fn always_never_reaches_fatal_but_on_failure_gives_up_when_told() {
    let up = Up::start(
        r#"
[program.always]
command = ["sh", "-c", "exit 7"]
backoff = { initial = "20ms", max = "80ms", jitter = 0.0 }

[program.limited]
command = ["sh", "-c", "exit 7"]
restart = "on-failure"
start_retries = 2
backoff = { initial = "20ms", max = "80ms", jitter = 0.0 }
"#,
    );
    let limited = up.wait_program("limited", "FATAL", |p| p.state == ProgramState::Fatal);
    assert_eq!(limited.restarts, 2, "{limited:?}");
    assert_eq!(limited.last_exit, Some(ExitReason::Exited { code: 7 }));
    let always = up.wait_program("always", "25 restarts", |p| {
        assert_ne!(p.state, ProgramState::Fatal, "{p:?}");
        p.restarts >= 25 && p.state == ProgramState::Backoff
    });
    assert!(
        always.detail.contains("keeps trying"),
        "BACKOFF at the cap says so: {always:?}"
    );
    let status = up.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("limited  FATAL     exit status 7"), "{text}");
}

#[test]
fn forge_restart_request_restarts_at_once() {
    // Forge's restart button: with SD_WEBUI_RESTART set it touches tmp/restart and exits 0.
    let up = Up::start(
        r#"
[program.forge]
command = ["sh", "-c", "date +%s%N >> starts; sleep 0.3; if [ -n \"$SD_WEBUI_RESTART\" ]; then mkdir -p tmp && touch tmp/restart; fi; exit 0"]
env = { SD_WEBUI_RESTART = "1" }
restart_file = "tmp/restart"
backoff = { initial = "10s", jitter = 0.0 }
"#,
    );
    let gaps = gaps_ms(&wait_for_stamps(&up.path("starts"), 4));
    for gap in &gaps {
        assert!(
            *gap < 2500,
            "a requested restart waits for no backoff: {gaps:?}"
        );
    }
    let p = up.program("forge");
    assert_eq!(p.last_exit, Some(ExitReason::RestartRequested), "{p:?}");
}

#[test]
fn clean_exit_without_the_restart_file_is_a_normal_exit() {
    let up = Up::start(
        r#"
[program.forge]
command = ["sh", "-c", "date +%s%N >> starts; exit 0"]
restart = "on-failure"
restart_file = "tmp/restart"
"#,
    );
    let p = up.wait_program("forge", "EXITED", |p| p.state == ProgramState::Exited);
    assert_eq!(p.last_exit, Some(ExitReason::Exited { code: 0 }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(supervisor_harness::timestamps(&up.path("starts")).len(), 1);
}

#[test]
fn a_log_trigger_restarts_the_program() {
    let up = Up::start(
        r#"
[program.forge]
command = ["sh", "-c", "date +%s%N >> starts; sleep 0.3; echo 'RuntimeError: CUDA error: an illegal memory access was encountered' >&2; exec sleep 1000"]
restart_on_log = ["illegal memory access"]
backoff = { initial = "100ms", jitter = 0.0 }
"#,
    );
    wait_for_stamps(&up.path("starts"), 2);
    let p = up.program("forge");
    match &p.last_exit {
        Some(ExitReason::LogTrigger { line }) => assert!(line.contains("illegal memory access")),
        other => panic!("expected a log trigger, got {other:?}"),
    }
    let log = std::fs::read_to_string(up.path("logs/forge.log")).expect("log file");
    assert!(log.contains("CUDA error"), "{log}");
}
