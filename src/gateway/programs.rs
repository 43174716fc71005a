//! What the gateway shows of supervised programs: instead of a bare 502 while Forge loads, a
//! self-refreshing page that says what it is doing (503 with `Retry-After`; JSON for API
//! clients), and the programs' lines of the portal.

use std::fmt::Write;

use http::{Response, StatusCode};

use super::metrics::label;
use super::pages::{self, escape, Audience, Extra, Problem};
use super::Body;
use crate::config::Route;
use crate::supervisor::status::hms;
use crate::supervisor::{Board, ProgramState, ProgramView};

/// How often a browser reloads the page of a program that is not ready.
const RETRY_SECS: u32 = 5;

/// The answer for a route whose program is not RUNNING; `None` when the request may go through.
/// Checking costs a read lock and no allocation, so it runs on every request of such a route.
pub fn unavailable(board: &Board, route: &Route, audience: Audience) -> Option<Response<Body>> {
    let program = route.program.as_deref()?;
    if board.state_of(program)? == ProgramState::Running {
        return None;
    }
    let view = board.program(program)?;
    let title = match view.state {
        ProgramState::Starting if !view.waiting_for.is_empty() => {
            format!(
                "{} is waiting for {}",
                route.name,
                view.waiting_for.join(", ")
            )
        }
        ProgramState::Starting => format!("{} is starting", route.name),
        ProgramState::Backoff => format!("{} is restarting", route.name),
        ProgramState::Stopping => format!("{} is stopping", route.name),
        ProgramState::Running => return None,
        ProgramState::Stopped | ProgramState::Exited | ProgramState::Fatal => {
            format!("{} is not running", route.name)
        }
    };
    let detail = describe(&view);
    let mut html = String::new();
    // What it waits for (provisioning downloading models, say) is the news; its own output is old.
    let waited: Vec<ProgramView> = view
        .waiting_for
        .iter()
        .filter_map(|d| board.program(d))
        .collect();
    for dep in &waited {
        let _ = write!(
            html,
            "<p>{}: {}</p>",
            escape(&dep.name),
            escape(&describe(dep))
        );
        if !dep.recent_log_lines.is_empty() {
            html.push_str("<pre>");
            for line in &dep.recent_log_lines {
                let _ = writeln!(html, "{}", escape(line));
            }
            html.push_str("</pre>");
        }
    }
    if waited.is_empty() && !view.recent_log_lines.is_empty() {
        html.push_str("<p>Its last output:</p><pre>");
        for line in &view.recent_log_lines {
            let _ = writeln!(html, "{}", escape(line));
        }
        html.push_str("</pre>");
    }
    let json = serde_json::json!({
        "name": view.name,
        "state": view.state.as_str(),
        "detail": view.detail,
        "in_state_s": view.in_state().as_secs(),
        "restarts": view.restarts,
        "last_exit": view.last_exit.as_ref().map(ToString::to_string),
        "log": view.recent_log_lines,
        "waiting_for": waited.iter().map(|d| serde_json::json!({
            "name": d.name,
            "state": d.state.as_str(),
            "log": d.recent_log_lines,
        })).collect::<Vec<_>>(),
    });
    Some(pages::problem_with(
        audience,
        Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: &title,
            detail: &detail,
            retry_after: Some(RETRY_SECS),
        },
        &Extra {
            html,
            json: Some(("program", json)),
        },
    ))
}

/// One sentence: state, for how long, what it waits for, restarts and the last exit.
fn describe(view: &ProgramView) -> String {
    let mut s = format!("{} for {}", view.state, hms(view.in_state()));
    if !view.detail.is_empty() {
        let _ = write!(s, " ({})", view.detail);
    }
    match view.restarts {
        0 => {}
        1 => s.push_str("; restarted once"),
        n => {
            let _ = write!(s, "; restarted {n} times");
        }
    }
    if let Some(exit) = &view.last_exit {
        let _ = write!(s, "; last exit: {exit}");
    }
    s.push('.');
    s
}

/// The programs' table of the portal page.
pub fn portal_table(board: &Board) -> String {
    let mut rows = String::new();
    for p in board.programs() {
        let running = p.state == ProgramState::Running;
        let pid = p.pid.map(|pid| format!("pid {pid}, ")).unwrap_or_default();
        let info = if running {
            format!("{pid}uptime {}", hms(p.in_state()))
        } else {
            describe(&p)
        };
        let _ = write!(
            rows,
            "<tr><td>{name}</td><td class=\"{class}\">{state}</td><td>{info}</td><td>{restarts}</td></tr>",
            name = escape(&p.name),
            class = if running { "ok" } else { "bad" },
            state = p.state,
            info = escape(&info),
            restarts = p.restarts,
        );
    }
    format!(
        "<h2>Programs</h2><table><tr><th>name</th><th>state</th><th>status</th><th>restarts</th></tr>{rows}</table>\
         <p>{gpu}</p>",
        gpu = escape(&board.gpu().summary())
    )
}

/// Prometheus lines for the programs.
pub fn metrics(board: &Board, out: &mut String) {
    out.push_str("# HELP vastgate_program_up Whether the program is RUNNING.\n# TYPE vastgate_program_up gauge\n");
    let programs = board.programs();
    for p in &programs {
        let _ = writeln!(
            out,
            "vastgate_program_up{{program=\"{}\"}} {}",
            label(&p.name),
            u8::from(p.state == ProgramState::Running)
        );
    }
    out.push_str("# HELP vastgate_program_restarts_total Restarts since the supervisor started.\n# TYPE vastgate_program_restarts_total counter\n");
    for p in &programs {
        let _ = writeln!(
            out,
            "vastgate_program_restarts_total{{program=\"{}\"}} {}",
            label(&p.name),
            p.restarts
        );
    }
}
