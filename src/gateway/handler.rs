//! One request, start to finish: canonical path → route → authenticate → forward or tunnel →
//! access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::access_log::{rfc3339, Logged, Record};
use super::compress;
use super::forward::{self, Outgoing, Shaping, UpstreamError};
use super::gatekeeper::{Admission, Knock};
use super::headers::{self, Hop, UpgradeRequest, X_REQUEST_ID};
use super::pages::{self, Audience, Problem};
use super::path::canonicalize;
use super::pool::{Outbound, RequestBody};
use super::rewrite::{Rewrite, Slot};
use super::router::{is_public, RouteMatch};
use super::verbatim::Verbatim;
use super::{portal, programs, vast_portal};
use super::{Body, Gateway, Snapshot};
use crate::auth::GrantMemo;
use crate::config::Route;

/// What the gateway knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The request is read, and its answer written, by the gateway's own HTTP/1.1 codec
    /// ([`super::express`]), which writes an answer's fields kept [`super::verbatim`] itself:
    /// its header map may hold only what the gateway added. Elsewhere (hyper's server) every
    /// field is in the map.
    pub own_codec: bool,
}

/// A request's answer, with the upstream's fields when they go on to the client as they came
/// ([`super::verbatim`], only where [`ConnInfo::own_codec`]): the answer's header map then holds
/// only what the gateway adds, and the codec writes `kept` before it.
pub struct Answer {
    pub resp: Response<Body>,
    pub kept: Option<Box<Verbatim>>,
}

/// Seconds a browser waits before reloading an error page about an app that is down.
const RETRY_SECS: u32 = 5;

impl Gateway {
    /// Serves one request; never fails (every problem becomes a response). `memo`: the client
    /// connection's last grant of Basic credentials, where the connection keeps one (the
    /// gateway's own codec does).
    pub async fn handle(
        self: Arc<Self>,
        conn: ConnInfo,
        req: Request<RequestBody>,
        memo: Option<&mut GrantMemo>,
    ) -> Answer {
        // Only a written line has a duration.
        let started = self.log.enabled().then(Instant::now);
        let snapshot = self.snapshot.load_full();
        let trusted = snapshot.is_trusted(conn.peer.ip());
        // Which of the fields the rules know the client sent: those it did not are not looked up.
        let mut plan = Rewrite::new(req.headers());
        // One value for the upstream's request and the client's answer (and the log line).
        let request_id = (trusted && plan.sent(Slot::RequestId))
            .then(|| req.headers().get(X_REQUEST_ID))
            .flatten()
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(|| self.ids.next());
        let mut record = Record {
            // Formatting the time costs on every request; only a written line needs it.
            time: if self.log.enabled() {
                rfc3339(SystemTime::now())
            } else {
                String::new()
            },
            client: headers::client_addr(
                req.headers(),
                conn.peer.ip(),
                trusted && plan.sent(Slot::ForwardedFor),
            ),
            method: req.method().clone(),
            path: String::new(),
            status: 0,
            bytes: 0,
            duration_ms: 0.0,
            route: None,
            upstream: None,
            user: None,
            request_id: if self.log.enabled() {
                request_id.to_str().unwrap_or_default().to_owned()
            } else {
                String::new()
            },
            started,
        };

        let mut kept = None;
        let mut resp = self
            .proxy(
                &snapshot,
                conn,
                trusted,
                req,
                &mut plan,
                &request_id,
                &mut record,
                &mut kept,
                memo,
            )
            .await;
        match kept.as_mut() {
            Some(kept) => kept.request_id = Some(request_id),
            None => {
                resp.headers_mut().insert(X_REQUEST_ID, request_id);
            }
        }
        record.status = resp.status().as_u16();
        self.metrics
            .count_request(record.route.as_deref(), record.status);
        if !self.log.enabled() {
            return Answer { resp, kept };
        }
        let (parts, body) = resp.into_parts();
        let body = Logged::new(body, record, self.log.clone()).boxed_unsync();
        Answer {
            resp: Response::from_parts(parts, body),
            kept,
        }
    }

    /// The answer to `req`; `kept` receives the upstream's fields when they go on as they came.
    #[allow(clippy::too_many_arguments)] // one private call site
    async fn proxy(
        &self,
        snapshot: &Snapshot,
        conn: ConnInfo,
        trusted: bool,
        mut req: Request<RequestBody>,
        plan: &mut Rewrite,
        request_id: &HeaderValue,
        record: &mut Record,
        kept: &mut Option<Box<Verbatim>>,
        memo: Option<&mut GrantMemo>,
    ) -> Response<Body> {
        let uri = req.uri().clone();
        let audience = Audience::of(req.headers(), snapshot.gatekeeper.default_password);
        let path = match canonicalize(uri.path()) {
            Ok(path) => path,
            Err(e) => {
                record.path = uri.path().chars().take(256).collect();
                return pages::problem(
                    audience,
                    Problem {
                        status: StatusCode::BAD_REQUEST,
                        title: "Bad request path",
                        detail: &format!("The request path was refused: {e}."),
                        retry_after: None,
                    },
                );
            }
        };
        // Copies only a written line needs.
        let logging = self.log.enabled();
        if logging {
            record.path = path.to_string();
        }

        if path == "/healthz" {
            return pages::healthz();
        }
        if path == vast_portal::RESOLVER && snapshot.config.vast.portal {
            return pages::portal_resolver();
        }

        let gateway = &snapshot.config.gateway;
        let matched = snapshot.router.lookup(&path);
        if let RouteMatch::Forward { route, .. } = &matched {
            record.route = Some(route.prefix.clone());
            if logging {
                record.upstream = Some(route.upstream.as_str().to_owned());
            }
        }

        let mut user = None;
        let mut query = uri.query().map(str::to_owned);
        let mut set_cookie = None;
        if !is_public(&gateway.public, &path) {
            let admission = snapshot
                .gatekeeper
                .admit(
                    &Knock {
                        headers: req.headers(),
                        path: &path,
                        query: uri.query(),
                        client: record.client,
                        trusted_peer: trusted,
                        secure: conn.proto == "https",
                        audience,
                    },
                    memo,
                )
                .await;
            match admission {
                Admission::Pass {
                    user: who,
                    query: rewritten,
                    set_cookie: cookie,
                } => {
                    user = who;
                    if let Some(rewritten) = rewritten {
                        query = rewritten;
                    }
                    set_cookie = cookie;
                }
                Admission::Answer(resp) => {
                    self.metrics.count_auth_refusal(resp.status());
                    return resp;
                }
            }
        } else if let Some(rewritten) = snapshot.gatekeeper.strip_own_token(uri.query()) {
            query = rewritten;
        }
        if logging {
            record.user = user.as_ref().map(|u| u.name().to_owned());
        }

        if path.starts_with(portal::PREFIX) {
            return portal::answer(self, snapshot, &path, audience);
        }
        if path == portal::PREFIX.trim_end_matches('/') {
            return pages::redirect(portal::PREFIX);
        }

        let (route, forward_path) = match matched {
            RouteMatch::Forward {
                route,
                forward_path,
            } => (route, forward_path),
            RouteMatch::AddSlash { mut location } => {
                if let Some(q) = &query {
                    location.push('?');
                    location.push_str(q);
                }
                return pages::redirect(&location);
            }
            RouteMatch::NotFound => {
                return pages::problem(
                    audience,
                    Problem {
                        status: StatusCode::NOT_FOUND,
                        title: "Not found",
                        detail: "No app is served under this path.",
                        retry_after: None,
                    },
                )
            }
        };
        if snapshot
            .gatekeeper
            .closes(route, gateway.allow_default_password)
        {
            return pages::problem(
                audience,
                Problem {
                    status: StatusCode::FORBIDDEN,
                    title: &format!("{} is closed while the default password is in use", route.name),
                    detail: "Anyone who guesses admin/admin could use it. Set PASSWORD (and USERNAME) in the \
                             container's environment and restart the container to open it.",
                    retry_after: None,
                },
            );
        }

        if let Some(board) = &self.board {
            if let Some(resp) = programs::unavailable(board, route, audience) {
                return resp;
            }
        }

        let upgrade = if plan.sent(Slot::Upgrade) {
            headers::upgrade_request(req.headers())
        } else {
            UpgradeRequest::None
        };
        let websocket = match upgrade {
            UpgradeRequest::WebSocket => true,
            // Other upgrades (h2c, ...) are never performed: hop-by-hop removal drops the
            // request's Upgrade header and it is served as plain HTTP/1.1.
            UpgradeRequest::Other | UpgradeRequest::None => false,
        };
        let host = forward::client_host(req.headers(), req.uri());
        if websocket && !headers::origin_allowed(req.headers(), host.as_ref(), &route.allow_origins)
        {
            return pages::problem(
                audience,
                Problem {
                    status: StatusCode::FORBIDDEN,
                    title: "Cross-origin WebSocket refused",
                    detail: "A page of another site tried to open a connection to this app in your name.",
                    retry_after: None,
                },
            );
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let encoding = route
            .compress
            .then(|| compress::negotiate(req.headers().get(header::ACCEPT_ENCODING)))
            .flatten();

        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let outgoing = Outgoing {
            route,
            path: forward_path,
            query: query.as_deref(),
            hop: Hop {
                peer: conn.peer.ip(),
                trusted,
                proto: conn.proto,
                host: host.as_ref(),
            },
            request_id,
            websocket,
        };
        if let Err(status) = forward::prepare(&mut parts, &outgoing, plan) {
            return pages::empty(status);
        }
        snapshot
            .gatekeeper
            .scrub(&parts.headers, plan, route, user.as_ref());

        let outbound = Outbound::of(parts, body, plan);
        let upstream_resp = match self
            .upstreams
            .send(
                &route.upstream,
                outbound,
                route.response_timeout,
                conn.own_codec,
            )
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                self.metrics.count_upstream_error(&e);
                return upstream_problem(route, &e, audience);
            }
        };

        let mut resp = match client_upgrade {
            Some(client_upgrade) if upstream_resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let resp = forward::switching_protocols(&upstream_resp);
                let upstream_upgrade = hyper::upgrade::on(upstream_resp);
                let idle = snapshot.config.gateway.tunnel_idle_timeout;
                let stop = self.streams_stop.clone();
                self.tunnels.spawn(async move {
                    let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                        (Ok(c), Ok(u)) => (TokioIo::new(c), TokioIo::new(u)),
                        (c, u) => {
                            tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade failed");
                            return;
                        }
                    };
                    if let Err(e) = super::tunnel::splice(client, upstream, idle, stop).await {
                        tracing::debug!(error = %e, "tunnel ended with an error");
                    }
                });
                resp
            }
            _ if upstream_resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                // An upstream switching protocols on a request that did not ask for it.
                upstream_problem(
                    route,
                    &UpstreamError::Failed("unexpected 101 Switching Protocols".into()),
                    audience,
                )
            }
            _ => {
                let how = Shaping {
                    method: &method,
                    encoding,
                    streams_stop: &self.streams_stop,
                };
                let (resp, fields) = forward::shape(upstream_resp, &how);
                *kept = fields;
                resp
            }
        };
        if let Some(cookie) = set_cookie {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
        resp
    }
}

/// The page for an upstream that gave no usable answer.
#[cold]
fn upstream_problem(route: &Route, error: &UpstreamError, audience: Audience) -> Response<Body> {
    let (status, title, detail) = match error {
        UpstreamError::Unreachable(why) => (
            StatusCode::BAD_GATEWAY,
            format!("{} is not answering", route.name),
            format!(
                "The gateway could not reach {} at {} ({why}). If it was just started, it may still be loading.",
                route.name, route.upstream
            ),
        ),
        UpstreamError::Failed(why) => (
            StatusCode::BAD_GATEWAY,
            format!("{} broke off the connection", route.name),
            format!("The exchange with {} failed ({why}).", route.name),
        ),
        UpstreamError::ClientBody(why) => (
            StatusCode::BAD_REQUEST,
            "The request body was incomplete".to_string(),
            format!("The request body broke off or was malformed ({why})."),
        ),
        UpstreamError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{} is taking too long", route.name),
            format!(
                "{} did not answer within {} s.",
                route.name,
                route.response_timeout.as_secs()
            ),
        ),
    };
    if status.is_server_error() {
        tracing::warn!(route = %route.prefix, upstream = %route.upstream, %detail, "upstream error");
    }
    pages::problem(
        audience,
        Problem {
            status,
            title: &title,
            detail: &detail,
            retry_after: status.is_server_error().then_some(RETRY_SECS),
        },
    )
}
