//! The gateway's own answers: error pages, redirects, `/healthz`.
//!
//! Browsers get a small self-refreshing HTML page that names the app; API clients get JSON. A
//! request that came through Cloudflare (`Cf-Ray`) gets 200 instead of a 5xx, because Cloudflare
//! would replace a 5xx body with its own page and the user would never see ours.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Who will read an error answer, taken from the request headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audience {
    /// A browser that wants a page rather than JSON.
    pub html: bool,
    /// The request came through Cloudflare (`Cf-Ray`).
    pub cloudflare: bool,
    /// The login is still the default admin/admin: every page says so.
    pub default_password: bool,
}

impl Audience {
    pub fn of(headers: &HeaderMap, default_password: bool) -> Audience {
        Audience {
            default_password,
            html: headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html")),
            cloudflare: headers.contains_key("cf-ray"),
        }
    }
}

/// A complete response with a fixed body.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body = Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp
}

/// What went wrong, for [`problem`].
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub status: StatusCode,
    /// A short title: "Forge is not answering".
    pub title: &'a str,
    /// One or two sentences for the user.
    pub detail: &'a str,
    /// Seconds after which a browser page reloads itself (and `Retry-After`), if any.
    pub retry_after: Option<u32>,
}

/// An error answer shaped for the client: HTML for browsers, JSON for others.
#[cold]
pub fn problem(audience: Audience, p: Problem<'_>) -> Response<Body> {
    problem_with(audience, p, &Extra::default())
}

/// More for a [`problem`] answer: an HTML fragment for browsers (already escaped) and a JSON
/// value for other clients.
#[derive(Debug, Default)]
pub struct Extra {
    pub html: String,
    pub json: Option<(&'static str, serde_json::Value)>,
}

/// [`problem`] with more to show.
#[cold]
pub fn problem_with(audience: Audience, p: Problem<'_>, extra: &Extra) -> Response<Body> {
    let status = if audience.cloudflare && p.status.is_server_error() {
        StatusCode::OK
    } else {
        p.status
    };
    let mut resp = if audience.html {
        full(
            status,
            "text/html; charset=utf-8",
            html_page(&p, audience.default_password, &extra.html),
        )
    } else {
        let mut body = serde_json::json!({
            "error": p.title,
            "detail": p.detail,
            "status": p.status.as_u16(),
        });
        if audience.default_password {
            body["warning"] = DEFAULT_PASSWORD_WARNING.into();
        }
        if let Some((key, value)) = &extra.json {
            body[*key] = value.clone();
        }
        full(status, "application/json", format!("{body}\n"))
    };
    if let Some(secs) = p.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub const DEFAULT_PASSWORD_WARNING: &str =
    "This box still uses the default login admin/admin: set PASSWORD in its environment and restart.";

fn html_page(p: &Problem<'_>, default_password: bool, extra_html: &str) -> String {
    let banner = if default_password {
        format!("<p class=\"warn\">{DEFAULT_PASSWORD_WARNING}</p>")
    } else {
        String::new()
    };
    let refresh = p
        .retry_after
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let note = if p.retry_after.is_some() {
        "<p class=\"note\">This page reloads itself.</p>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;\
         margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}.note{{color:#666}}\
         code{{background:#f3f3f3;padding:0 .2em}}pre{{background:#f6f6f6;padding:.5rem;\
         overflow-x:auto;font-size:.8rem}}.warn{{background:#fde2e1;color:#8a1c14;\
         padding:.5rem .75rem;border-radius:4px}}</style></head><body>{banner}<h1>{title}</h1>\
         <p>{detail}</p>{extra_html}{note}<p class=\"note\">{code} · vastgate</p></body></html>\n",
        title = escape(p.title),
        detail = escape(p.detail),
        code = p.status.as_u16(),
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A redirect that keeps the method (307) to `location`.
#[cold]
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// `/portal-resolver` in Vast's portal mode: public, and readable from any origin (Vast's portal
/// page polls it to see that the instance answers).
#[cold]
pub fn portal_resolver() -> Response<Body> {
    let mut resp = full(StatusCode::OK, "application/json", "{\"status\":\"ok\"}\n");
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// `GET /healthz`: the gateway itself is up.
#[cold]
pub fn healthz() -> Response<Body> {
    full(StatusCode::OK, "application/json", "{\"status\":\"ok\"}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    const DOWN: Problem<'static> = Problem {
        status: StatusCode::BAD_GATEWAY,
        title: "Forge is not answering",
        detail: "<script>",
        retry_after: Some(5),
    };

    #[test]
    fn browsers_get_a_refreshing_escaped_page() {
        let resp = problem(
            Audience::of(&headers(&[("accept", "text/html,*/*")]), false),
            DOWN,
        );
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(resp.headers()["retry-after"], "5");
    }

    #[test]
    fn cloudflare_requests_get_200_for_server_errors_only() {
        let resp = problem(Audience::of(&headers(&[("cf-ray", "abc")]), false), DOWN);
        assert_eq!(resp.status(), StatusCode::OK);
        let not_found = Problem {
            status: StatusCode::NOT_FOUND,
            ..DOWN
        };
        assert_eq!(
            problem(
                Audience::of(&headers(&[("cf-ray", "abc")]), false),
                not_found
            )
            .status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn html_escapes_everything_user_visible() {
        let page = html_page(&DOWN, false, "");
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
    }
}
