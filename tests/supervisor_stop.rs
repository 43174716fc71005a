//! Stopping: the whole process group goes (grandchildren too); on SIGTERM programs stop in
//! reverse dependency order within the total deadline; a second SIGTERM kills at once.

mod supervisor_harness;

use std::time::Duration;

use supervisor_harness::{alive, eventually, timestamps, Up};
use vastgate::supervisor::{ExitReason, ProgramState};

fn read_pid(up: &Up, file: &str) -> i32 {
    eventually(&format!("{file} is written"), || {
        std::fs::read_to_string(up.path(file)).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    std::fs::read_to_string(up.path(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("pid file")
}

#[test]
fn stopping_a_program_kills_its_grandchildren() {
    // The grandchild ignores SIGTERM; it must still go when its program is stopped.
    let up = Up::start(
        r#"
[program.parent]
command = ["sh", "-c", "(trap '' TERM; exec sleep 1000) & echo $! > grandchild.pid; wait"]
stop_timeout = "20s"
"#,
    );
    up.wait_program("parent", "RUNNING", |p| p.state == ProgramState::Running);
    let grandchild = read_pid(&up, "grandchild.pid");
    assert!(alive(grandchild));
    let out = up.cli(&["stop", "parent"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "parent: stopped"
    );
    eventually("the grandchild is gone", || !alive(grandchild));
    let p = up.program("parent");
    assert_eq!(p.state, ProgramState::Stopped);
    assert_eq!(p.last_exit, Some(ExitReason::StopCommand));
    assert!(
        p.in_state() < Duration::from_secs(10),
        "it went before its 20 s stop timeout"
    );
}

#[test]
fn sigterm_stops_dependents_first_and_respects_the_deadline() {
    let stopper = |name: &str| {
        format!(
            "[\"sh\", \"-c\", \"trap 'date +%s%N > stopped_{name}; exit 0' TERM; while :; do sleep 0.05; done\"]"
        )
    };
    let programs = format!(
        r#"
[program.base]
command = {base}

[program.mid]
command = {mid}
depends_on = ["base"]

[program.top]
command = {top}
depends_on = ["mid"]

[program.stubborn]
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
stop_timeout = "60s"
"#,
        base = stopper("base"),
        mid = stopper("mid"),
        top = stopper("top"),
    );
    let mut up = Up::start_with("stop_deadline = \"3s\"", &programs);
    up.wait_until("all RUNNING", |(_, ps)| {
        ps.iter().all(|p| p.state == ProgramState::Running)
    });
    let stubborn = up.program("stubborn").pid.expect("pid") as i32;
    let (status, took) = up.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(7),
        "the 3 s stop deadline bounds the shutdown: took {took:?}"
    );
    assert!(
        !alive(stubborn),
        "the stubborn program was killed at the deadline"
    );
    let at = |name: &str| {
        timestamps(&up.path(&format!("stopped_{name}")))
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{name} did not record its stop"))
    };
    let (top, mid, base) = (at("top"), at("mid"), at("base"));
    assert!(
        top <= mid && mid <= base,
        "stop order top, mid, base: {top} {mid} {base}"
    );
}

#[test]
fn a_second_sigterm_kills_at_once() {
    let mut up = Up::start_with(
        "stop_deadline = \"60s\"",
        r#"
[program.stubborn]
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
stop_timeout = "60s"
"#,
    );
    let pid = up
        .wait_program("stubborn", "RUNNING", |p| p.state == ProgramState::Running)
        .pid
        .expect("pid") as i32;
    up.signal(libc::SIGTERM);
    up.wait_program("stubborn", "STOPPING", |p| {
        p.state == ProgramState::Stopping
    });
    up.signal(libc::SIGTERM);
    let (_, took) = up.wait_exit(Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eventually("the program is gone", || !alive(pid));
}
