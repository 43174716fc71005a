//! Choosing a route for a canonical path.
//!
//! Routing only ever looks at the canonical path (see [`super::path`]): never at the Host header
//! or an absolute-form target, which a client controls freely.

use std::sync::Arc;

use crate::config::Route;

/// What the router decided for one path.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// Forward to this route; `forward_path` is what the upstream sees (prefix stripped if asked).
    Forward {
        route: &'a Arc<Route>,
        forward_path: &'a str,
    },
    /// The path is a route's prefix without its trailing slash: send the client there.
    AddSlash { location: String },
    /// No route serves this path.
    NotFound,
}

/// Routes ordered so that the first match is the longest prefix.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut routes: Vec<Arc<Route>> = routes.iter().cloned().map(Arc::new).collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Router { routes }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Longest prefix wins, on segment boundaries: `/files/` serves `/files/x` but not
    /// `/filesystem`; a prefix without trailing slash (`/api`) serves `/api` and `/api/...`.
    pub fn lookup<'a>(&'a self, path: &'a str) -> RouteMatch<'a> {
        for route in &self.routes {
            let prefix = &*route.prefix;
            if let Some(rest) = match_prefix(prefix, path) {
                let forward_path = if route.strip_prefix {
                    // `rest` starts right after the prefix; keep a leading slash.
                    let cut = path.len() - rest.len();
                    let cut = if prefix.ends_with('/') { cut - 1 } else { cut };
                    match path.get(cut..) {
                        Some("") | None => "/",
                        Some(p) => p,
                    }
                } else {
                    path
                };
                return RouteMatch::Forward {
                    route,
                    forward_path,
                };
            }
            if prefix.len() > 1 && prefix.strip_suffix('/') == Some(path) {
                return RouteMatch::AddSlash {
                    location: prefix.to_string(),
                };
            }
        }
        RouteMatch::NotFound
    }
}

/// Returns what follows `prefix` in `path` when `path` lies under it on a segment boundary.
fn match_prefix<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    if prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// Whether `path` is one of the public paths (exact, or under one ending in `/`).
pub fn is_public(public: &[String], path: &str) -> bool {
    public.iter().any(|p| {
        if p.ends_with('/') {
            path.starts_with(p.as_str())
        } else {
            path == p
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(prefix: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.into(),
            name: prefix.into(),
            upstream: "127.0.0.1:1".parse().unwrap(),
            strip_prefix: strip,
            program: None,
            drop_accept_encoding: false,
            compress: true,
            allow_origins: vec![],
            response_timeout: Duration::from_secs(1),
            sensitive: false,
            keep_authorization: false,
        }
    }

    fn router() -> Router {
        Router::new(&[
            route("/", false),
            route("/files/", false),
            route("/logs/", true),
            route("/api", false),
            route("/jupyter/lab/", true),
        ])
    }

    fn forwarded(r: &Router, path: &str) -> Option<(String, String)> {
        match r.lookup(path) {
            RouteMatch::Forward {
                route,
                forward_path,
            } => Some((route.prefix.to_string(), forward_path.to_string())),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let r = router();
        let cases = [
            ("/", "/", "/"),
            ("/index.html", "/", "/index.html"),
            ("/files/", "/files/", "/files/"),
            ("/files/a/b.png", "/files/", "/files/a/b.png"),
            ("/filesystem", "/", "/filesystem"),
            ("/files.txt", "/", "/files.txt"),
            ("/api", "/api", "/api"),
            ("/api/v1", "/api", "/api/v1"),
            ("/apix", "/", "/apix"),
            ("/logs/", "/logs/", "/"),
            ("/logs/api/x", "/logs/", "/api/x"),
            ("/logs/ws", "/logs/", "/ws"),
            ("/jupyter/lab/tree", "/jupyter/lab/", "/tree"),
            ("/FILES/x", "/", "/FILES/x"),
        ];
        for (path, prefix, fwd) in cases {
            assert_eq!(
                forwarded(&r, path),
                Some((prefix.to_string(), fwd.to_string())),
                "{path}"
            );
        }
    }

    #[test]
    fn bare_prefix_redirects_to_its_slash() {
        let r = router();
        for (path, to) in [("/files", "/files/"), ("/logs", "/logs/")] {
            match r.lookup(path) {
                RouteMatch::AddSlash { location } => assert_eq!(location, to),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_root_route_unknown_paths_are_not_found() {
        let r = Router::new(&[route("/files/", false)]);
        assert!(matches!(r.lookup("/other"), RouteMatch::NotFound));
        assert!(matches!(r.lookup("/filesx/"), RouteMatch::NotFound));
    }

    #[test]
    fn public_paths_are_exact_or_slash_prefixes() {
        let public = vec!["/healthz".to_string(), "/.well-known/".to_string()];
        assert!(is_public(&public, "/healthz"));
        assert!(!is_public(&public, "/healthz/x"));
        assert!(!is_public(&public, "/healthzx"));
        assert!(!is_public(&public, "/HEALTHZ"));
        assert!(is_public(&public, "/.well-known/acme"));
        assert!(!is_public(&public, "/.well-known"));
    }
}
