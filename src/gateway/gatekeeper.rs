//! Who may pass: the gateway's use of [`crate::auth`].
//!
//! The gatekeeper turns `[gateway] auth` into a decision per request — pass (as which user), or
//! the answer to send instead (401, 429, 503, or a redirect that trades Vast's `?token=` for a
//! session cookie) — and afterwards removes from the forwarded request the credentials the gateway
//! consumed, so an upstream (Forge runs third-party extensions) never sees them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::pages::{self, Audience, Problem};
use super::rewrite::{Rewrite, Slot};
use super::Body;
use crate::auth::{
    is_browser_navigation, remove_user_file, strip_token_query, upsert_user_file, AuthSettings,
    Authenticator, GrantMemo, User, VastToken, Verdict, DEFAULT_BCRYPT_COST,
};
use crate::config::{AuthMode, Config, Route};

/// How often the htpasswd file is checked for changes.
const WATCH_PERIOD: Duration = Duration::from_secs(1);
/// The password `env_credentials` falls back to, which must never go unnoticed.
const DEFAULT_USER: &str = "admin";
const DEFAULT_PASSWORD: &str = "admin";

/// The authentication state of one configuration.
pub struct Gatekeeper {
    mode: AuthMode,
    basic: Option<Basic>,
    vast: Option<VastToken>,
    /// `env_credentials` with no `PASSWORD` set (or set to the default).
    pub default_password: bool,
}

struct Basic {
    auth: Arc<Authenticator>,
    path: PathBuf,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Basic {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// What the gatekeeper looks at in one request.
#[derive(Clone, Copy)]
pub struct Knock<'a> {
    pub headers: &'a HeaderMap,
    /// The canonical path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The client's address, as far as it can be believed (for the failure limiter).
    pub client: IpAddr,
    /// The peer is in `trusted_proxies` (what `auth = "upstream"` requires).
    pub trusted_peer: bool,
    /// The request came over TLS (the session cookie is then `Secure`).
    pub secure: bool,
    pub audience: Audience,
}

/// The outcome of checking one request.
pub enum Admission {
    /// Go on; `user` is who the credentials named (none on public paths or without auth).
    Pass {
        user: Option<User>,
        /// The query without the gateway's own `token` parameter, when it carried one.
        query: Option<Option<String>>,
        /// A `Set-Cookie` for the response (the token was traded for a session cookie).
        set_cookie: Option<HeaderValue>,
    },
    /// Send this instead of forwarding.
    Answer(Response<Body>),
}

impl Gatekeeper {
    /// Builds the gatekeeper for `config`, reusing `previous`'s authenticator (and its cache) when
    /// the htpasswd file is the same. Blocking: it may hash (the environment's user) and read
    /// files. `Err` says why the configuration cannot be served.
    pub fn build(config: &Config, previous: Option<&Gatekeeper>) -> Result<Gatekeeper, String> {
        let g = &config.gateway;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let vast = env("OPEN_BUTTON_TOKEN")
            .and_then(|t| VastToken::new(&t, env("VAST_CONTAINERLABEL").as_deref()));
        let mut default_password = false;
        let basic = match g.auth {
            AuthMode::None | AuthMode::Upstream => None,
            AuthMode::Basic => {
                let path = g.htpasswd.clone().ok_or_else(|| {
                    format!(
                        "{}: auth = \"basic\" needs a password file: add htpasswd = \"FILE\" under [gateway] \
                         (or write auth = \"none\" to serve without a login)",
                        config.path.display()
                    )
                })?;
                let env_user = g.env_credentials.then(|| {
                    let user = env("USERNAME").unwrap_or_else(|| DEFAULT_USER.into());
                    let password = env("PASSWORD").unwrap_or_else(|| DEFAULT_PASSWORD.into());
                    (user, password)
                });
                let previous_path = previous.and_then(|p| p.basic.as_ref()).map(|b| &b.path);
                if let Some((user, password)) = &env_user {
                    default_password = password == DEFAULT_PASSWORD;
                    if previous_path != Some(&path) {
                        apply_env_user(&path, user, password).map_err(|e| {
                            format!(
                                "{}: cannot write the USERNAME/PASSWORD entry: {e}",
                                path.display()
                            )
                        })?;
                    }
                }
                let reusable = previous
                    .and_then(|p| p.basic.as_ref())
                    .filter(|b| b.path == path);
                let auth = match reusable {
                    Some(b) => {
                        b.auth
                            .reload_from(&path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        b.auth.clone()
                    }
                    None => {
                        let settings = AuthSettings {
                            allow_plaintext: g.allow_plaintext,
                            max_failures: g.failure_limit,
                            failure_window: g.failure_window,
                            ..AuthSettings::default()
                        };
                        let (auth, _problems) = Authenticator::from_file(settings, &path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        Arc::new(auth)
                    }
                };
                if auth.table().is_empty() {
                    return Err(format!(
                        "{}: no usable users, so nobody could log in: add one with \
                         `vastgate passwd USER --file {}`, or set env_credentials = true and PASSWORD",
                        path.display(),
                        path.display()
                    ));
                }
                if let Some((user, password)) = &env_user {
                    auth.seed(user, password);
                }
                let watcher = auth.clone().spawn_watcher(path.clone(), WATCH_PERIOD);
                Some(Basic {
                    auth,
                    path,
                    watcher,
                })
            }
        };
        if default_password {
            warn_default_password(g.allow_default_password);
        }
        Ok(Gatekeeper {
            mode: g.auth,
            basic,
            vast,
            default_password,
        })
    }

    /// The authenticator behind `auth = "basic"`, for tests and metrics.
    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.basic.as_ref().map(|b| &b.auth)
    }

    /// Decides whether a request to a protected path may pass. `memo`: the client connection's
    /// last grant of Basic credentials, where the connection keeps one.
    pub async fn admit(&self, request: &Knock<'_>, memo: Option<&mut GrantMemo>) -> Admission {
        let Knock {
            headers,
            path,
            query,
            client,
            trusted_peer,
            secure,
            audience,
        } = *request;
        let pass = |user: Option<User>| Admission::Pass {
            user,
            query: None,
            set_cookie: None,
        };
        match self.mode {
            AuthMode::None => return pass(None),
            AuthMode::Upstream if trusted_peer => return pass(None),
            AuthMode::Upstream => {
                return Admission::Answer(pages::problem(
                    audience,
                    Problem {
                        status: StatusCode::FORBIDDEN,
                        title: "Forbidden",
                        detail: "This gateway accepts requests only through its front proxy.",
                        retry_after: None,
                    },
                ))
            }
            AuthMode::Basic => {}
        }

        if let Some(vast) = &self.vast {
            let stripped = query.and_then(|q| strip_token_query(q, |t| vast.matches_token(t)));
            if let Some(rest) = stripped {
                let cookie = vast.set_cookie_header(secure);
                if is_browser_navigation(headers) {
                    let mut location = path.to_string();
                    if !rest.is_empty() {
                        location.push('?');
                        location.push_str(&rest);
                    }
                    let mut resp = pages::empty(StatusCode::FOUND);
                    if let Ok(v) = HeaderValue::from_str(&location) {
                        resp.headers_mut().insert(header::LOCATION, v);
                    }
                    resp.headers_mut().insert(header::SET_COOKIE, cookie);
                    return Admission::Answer(resp);
                }
                return Admission::Pass {
                    user: None,
                    query: Some((!rest.is_empty()).then_some(rest)),
                    set_cookie: Some(cookie),
                };
            }
            if vast.verify_cookies(headers) || vast.check_bearer(headers.get(header::AUTHORIZATION))
            {
                return pass(None);
            }
        }

        let Some(basic) = &self.basic else {
            return pass(None); // unreachable: Basic mode always builds one
        };
        let authorization = headers.get(header::AUTHORIZATION);
        let verdict = match memo {
            Some(memo) => {
                let check = basic
                    .auth
                    .check_basic_remembered(authorization, client, memo);
                check.await
            }
            None => basic.auth.check_basic(authorization, client).await,
        };
        match verdict {
            Verdict::Granted { user } => pass(Some(user)),
            Verdict::Denied => Admission::Answer(unauthorized(audience)),
            Verdict::Limited { retry_after } => Admission::Answer(pages::problem(
                audience,
                Problem {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    title: "Too many failed logins",
                    detail: "Too many wrong passwords came from your address. Wait a minute and try again.",
                    retry_after: Some(whole_seconds(retry_after)),
                },
            )),
            Verdict::Busy { retry_after } => Admission::Answer(pages::problem(
                audience,
                Problem {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    title: "Busy checking passwords",
                    detail: "The gateway is checking many passwords at once. Try again in a moment.",
                    retry_after: Some(whole_seconds(retry_after)),
                },
            )),
        }
    }

    /// The query without the gateway's own `token` parameter, when it carries one: for public
    /// paths, which skip [`admit`](Self::admit) but must not hand the token to their upstream
    /// either. `Some(None)` when nothing else is left.
    pub fn strip_own_token(&self, query: Option<&str>) -> Option<Option<String>> {
        let vast = self
            .vast
            .as_ref()
            .filter(|_| self.mode == AuthMode::Basic)?;
        let rest = strip_token_query(query?, |t| vast.matches_token(t))?;
        Some((!rest.is_empty()).then_some(rest))
    }

    /// Whether `route` is closed because the default password is in use.
    pub fn closes(&self, route: &Route, allow_default_password: bool) -> bool {
        self.default_password && route.sensitive && !allow_default_password
    }

    /// Takes out of the upstream's request (`plan`) the credentials the gateway consumed, and
    /// names the authenticated user. (A client's own `X-Forwarded-User` and its look-alikes
    /// never pass: [`Rewrite::new`].)
    pub fn scrub(
        &self,
        headers: &HeaderMap,
        plan: &mut Rewrite,
        route: &Route,
        user: Option<&User>,
    ) {
        // `keep_authorization` keeps the upstream's own credentials, never the gateway's token.
        let our_bearer = self
            .vast
            .as_ref()
            .is_some_and(|v| v.check_bearer(plan.first(headers, Slot::Authorization)));
        if self.mode == AuthMode::Basic && (!route.keep_authorization || our_bearer) {
            plan.remove(Slot::Authorization);
        }
        if let Some(vast) = &self.vast {
            // The cookies as the rules left them: joined into one field, or the client's one.
            let cookie = match plan.given(Slot::Cookie) {
                Some(joined) => Some(joined.clone()),
                None => plan.first(headers, Slot::Cookie).cloned(),
            };
            match cookie.and_then(|c| vast.strip_cookie(&c)) {
                Some(kept) => plan.give(Slot::Cookie, kept),
                None => plan.remove(Slot::Cookie),
            }
        }
        if let Some(v) = user.and_then(User::header) {
            plan.give(Slot::ForwardedUser, v.clone());
        }
    }
}

/// Writes the environment's user into the htpasswd file and, when `USERNAME` changed since the
/// last start, removes the user it named before: renaming the login must not leave the old one
/// working. The name last written is kept beside the file (`<file>.env-user`).
fn apply_env_user(path: &std::path::Path, user: &str, password: &str) -> std::io::Result<()> {
    let mut marker = path.as_os_str().to_owned();
    marker.push(".env-user");
    let marker = PathBuf::from(marker);
    if let Ok(before) = std::fs::read_to_string(&marker) {
        let before = before.trim();
        if !before.is_empty() && before != user && remove_user_file(path, before)? {
            tracing::info!(
                old = before,
                new = user,
                "USERNAME changed; the old login is removed"
            );
        }
    }
    upsert_user_file(path, user, password, DEFAULT_BCRYPT_COST)?;
    std::fs::write(&marker, format!("{user}\n"))
}

fn unauthorized(audience: Audience) -> Response<Body> {
    let mut resp = pages::problem(
        audience,
        Problem {
            status: StatusCode::UNAUTHORIZED,
            title: "Login required",
            detail: "This box is protected: log in with the user name and password of its htpasswd file.",
            retry_after: None,
        },
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, Authenticator::challenge_header());
    resp
}

fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

fn warn_default_password(allowed: bool) {
    let consequence = if allowed {
        "allow_default_password = true keeps the terminal and file manager open anyway"
    } else {
        "the terminal and file manager stay closed until it is changed"
    };
    tracing::warn!(
        "\n\n  *** The login is admin/admin, the default password. Anyone who guesses it owns this box. ***\n  \
         Set PASSWORD (and USERNAME) in the container's environment and restart; {consequence}.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_vast_token(mode: AuthMode) -> Gatekeeper {
        Gatekeeper {
            mode,
            basic: None,
            vast: VastToken::new("secret-token", Some("C.1")),
            default_password: false,
        }
    }

    fn route(extra: &str) -> Route {
        let text = format!(
            "[gateway]\nauth = \"none\"\n[[route]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\n{extra}\n"
        );
        let mut config = Config::parse(std::path::Path::new("proxy.toml"), &text).unwrap();
        config.routes.remove(0)
    }

    #[test]
    fn keep_authorization_keeps_the_upstreams_credentials_never_the_gateway_token() {
        let g = with_vast_token(AuthMode::Basic);
        let keep = route("keep_authorization = true");
        let scrubbed = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            let mut plan = Rewrite::new(&h);
            g.scrub(&h, &mut plan, &keep, None);
            plan.apply(&mut h);
            h.get(header::AUTHORIZATION).cloned()
        };
        assert_eq!(scrubbed("Bearer secret-token"), None);
        assert_eq!(scrubbed("bearer  secret-token "), None);
        assert_eq!(
            scrubbed("Bearer the-apps-own-token"),
            Some(HeaderValue::from_static("Bearer the-apps-own-token"))
        );
        assert_eq!(
            scrubbed("Basic dXNlcjpwdw=="),
            Some(HeaderValue::from_static("Basic dXNlcjpwdw=="))
        );
    }

    #[test]
    fn own_token_is_taken_out_of_public_queries() {
        let g = with_vast_token(AuthMode::Basic);
        assert_eq!(
            g.strip_own_token(Some("token=secret-token&a=1")),
            Some(Some("a=1".into()))
        );
        assert_eq!(g.strip_own_token(Some("token=secret-token")), Some(None));
        assert_eq!(g.strip_own_token(Some("token=jupyters-own")), None);
        assert_eq!(g.strip_own_token(Some("a=1")), None);
        assert_eq!(g.strip_own_token(None), None);
        // Without basic auth the gateway does not take the token, so it is not its to remove.
        let none = with_vast_token(AuthMode::None);
        assert_eq!(none.strip_own_token(Some("token=secret-token")), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
