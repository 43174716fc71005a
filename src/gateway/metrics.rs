//! Counters for `/_vastgate/metrics`: requests by route and status, upstream errors, refused
//! logins. Kept small and cheap: one short lock per request on a shard of the thread's own (so
//! worker threads do not contend), no allocation once a route/status pair has been seen.

use std::collections::BTreeMap;

use fnv::FnvHashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use http::StatusCode;

use super::forward::UpstreamError;

/// Route prefix ("" for requests no route took) → status → count. The prefixes come from the
/// config, not from clients: FNV, not SipHash.
type RequestCounts = FnvHashMap<String, BTreeMap<u16, u64>>;

/// Request counters are split this many ways, by thread.
const SHARDS: usize = 16;

/// The shard of the calling thread.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// The gateway's request counters.
#[derive(Default)]
pub struct Metrics {
    requests: [Mutex<RequestCounts>; SHARDS],
    upstream_unreachable: AtomicU64,
    upstream_failed: AtomicU64,
    upstream_timeout: AtomicU64,
    /// Answers instead of forwarding: 401, 403 (upstream mode), 429, 503 (hashing busy).
    auth_refusals: Mutex<BTreeMap<u16, u64>>,
    /// Client connections by what served their requests: the gateway's own HTTP/1.1 codec
    /// (`express.rs`) to the end, or hyper (from the start, or from the first request that
    /// needed it).
    connections_own: AtomicU64,
    connections_hyper: AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, route: Option<&str>, status: u16) {
        let route = route.unwrap_or("");
        let mut requests = self.requests[shard()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match requests.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_insert(0) += 1,
            None => {
                requests.insert(route.to_string(), BTreeMap::from([(status, 1)]));
            }
        }
    }

    pub fn count_upstream_error(&self, error: &UpstreamError) {
        let counter = match error {
            UpstreamError::Unreachable(_) => &self.upstream_unreachable,
            UpstreamError::Failed(_) => &self.upstream_failed,
            UpstreamError::Timeout => &self.upstream_timeout,
            UpstreamError::ClientBody(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection served by the gateway's own codec (until it is handed to hyper).
    pub fn count_own_connection(&self) {
        self.connections_own.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection served by hyper, from the start or after a hand-over.
    pub fn count_hyper_connection(&self) {
        self.connections_hyper.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_auth_refusal(&self, status: StatusCode) {
        let mut refusals = self.auth_refusals.lock().unwrap_or_else(|e| e.into_inner());
        *refusals.entry(status.as_u16()).or_insert(0) += 1;
    }

    /// Appends the Prometheus text of every counter.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP vastgate_requests_total Requests answered, by route prefix and status.\n\
             # TYPE vastgate_requests_total counter\n",
        );
        {
            let mut requests: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
            for shard in &self.requests {
                let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                for (route, by_status) in shard.iter() {
                    let total = requests.entry(route.clone()).or_default();
                    for (status, n) in by_status {
                        *total.entry(*status).or_insert(0) += n;
                    }
                }
            }
            for (route, by_status) in requests {
                for (status, n) in by_status {
                    let _ = writeln!(
                        out,
                        "vastgate_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                        label(&route)
                    );
                }
            }
        }
        out.push_str(
            "# HELP vastgate_upstream_errors_total Requests an upstream gave no usable answer to.\n\
             # TYPE vastgate_upstream_errors_total counter\n",
        );
        for (kind, counter) in [
            ("unreachable", &self.upstream_unreachable),
            ("failed", &self.upstream_failed),
            ("timeout", &self.upstream_timeout),
        ] {
            let _ = writeln!(
                out,
                "vastgate_upstream_errors_total{{kind=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP vastgate_auth_refusals_total Requests refused by authentication, by status.\n\
             # TYPE vastgate_auth_refusals_total counter\n",
        );
        let refusals = self.auth_refusals.lock().unwrap_or_else(|e| e.into_inner());
        for (status, n) in refusals.iter() {
            let _ = writeln!(
                out,
                "vastgate_auth_refusals_total{{status=\"{status}\"}} {n}"
            );
        }
        drop(refusals);
        out.push_str(
            "# HELP vastgate_connections_total Client connections, by the HTTP codec that served \
             them: the gateway's own HTTP/1.1 one (body-less requests) or hyper's (from the first \
             request with a body or an upgrade, and HTTP/2).\n\
             # TYPE vastgate_connections_total counter\n",
        );
        for (codec, counter) in [
            ("own", &self.connections_own),
            ("hyper", &self.connections_hyper),
        ] {
            let _ = writeln!(
                out,
                "vastgate_connections_total{{codec=\"{codec}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

/// Escapes a Prometheus label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = Metrics::default();
        m.count_request(Some("/files/"), 200);
        m.count_request(Some("/files/"), 200);
        m.count_request(Some("/files/"), 502);
        m.count_request(None, 404);
        m.count_upstream_error(&UpstreamError::Timeout);
        m.count_upstream_error(&UpstreamError::ClientBody("x".into()));
        m.count_auth_refusal(StatusCode::UNAUTHORIZED);
        m.count_auth_refusal(StatusCode::TOO_MANY_REQUESTS);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("vastgate_requests_total{route=\"/files/\",status=\"200\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("vastgate_requests_total{route=\"/files/\",status=\"502\"} 1\n"));
        assert!(out.contains("vastgate_requests_total{route=\"\",status=\"404\"} 1\n"));
        assert!(out.contains("vastgate_upstream_errors_total{kind=\"timeout\"} 1\n"));
        assert!(out.contains("vastgate_upstream_errors_total{kind=\"failed\"} 0\n"));
        assert!(out.contains("vastgate_auth_refusals_total{status=\"401\"} 1\n"));
        assert!(out.contains("vastgate_auth_refusals_total{status=\"429\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
