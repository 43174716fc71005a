//! `vastgate status`: one line per program in supervisorctl's layout, and its exit code.
//!
//! ```text
//! forge        RUNNING   pid 812, uptime 1:02:03
//! filebrowser  BACKOFF   exit status 1; next start in 4.0s
//! jupyter      STOPPED   not started (autostart = false)
//! ```

use std::time::Duration;

use super::board::ProgramView;
use super::state::{ExitReason, ProgramState};

/// Exit code when some program that should run (autostart) is not RUNNING (supervisorctl's 3).
pub const EXIT_NOT_ALL_RUNNING: u8 = 3;
/// Exit code when no supervisor answers on the socket.
pub const EXIT_NO_SUPERVISOR: u8 = 4;

/// `H:MM:SS`, hours unbounded.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The text after the state: `pid N, uptime H:MM:SS`, or why it is not running.
pub fn describe(p: &ProgramView) -> String {
    let in_state = hms(p.in_state());
    let reason = p.last_exit.as_ref().map(|r| r.to_string());
    let with_detail = |head: String| {
        if p.detail.is_empty() {
            head
        } else if head.is_empty() {
            p.detail.clone()
        } else {
            format!("{head}; {}", p.detail)
        }
    };
    match (p.state, p.pid) {
        (ProgramState::Running, Some(pid)) => format!("pid {pid}, uptime {in_state}"),
        (ProgramState::Starting, Some(pid)) => {
            with_detail(format!("pid {pid}, starting for {in_state}"))
        }
        (ProgramState::Stopping, Some(pid)) => with_detail(format!("pid {pid}")),
        (ProgramState::Starting, None) => with_detail(String::new()),
        (ProgramState::Backoff, _) => with_detail(reason.unwrap_or_default()),
        (ProgramState::Exited | ProgramState::Stopped, _) => match reason {
            Some(r) => format!("{r}, {in_state} ago"),
            None if !p.detail.is_empty() => p.detail.clone(),
            None => "not started".into(),
        },
        (ProgramState::Fatal, _) => reason.unwrap_or_else(|| "gave up".into()),
        (_, None) => with_detail(String::new()),
    }
}

/// All lines, names and states in aligned columns.
pub fn format_status(programs: &[ProgramView]) -> String {
    let width = programs.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for p in programs {
        let line = format!(
            "{:<width$}  {:<8}  {}",
            p.name,
            p.state.as_str(),
            describe(p)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// 0 when every autostart program is RUNNING (or is a oneshot that exited 0),
/// [`EXIT_NOT_ALL_RUNNING`] otherwise.
pub fn exit_code(programs: &[ProgramView]) -> u8 {
    let healthy = |p: &ProgramView| {
        p.state == ProgramState::Running
            || (p.oneshot
                && p.state == ProgramState::Exited
                && p.last_exit == Some(ExitReason::Exited { code: 0 }))
    };
    if programs.iter().any(|p| p.autostart && !healthy(p)) {
        EXIT_NOT_ALL_RUNNING
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, state: ProgramState, pid: Option<u32>, secs: u64) -> ProgramView {
        ProgramView {
            name: name.into(),
            state,
            detail: String::new(),
            since_unix: 0,
            in_state_ms: secs * 1000,
            restarts: 0,
            last_exit: None,
            pid,
            autostart: true,
            recent_log_lines: Vec::new(),
            oneshot: false,
            waiting_for: Vec::new(),
        }
    }

    #[test]
    fn hours_minutes_seconds() {
        assert_eq!(hms(Duration::from_secs(0)), "0:00:00");
        assert_eq!(hms(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(hms(Duration::from_secs(100 * 3600 + 59)), "100:00:59");
    }

    #[test]
    fn lines_follow_supervisorctl_layout() {
        let mut backoff = view("filebrowser", ProgramState::Backoff, None, 1);
        backoff.last_exit = Some(ExitReason::Exited { code: 1 });
        backoff.detail = "next start in 4.0s".into();
        let mut stopped = view("jupyter", ProgramState::Stopped, None, 5);
        stopped.autostart = false;
        stopped.detail = "not started (autostart = false)".into();
        let mut fatal = view("x", ProgramState::Fatal, None, 5);
        fatal.last_exit = Some(ExitReason::NoGpu {
            error: "none".into(),
        });
        let text = format_status(&[
            view("forge", ProgramState::Running, Some(812), 3723),
            backoff,
            stopped,
            fatal,
        ]);
        assert_eq!(
            text,
            "forge        RUNNING   pid 812, uptime 1:02:03\n\
             filebrowser  BACKOFF   exit status 1; next start in 4.0s\n\
             jupyter      STOPPED   not started (autostart = false)\n\
             x            FATAL     no GPU: none\n"
        );
    }

    #[test]
    fn exit_code_is_3_when_an_autostart_program_is_not_running() {
        let running = view("a", ProgramState::Running, Some(1), 1);
        let mut manual = view("b", ProgramState::Stopped, None, 1);
        manual.autostart = false;
        assert_eq!(exit_code(&[running.clone(), manual]), 0);
        let starting = view("c", ProgramState::Starting, Some(2), 1);
        assert_eq!(exit_code(&[running, starting]), EXIT_NOT_ALL_RUNNING);
    }

    #[test]
    fn a_oneshot_that_exited_cleanly_is_healthy_and_a_failed_one_is_not() {
        let mut done = view("provisioning", ProgramState::Exited, None, 1);
        done.oneshot = true;
        done.last_exit = Some(ExitReason::Exited { code: 0 });
        assert_eq!(exit_code(&[done.clone()]), 0);
        let mut failed = done.clone();
        failed.last_exit = Some(ExitReason::Exited { code: 1 });
        assert_eq!(exit_code(&[failed]), EXIT_NOT_ALL_RUNNING);
        let mut not_oneshot = done;
        not_oneshot.oneshot = false;
        assert_eq!(exit_code(&[not_oneshot]), EXIT_NOT_ALL_RUNNING);
    }
}
