//! The gateway's own authenticated pages under `/_vastgate/`: the portal (links to every app)
//! and Prometheus metrics.

use std::fmt::Write;

use http::{Response, StatusCode};

use super::pages::{self, escape, Audience, Problem};
use super::{programs, Body, Gateway, Snapshot};
use crate::vast;

/// The prefix of the gateway's own pages; always behind authentication.
pub const PREFIX: &str = "/_vastgate/";

/// Answers a request under [`PREFIX`].
#[cold]
pub fn answer(
    gateway: &Gateway,
    snapshot: &Snapshot,
    path: &str,
    audience: Audience,
) -> Response<Body> {
    match path.strip_prefix(PREFIX) {
        Some("") => portal(gateway, snapshot, audience),
        Some("metrics") => metrics(gateway, snapshot),
        _ => pages::problem(
            audience,
            Problem {
                status: StatusCode::NOT_FOUND,
                title: "Not found",
                detail: "The gateway has no such page.",
                retry_after: None,
            },
        ),
    }
}

fn portal(gateway: &Gateway, snapshot: &Snapshot, audience: Audience) -> Response<Body> {
    let mut routes: Vec<_> = snapshot.router.routes().iter().collect();
    routes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut items = String::new();
    for r in routes {
        let _ = write!(
            items,
            "<li><a href=\"{href}\">{name}</a> <code>{prefix}</code></li>",
            href = escape(&r.prefix),
            name = escape(&r.name),
            prefix = escape(&r.prefix),
        );
    }
    if let Some(url) = jupyter_link() {
        let _ = write!(
            items,
            "<li><a href=\"{href}\">Jupyter</a> <code>Vast's own, log in with its token</code></li>",
            href = escape(&url),
        );
    }
    let banner = if audience.default_password {
        format!(
            "<p class=\"warn\">{}</p>",
            escape(pages::DEFAULT_PASSWORD_WARNING)
        )
    } else {
        String::new()
    };
    let programs = gateway
        .board
        .as_deref()
        .map(programs::portal_table)
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>vastgate</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}\
         li{{margin:.3rem 0}}code{{color:#666}}td,th{{text-align:left;padding:.2rem .8rem .2rem 0}}\
         .ok{{color:#16794a}}.bad{{color:#b3261e}}.warn{{background:#fde2e1;color:#8a1c14;padding:.5rem .75rem}}\
         </style></head><body>{banner}<h1>Apps on this box</h1><ul>{items}</ul>{programs}</body></html>\n"
    );
    pages::full(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// In Vast's Jupyter launch mode Vast runs Jupyter itself (on 8080); the portal links it.
fn jupyter_link() -> Option<String> {
    let env = |name: &str| std::env::var(name).ok();
    vast::vast_jupyter_url(
        vast::current_launch_mode(),
        env("PUBLIC_IPADDR").as_deref(),
        env("VAST_TCP_PORT_8080").as_deref(),
    )
}

fn metrics(gateway: &Gateway, snapshot: &Snapshot) -> Response<Body> {
    let mut out = String::new();
    let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    if let Some(auth) = snapshot.gatekeeper.authenticator() {
        gauge(
            "vastgate_auth_hashes_total",
            "counter",
            "Password hashes computed (cache hits compute none).",
            auth.hash_count(),
        );
        gauge(
            "vastgate_auth_cached_credentials",
            "gauge",
            "Verified credentials held in the success cache.",
            auth.cached_successes() as u64,
        );
    }
    gauge(
        "vastgate_access_log_dropped_total",
        "counter",
        "Access-log lines dropped because the writer could not keep up.",
        gateway.log.dropped(),
    );
    gauge(
        "vastgate_tunnels_open",
        "gauge",
        "WebSocket tunnels open now.",
        gateway.tunnels.len() as u64,
    );
    gateway.metrics.render(&mut out);
    if let Some(board) = &gateway.board {
        programs::metrics(board, &mut out);
    }
    pages::full(StatusCode::OK, "text/plain; version=0.0.4", out)
}
