//! Reaping: as PID 1 of a fresh PID namespace (Docker's entrypoint mode) and as a child subreaper
//! (under Vast's launcher), every orphan of the programs is reaped and none is left a zombie.

mod supervisor_harness;

use std::process::Command;
use std::time::Duration;

use supervisor_harness::{eventually, zombie_children, Up};
use vastgate::supervisor::ProgramState;

/// Fifty subshells each leave a short `sleep` behind and exit: fifty orphans that die soon after.
const ORPHAN_MAKER: &str = r#"
[program.orphans]
command = ["sh", "-c", "for i in $(seq 50); do (sleep 0.3 &); done; exec sleep 1000"]
"#;

fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid of the one child of `parent` (unshare's forked child: our supervisor).
fn only_child(parent: u32) -> u32 {
    let read = || -> Option<u32> {
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    eventually("unshare has forked the supervisor", || read().is_some());
    read().expect("a child")
}

#[test]
fn as_pid1_every_orphan_is_reaped() {
    if !unshare_works() {
        eprintln!("SKIPPED as_pid1_every_orphan_is_reaped: `unshare --pid --fork` does not work here (needs root or user namespaces)");
        return;
    }
    let mut unshare = Command::new("unshare");
    unshare.args(["--pid", "--fork", "--kill-child", "--mount-proc"]);
    let mut up = Up::prepare("", ORPHAN_MAKER).launch(unshare);
    let (facts, _) = up.wait_until("50 orphans reaped", |(facts, ps)| {
        facts.orphans_reaped >= 50 && ps[0].state == ProgramState::Running
    });
    assert!(
        facts.pid1,
        "the supervisor is PID 1 of its namespace: {facts:?}"
    );
    assert_eq!(facts.pid, 1);
    let host_pid = only_child(up.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(zombie_children(host_pid), vec![], "no zombie is left");
    // As Docker does: SIGTERM to PID 1 itself (unshare does not forward signals).
    assert_eq!(unsafe { libc::kill(host_pid as i32, libc::SIGTERM) }, 0);
    let (status, _) = up.wait_exit(supervisor_harness::PATIENCE);
    assert!(status.success(), "{status:?}: {}", up.stderr());
    assert!(up.stderr().contains("SIGTERM: stopping"), "{}", up.stderr());
}

#[test]
fn as_a_subreaper_every_orphan_is_reaped() {
    let up = Up::start(ORPHAN_MAKER);
    let (facts, _) = up.wait_until("50 orphans reaped", |(facts, ps)| {
        facts.orphans_reaped >= 50 && ps[0].state == ProgramState::Running
    });
    assert!(!facts.pid1 && facts.subreaper, "{facts:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(zombie_children(up.pid()), vec![], "no zombie is left");
}

#[test]
fn exit_statuses_still_reach_their_programs_while_orphans_are_reaped() {
    // A program that exits with a code while orphans die around it: the code is not stolen.
    let up = Up::start(
        r#"
[program.orphans]
command = ["sh", "-c", "for i in $(seq 20); do (sleep 0.1 &); done; exec sleep 1000"]

[program.coded]
command = ["sh", "-c", "sleep 0.2; exit 42"]
restart = "never"
"#,
    );
    let p = up.wait_program("coded", "EXITED", |p| p.state == ProgramState::Exited);
    assert_eq!(
        p.last_exit,
        Some(vastgate::supervisor::ExitReason::Exited { code: 42 })
    );
}
