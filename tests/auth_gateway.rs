//! Authentication through the real `vastgate` binary: every htpasswd format Apache writes, the
//! cost of checks (read from `/_vastgate/metrics`), file edits and SIGHUP, the failure limiter,
//! Vast's token scheme, what is forwarded, the environment's user and the default password, and
//! that no secret ever reaches a log line.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use http::StatusCode;

/// The challenge every 401 carries.
const CHALLENGE: &str = r#"Basic realm="vastgate", charset="UTF-8""#;
/// A user whose credentials read `/_vastgate/metrics`; cached after its first use.
const METRICS_USER: &str = "metrics";
const METRICS_PASSWORD: &str = "metrics-pw-Qx7";
const TOKEN: &str = "secret-token";
const LABEL: &str = "C.38250";
const COOKIE_NAME: &str = "C.38250_auth_token";

/// An htpasswd line written by vastgate's own library (bcrypt `$2y$`).
fn line(user: &str, password: &str, cost: u32) -> String {
    vastgate::auth::htpasswd_line(user, password, cost).expect("htpasswd line")
}

fn metrics_line() -> String {
    line(METRICS_USER, METRICS_PASSWORD, 4)
}

/// `[gateway]` lines for basic auth over `htpasswd` next to the config; the limiter is set high
/// because every test connects from 127.0.0.1 and several send wrong passwords on purpose.
const BASIC: &str = "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 1000";

/// Hashes computed so far. The metrics user's first read costs one hash itself; call
/// [`warm_metrics`] first.
async fn hashes(addr: SocketAddr) -> u64 {
    metric(
        addr,
        "vastgate_auth_hashes_total",
        &basic_auth(METRICS_USER, METRICS_PASSWORD),
    )
    .await
}

/// Puts the metrics user in the success cache, so that reading metrics costs nothing.
async fn warm_metrics(addr: SocketAddr) {
    hashes(addr).await;
}

async fn get_as(addr: SocketAddr, path: &str, user: &str, password: &str) -> Reply {
    get(
        addr,
        path,
        &[("authorization", &basic_auth(user, password))],
    )
    .await
}

/// `GET /x` as `user` on a kept-alive connection.
async fn status_on(conn: &mut Conn, user: &str, password: &str) -> StatusCode {
    let auth = basic_auth(user, password);
    let req = request("GET", "/x", &[("authorization", &auth)], empty());
    conn.exchange(req).await.status
}

fn assert_challenged(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.text()
    );
    assert_eq!(reply.header("www-authenticate"), Some(CHALLENGE), "{what}");
}

/// Writes `text` to `path` through a temporary file and a rename, as editors and tools do.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The session cookie's value from a `Set-Cookie` header.
fn session_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name.trim(), COOKIE_NAME, "{set_cookie}");
    value.trim().to_owned()
}

fn vast_env(setup: Setup) -> Setup {
    setup
        .env("OPEN_BUTTON_TOKEN", TOKEN)
        .env("VAST_CONTAINERLABEL", LABEL)
}

// ---------------------------------------------------------------------------------------------
// htpasswd formats and malformed headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_apache_htpasswd_format_logs_in_through_the_gateway() {
    const PASSWORD: &str = "p@ss:wörd 1";
    let formats: &[(&str, &[&str])] = &[
        ("bcrypt5", &["-B", "-C", "5"]),
        ("bcrypt10", &["-B", "-C", "10"]),
        ("apr1", &["-m"]),
        ("sha1", &["-s"]),
        ("sha256", &["-2"]),
        ("sha512", &["-5"]),
    ];
    let mut text = String::new();
    for (user, flags) in formats {
        let Some(l) = apache_line(flags, user, PASSWORD) else {
            return;
        };
        text.push_str(&l);
        text.push('\n');
    }
    let (app, seen) = echo_upstream("app").await;
    let gw =
        Gateway::start_with(&Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", text))
            .await;

    assert_challenged(&get(gw.addr, "/x", &[]).await, "no credentials");
    for (user, _) in formats {
        let reply = get_as(gw.addr, "/x", user, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{user}: {}", reply.text());
        let upstream_saw = seen.last();
        assert_eq!(upstream_saw.all("x-forwarded-user"), [*user], "{user}");
        assert_eq!(upstream_saw.header("authorization"), None, "{user}");

        let before = seen.len();
        for wrong in ["p@ss:wörd 2", "", "P@SS:WÖRD 1", "p@ss:wörd 1 "] {
            let reply = get_as(gw.addr, "/x", user, wrong).await;
            assert_challenged(&reply, &format!("{user} with {wrong:?}"));
        }
        let reply = get_as(gw.addr, "/x", &user.to_uppercase(), PASSWORD).await;
        assert_challenged(&reply, &format!("{user} in upper case"));
        assert_eq!(seen.len(), before, "a refused request reached the upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_challenged_never_a_server_error() {
    let (app, seen) = echo_upstream("app").await;
    let htpasswd = format!("{}\n{}\n", metrics_line(), line("alice", "alice-pw", 4));
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", htpasswd),
    )
    .await;
    warm_metrics(gw.addr).await;
    let before = hashes(gw.addr).await;

    let b64 = |s: &[u8]| STANDARD.encode(s);
    let huge_token = "A".repeat(16 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("no colon", format!("Basic {}", b64(b"alicealice-pw"))),
        ("bad base64", "Basic !!!not*base64!!!".into()),
        ("base64 with a hole", "Basic YWxp Y2U6YWxpY2UtcHc=".into()),
        ("padding in the middle", "Basic YQ==YWxpY2U6".into()),
        ("scheme only", "Basic".into()),
        ("scheme and space", "Basic ".into()),
        ("empty", String::new()),
        ("white space", "   ".into()),
        ("wrong scheme: Bearer", "Bearer alice-pw".into()),
        ("wrong scheme: Digest", "Digest username=\"alice\"".into()),
        (
            "wrong scheme: NTLM",
            "NTLM TlRMTVNTUAABAAAAB4IIAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        ),
        (
            "scheme glued to token",
            format!("Basic{}", b64(b"alice:alice-pw")),
        ),
        ("empty user", format!("Basic {}", b64(b":alice-pw"))),
        (
            "non-UTF-8 user",
            format!("Basic {}", b64(b"\xff\xfe:alice-pw")),
        ),
        ("huge token", format!("Basic {huge_token}")),
        (
            "huge password",
            format!(
                "Basic {}",
                b64(format!("alice:{}", "x".repeat(5000)).as_bytes())
            ),
        ),
        (
            "huge user",
            format!(
                "Basic {}",
                b64(format!("{}:alice-pw", "u".repeat(300)).as_bytes())
            ),
        ),
        ("huge header", format!("Basic {}", "QUFB".repeat(16 * 1024))),
    ];
    for (what, value) in &cases {
        let reply = get(gw.addr, "/x", &[("authorization", value)]).await;
        assert_challenged(&reply, what);
    }
    // Bytes no HeaderValue builder would make, straight onto the socket.
    let raw_cases: &[(&str, &[u8])] = &[
        ("latin-1 bytes", b"Basic \xe9t\xe9:\xff\xfe"),
        ("high bytes after scheme", b"Basic \x80\x81\x82\x83"),
        ("two spaces and a tab", b"Basic \t YWxpY2U="),
    ];
    for (what, value) in raw_cases {
        let mut req =
            format!("GET /x HTTP/1.1\r\nHost: {}\r\nAuthorization: ", gw.addr).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let reply = within(PATIENCE, what, raw_exchange(gw.addr, &req))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            reply.status == 401 || reply.status == 400,
            "{what}: status {}",
            reply.status
        );
    }
    // Two Authorization headers: never a 500, never a pass on the second one's credentials.
    let reply = get(
        gw.addr,
        "/x",
        &[
            ("authorization", "Bearer nothing"),
            ("authorization", &basic_auth("alice", "alice-pw")),
        ],
    )
    .await;
    assert!(
        reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::BAD_REQUEST,
        "two Authorization headers: {}",
        reply.status
    );

    assert_eq!(seen.len(), 0, "a malformed header reached the upstream");
    assert_eq!(
        hashes(gw.addr).await,
        before,
        "a malformed Authorization header cost a hash"
    );
    let reply = get_as(gw.addr, "/x", "alice", "alice-pw").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

// ---------------------------------------------------------------------------------------------
// Reloading the file
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_htpasswd_file_changes_who_may_enter_without_a_restart() {
    let (app, _) = echo_upstream("app").await;
    let alice1 = line("alice", "alice-one", 4);
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", format!("{alice1}\n")),
    )
    .await;
    let file = gw.dir().join("htpasswd");
    let status = |user: &'static str, password: &'static str| {
        let addr = gw.addr;
        async move { get_as(addr, "/x", user, password).await.status }
    };

    assert_eq!(status("alice", "alice-one").await, StatusCode::OK);
    assert_eq!(status("bob", "bob-one").await, StatusCode::UNAUTHORIZED);
    // A kept-alive connection's repeated credentials are granted from its last grant: a new file
    // must end that grant on the connection at once, not only for new connections.
    let mut alices = Conn::open(gw.addr).await;
    for _ in 0..2 {
        let kept = status_on(&mut alices, "alice", "alice-one").await;
        assert_eq!(kept, StatusCode::OK);
    }

    // Add a user, appending in place (same inode, the way `htpasswd` without -c edits).
    let bob = line("bob", "bob-one", 4);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(format!("{bob}\n").as_bytes())
        .unwrap();
    eventually(PATIENCE, "bob, added to the file, may enter", || async {
        status("bob", "bob-one").await == StatusCode::OK
    })
    .await;
    let mut bobs = Conn::open(gw.addr).await;
    for _ in 0..2 {
        assert_eq!(status_on(&mut bobs, "bob", "bob-one").await, StatusCode::OK);
    }

    // Change a password (alice's old one is in the success cache: the new hash must beat it).
    let alice2 = line("alice", "alice-two", 4);
    replace_file(&file, &format!("{alice2}\n{bob}\n"));
    eventually(PATIENCE, "alice's old password stops working", || async {
        status("alice", "alice-one").await == StatusCode::UNAUTHORIZED
    })
    .await;
    let kept = status_on(&mut alices, "alice", "alice-one").await;
    assert_eq!(
        kept,
        StatusCode::UNAUTHORIZED,
        "on her kept-alive connection too"
    );
    assert_eq!(status("alice", "alice-two").await, StatusCode::OK);
    assert_eq!(status("bob", "bob-one").await, StatusCode::OK);
    assert_eq!(status_on(&mut bobs, "bob", "bob-one").await, StatusCode::OK);

    // Remove a user whose credentials are cached.
    replace_file(&file, &format!("{alice2}\n"));
    eventually(
        PATIENCE,
        "bob, removed from the file, is refused",
        || async { status("bob", "bob-one").await == StatusCode::UNAUTHORIZED },
    )
    .await;
    let kept = status_on(&mut bobs, "bob", "bob-one").await;
    assert_eq!(
        kept,
        StatusCode::UNAUTHORIZED,
        "on his kept-alive connection too"
    );
    assert!(
        !alices.is_closed() && !bobs.is_closed(),
        "one connection each throughout"
    );
    assert_eq!(status("alice", "alice-two").await, StatusCode::OK);

    // A file with no usable line (half-written, say) keeps the users loaded before.
    replace_file(&file, "this is not an htpasswd line\n");
    let kept = gw
        .stderr
        .wait_for(PATIENCE, |l| l.contains("keeping the previous users"))
        .await;
    assert!(kept.is_some(), "no log line about the unusable file");
    assert_eq!(status("alice", "alice-two").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_htpasswd_file() {
    let (app, _) = echo_upstream("app").await;
    let alice1 = line("alice", "alice-one", 4);
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", format!("{alice1}\n")),
    )
    .await;
    let file = gw.dir().join("htpasswd");
    assert_eq!(
        get_as(gw.addr, "/x", "alice", "alice-one").await.status,
        StatusCode::OK
    );

    // Rewrite the file in place with a line of the same length and put the modification time
    // back, so that the mtime watcher sees the same file: only SIGHUP can load the change.
    let alice2 = line("alice", "alice-two", 4);
    assert_eq!(alice1.len(), alice2.len());
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all(format!("{alice2}\n").as_bytes()).unwrap();
    f.set_modified(modified).unwrap();
    drop(f);

    let reloads = || {
        gw.stderr
            .all()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    };
    assert_eq!(reloads(), 0);
    gw.signal(libc::SIGHUP);
    let reloaded = gw
        .stderr
        .wait_for(PATIENCE, |l| l.contains("configuration reloaded"))
        .await;
    assert!(reloaded.is_some(), "no reload after SIGHUP");

    assert_eq!(
        get_as(gw.addr, "/x", "alice", "alice-two").await.status,
        StatusCode::OK
    );
    assert_challenged(
        &get_as(gw.addr, "/x", "alice", "alice-one").await,
        "alice's old password after SIGHUP",
    );
}

// ---------------------------------------------------------------------------------------------
// What checks cost
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_credentials_cost_no_hash_and_fifty_identical_first_requests_cost_one() {
    let (app, seen) = echo_upstream("app").await;
    // bob's cost-10 hash is slow enough that the burst overlaps it.
    let htpasswd = format!(
        "{}\n{}\n{}\n",
        metrics_line(),
        line("alice", "alice-pw", 5),
        line("bob", "bob-pw", 10)
    );
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", htpasswd),
    )
    .await;
    warm_metrics(gw.addr).await;
    let base = hashes(gw.addr).await;
    assert_eq!(hashes(gw.addr).await, base, "a cached metrics read hashed");

    assert_eq!(
        get_as(gw.addr, "/a", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    assert_eq!(hashes(gw.addr).await, base + 1, "alice's first request");
    for _ in 0..5 {
        assert_eq!(
            get_as(gw.addr, "/a", "alice", "alice-pw").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        hashes(gw.addr).await,
        base + 1,
        "cache hits computed hashes"
    );

    // A page load: 50 requests with the same, not yet verified credentials, at once.
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(Conn::open(gw.addr).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(conns.len()));
    let auth = basic_auth("bob", "bob-pw");
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let barrier = barrier.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let req = request(
                    "GET",
                    &format!("/burst/{i}"),
                    &[("authorization", &auth)],
                    empty(),
                );
                barrier.wait().await;
                conn.exchange(req).await.status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        hashes(gw.addr).await,
        base + 2,
        "50 identical first requests must share one hash"
    );
    assert_eq!(seen.len(), 6 + 50);

    // Unknown users are verified against a dummy: exactly one hash each.
    for i in 0..5 {
        let reply = get_as(gw.addr, "/a", &format!("nobody{i}"), "whatever").await;
        assert_challenged(&reply, "unknown user");
    }
    assert_eq!(hashes(gw.addr).await, base + 7, "unknown users");

    // A wrong password is never cached: the same one twice costs two hashes.
    for _ in 0..2 {
        assert_challenged(&get_as(gw.addr, "/a", "alice", "wrong").await, "wrong");
    }
    assert_eq!(hashes(gw.addr).await, base + 9, "wrong passwords");
    assert_eq!(
        get_as(gw.addr, "/a", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    assert_eq!(hashes(gw.addr).await, base + 9, "alice is still cached");
}

// ---------------------------------------------------------------------------------------------
// The failure limiter
// ---------------------------------------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(2);
const LIMIT: usize = 3;

/// Sends wrong passwords from 127.0.0.1 until the gateway answers 429, checking that the 429
/// came after exactly `LIMIT` refusals (unless the window ran out on the way, on a slow machine).
/// Returns the 429 reply and when the first wrong password was sent (the window started after).
async fn limit_the_address(addr: SocketAddr) -> (Reply, Instant) {
    let started = Instant::now();
    let mut refusals = 0;
    loop {
        let reply = get_as(addr, "/x", "alice", "a wrong guess").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                refusals == LIMIT || started.elapsed() >= WINDOW,
                "429 after {refusals} failures within {:?}",
                started.elapsed()
            );
            return (reply, started);
        }
        assert_challenged(&reply, "a wrong password before the limit");
        refusals += 1;
        assert!(refusals < 100, "never limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_answers_429_without_hashing_serves_cached_users_and_recovers() {
    let (app, _) = echo_upstream("app").await;
    let htpasswd = format!(
        "{}\n{}\n{}\n",
        metrics_line(),
        line("alice", "alice-pw", 4),
        line("carol", "carol-pw", 4)
    );
    let gw = Gateway::start_with(
        &Setup::new(
            "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 3\nfailure_window = \"2s\"",
            &[route("/", app.addr, "")],
        )
        .file("htpasswd", htpasswd),
    )
    .await;
    warm_metrics(gw.addr).await;
    assert_eq!(
        get_as(gw.addr, "/x", "alice", "alice-pw").await.status,
        StatusCode::OK
    );

    // The observations below are only valid inside one window; on a machine so slow that the
    // window ended during them, limit the address again and repeat.
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(
            attempt <= 5,
            "the window kept running out before the checks ended"
        );
        let (limited, started) = limit_the_address(gw.addr).await;
        let before = hashes(gw.addr).await;
        let wrong = get_as(gw.addr, "/x", "alice", "another guess").await;
        let unknown = get_as(gw.addr, "/x", "mallory", "guess").await;
        let uncached = get_as(gw.addr, "/x", "carol", "carol-pw").await;
        let cached = get_as(gw.addr, "/x", "alice", "alice-pw").await;
        let after = hashes(gw.addr).await;
        if started.elapsed() >= WINDOW {
            continue;
        }
        for (what, reply) in [
            ("the limiting request", &limited),
            ("a wrong password", &wrong),
            ("an unknown user", &unknown),
            ("right but uncached credentials", &uncached),
        ] {
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{what}");
            let retry: u64 = reply
                .header("retry-after")
                .unwrap_or_else(|| panic!("{what}: no Retry-After"))
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "{what}: Retry-After {retry}");
        }
        assert_eq!(
            cached.status,
            StatusCode::OK,
            "cached credentials must pass while the address is limited"
        );
        assert_eq!(after, before, "a limited address made the gateway hash");
        break;
    }

    // Recovery: after the window, right credentials that need a hash get in again.
    eventually(PATIENCE, "the limit ends after failure_window", || async {
        get_as(gw.addr, "/x", "carol", "carol-pw").await.status == StatusCode::OK
    })
    .await;
    assert_challenged(
        &get_as(gw.addr, "/x", "alice", "a wrong guess").await,
        "the first failure after recovery",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_counts_the_client_a_trusted_proxy_names() {
    let (app, _) = echo_upstream("app").await;
    let htpasswd = format!("{}\n{}\n", metrics_line(), line("alice", "alice-pw", 4));
    let gw = Gateway::start_with(
        &Setup::new(
            "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nfailure_limit = 3\n\
             trusted_proxies = [\"127.0.0.1/32\"]",
            &[route("/", app.addr, "")],
        )
        .file("htpasswd", htpasswd),
    )
    .await;
    let wrong = basic_auth("alice", "a wrong guess");
    let from = |client: &'static str| {
        let wrong = wrong.clone();
        let addr = gw.addr;
        async move {
            get(
                addr,
                "/x",
                &[("authorization", &wrong), ("x-forwarded-for", client)],
            )
            .await
            .status
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(from("203.0.113.7").await);
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not limited by the first one's failures.
    assert_eq!(from("203.0.113.8").await, StatusCode::UNAUTHORIZED);
    let reply = get(
        gw.addr,
        "/x",
        &[
            ("authorization", &basic_auth("alice", "alice-pw")),
            ("x-forwarded-for", "203.0.113.8"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hashing_is_bounded_and_the_overflow_is_answered_503() {
    let (app, _) = echo_upstream("app").await;
    // Cost 12: each check takes a core for a good fraction of a second, so the burst below
    // overlaps on any machine; the gateway allows one hash per CPU at a time.
    let htpasswd = format!("{}\n{}\n", metrics_line(), line("alice", "alice-pw", 12));
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", htpasswd),
    )
    .await;
    warm_metrics(gw.addr).await;
    let before = hashes(gw.addr).await;

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let burst = 4 * cpus + 4;
    let mut conns = Vec::new();
    for _ in 0..burst {
        conns.push(Conn::open(gw.addr).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(burst));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let barrier = barrier.clone();
            // Distinct passwords: nothing to share, every check needs its own hash.
            let auth = basic_auth("alice", &format!("guess {i}"));
            tokio::spawn(async move {
                let req = request("GET", "/x", &[("authorization", &auth)], empty());
                barrier.wait().await;
                conn.exchange(req).await
            })
        })
        .collect();
    let mut refused = 0;
    let mut busy = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert!(
                    reply.header("retry-after").is_some(),
                    "503 without Retry-After"
                );
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(
        busy > 0,
        "{burst} concurrent checks on {cpus} CPUs, none answered 503"
    );
    assert!(refused >= 1);
    assert_eq!(
        hashes(gw.addr).await - before,
        refused,
        "every 401 costs one hash and every 503 none"
    );
}

// ---------------------------------------------------------------------------------------------
// What reaches the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_gateway_consumed_never_reach_the_upstream() {
    let (app, app_seen) = echo_upstream("app").await;
    let (keep, keep_seen) = echo_upstream("keep").await;
    let (public, public_seen) = echo_upstream("public").await;
    let htpasswd = format!("{}\n", line("alice", "alice-pw", 4));
    let gw = Gateway::start_with(&vast_env(
        Setup::new(
            &format!("{BASIC}\npublic = [\"/public/\"]"),
            &[
                route("/", app.addr, ""),
                route("/keep/", keep.addr, "keep_authorization = true"),
                route("/public/", public.addr, ""),
            ],
        )
        .file("htpasswd", htpasswd),
    ))
    .await;
    let alice = basic_auth("alice", "alice-pw");
    let lookalikes = [
        ("x-forwarded-user", "root"),
        ("x_forwarded_user", "root"),
        ("x.forwarded.user", "root"),
    ];

    // A session cookie to use below.
    let reply = get(gw.addr, "/x?token=secret-token", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let session = session_value(reply.header("set-cookie").unwrap());

    // Basic auth: Authorization and our cookie dropped, other cookies kept, look-alikes gone.
    let mut headers = vec![
        ("authorization", alice.as_str()),
        ("cookie", "theme=dark; C.38250_auth_token=forged; lang=en"),
    ];
    headers.extend(lookalikes);
    let reply = get(gw.addr, "/basic", &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let s = app_seen.last();
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.all("x-forwarded-user"), ["alice"]);
    assert_eq!(s.header("x_forwarded_user"), None);
    assert_eq!(s.header("x.forwarded.user"), None);
    assert_eq!(s.all("cookie"), ["theme=dark; lang=en"]);

    // A client naming X-Forwarded-User as hop-by-hop cannot make the gateway drop its own.
    let reply = get(
        gw.addr,
        "/hop",
        &[
            ("authorization", alice.as_str()),
            ("connection", "x-forwarded-user"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app_seen.last().all("x-forwarded-user"), ["alice"]);

    // A route that keeps Authorization for an upstream with its own login.
    let reply = get(gw.addr, "/keep/x", &[("authorization", &alice)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = keep_seen.last();
    assert_eq!(s.header("authorization"), Some(alice.as_str()));
    assert_eq!(s.all("x-forwarded-user"), ["alice"]);

    // Jupyter's own token is another value than ours: forwarded byte for byte.
    let reply = get(
        gw.addr,
        "/lab?token=abc&x=%2F1",
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app_seen.last().target, "/lab?token=abc&x=%2F1");

    // Our token is taken out of the query, wherever it stands.
    for (path, forwarded) in [
        ("/t?token=secret-token&b=2", "/t?b=2"),
        ("/t?a=1&token=secret-token", "/t?a=1"),
        ("/t?a=1&token=secret%2Dtoken&token=abc", "/t?a=1&token=abc"),
        ("/t?token=secret-token", "/t"),
    ] {
        let reply = get(gw.addr, path, &[("accept", "application/json")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(app_seen.last().target, forwarded, "{path}");
    }

    // Session cookie: dropped; no user is named, and a client-sent one is gone.
    let mut headers = vec![("cookie", format!("a=1; {COOKIE_NAME}={session}; b=2"))];
    headers.extend(lookalikes.iter().map(|(k, v)| (*k, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = get(gw.addr, "/cookie", &headers).await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = app_seen.last();
    assert_eq!(s.all("cookie"), ["a=1; b=2"]);
    assert!(s.all("x-forwarded-user").is_empty(), "{:?}", s.headers);
    assert_eq!(s.header("x_forwarded_user"), None);
    assert_eq!(s.header("x.forwarded.user"), None);

    // Bearer token: never forwarded, not even on a route that keeps Authorization (that option
    // is for the upstream's own credentials, not the gateway's token).
    let bearer = format!("Bearer {TOKEN}");
    for (path, seen) in [("/bearer", &app_seen), ("/keep/bearer", &keep_seen)] {
        let reply = get(gw.addr, path, &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(seen.last().header("authorization"), None, "{path}");
    }

    // Public paths: no credential of the gateway's, and no look-alike, reaches their upstream.
    let mut headers = vec![
        ("authorization", alice.clone()),
        ("cookie", format!("{COOKIE_NAME}={session}")),
    ];
    headers.extend(lookalikes.iter().map(|(k, v)| (*k, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = get(gw.addr, "/public/p?token=secret-token&q=1", &headers).await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = public_seen.last();
    assert_eq!(s.target, "/public/p?q=1");
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("cookie"), None);
    assert!(s.all("x-forwarded-user").is_empty());
    assert_eq!(s.header("x_forwarded_user"), None);
    assert_eq!(s.header("x.forwarded.user"), None);
}

// ---------------------------------------------------------------------------------------------
// Vast.ai's token scheme
// ---------------------------------------------------------------------------------------------

fn assert_session_cookie(set_cookie: &str) {
    let value = session_value(set_cookie);
    assert!(!value.is_empty());
    assert!(!value.contains(TOKEN), "the cookie carries the raw token");
    let attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for wanted in ["httponly", "samesite=lax", "max-age=604800", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} missing: {set_cookie}"
        );
    }
    assert!(
        !attributes.iter().any(|a| a == "secure"),
        "Secure over plain HTTP: {set_cookie}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vast_token_flows_for_browsers_and_api_clients() {
    let (app, seen) = echo_upstream("app").await;
    let htpasswd = format!("{}\n", line("alice", "alice-pw", 4));
    let gw = Gateway::start_with(&vast_env(
        Setup::new(BASIC, &[route("/", app.addr, "")]).file("htpasswd", htpasswd),
    ))
    .await;
    let html = ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");

    // A browser navigation trades the token for a cookie and a clean URL.
    let reply = get(gw.addr, "/x?token=secret-token&a=1", &[html]).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/x?a=1"));
    let set_cookie = reply.header("set-cookie").expect("Set-Cookie").to_owned();
    assert_session_cookie(&set_cookie);
    assert_eq!(seen.len(), 0, "a redirect is the gateway's own answer");
    let cookie = format!("{COOKIE_NAME}={}", session_value(&set_cookie));

    // The cookie alone lets the browser in.
    let reply = get(gw.addr, "/x?a=1", &[html, ("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(seen.last().target, "/x?a=1");

    // Sec-Fetch-Dest: document is a navigation too; a token-only query leaves none behind.
    let reply = get(
        gw.addr,
        "/y?token=secret-token",
        &[("sec-fetch-dest", "document")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some("/y"));
    assert_session_cookie(reply.header("set-cookie").unwrap());

    // The redirect goes to the canonical path on this host, never another one.
    let reply = get(gw.addr, "//evil.example/?token=secret-token", &[html]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let location = reply.header("location").unwrap();
    assert!(
        location.starts_with('/') && !location.starts_with("//"),
        "{location}"
    );

    // An API client is proxied at once, without the token, and gets the cookie as well.
    let before = seen.len();
    let reply = get(
        gw.addr,
        "/api/run?token=secret-token&q=2",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen.last().target, "/api/run?q=2");
    assert_session_cookie(reply.header("set-cookie").expect("Set-Cookie"));

    // Bearer, any case of the scheme.
    for bearer in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
        let reply = get(gw.addr, "/b", &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{bearer}");
    }
    // Vast's Caddy stores the raw token under the same cookie name: accepted as well.
    let reply = get(
        gw.addr,
        "/c",
        &[("cookie", &format!("{COOKIE_NAME}={TOKEN}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Basic auth keeps working beside the token.
    let reply = get_as(gw.addr, "/basic", "alice", "alice-pw").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(seen.last().all("x-forwarded-user"), ["alice"]);

    // Wrong tokens and cookies are refused, without a cookie or a redirect.
    let session = session_value(&set_cookie);
    let last = if session.ends_with('A') { "B" } else { "A" };
    let forged_mac = format!("{}{last}", &session[..session.len() - 1]);
    let wrong: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/w?token=wrong-token", vec![html_owned()]),
        ("/w?token=secret-token-2", vec![]),
        ("/w?token=SECRET-TOKEN", vec![html_owned()]),
        ("/w?tok=secret-token", vec![]),
        ("/w?xtoken=secret-token", vec![]),
        ("/w", vec![("authorization", "Bearer wrong-token".into())]),
        ("/w", vec![("authorization", format!("Bearer {TOKEN}x"))]),
        ("/w", vec![("authorization", format!("Basic {TOKEN}"))]),
        ("/w", vec![("cookie", format!("{COOKIE_NAME}=wrong-token"))]),
        (
            "/w",
            vec![("cookie", format!("{COOKIE_NAME}=v1.99999999999.AAAA"))],
        ),
        (
            "/w",
            vec![("cookie", format!("{COOKIE_NAME}={forged_mac}"))],
        ),
        (
            "/w",
            vec![(
                "cookie",
                format!("C.1_auth_token={}", session_value(&set_cookie)),
            )],
        ),
        (
            "/w",
            vec![(
                "cookie",
                format!("vastgate_auth_token={}", session_value(&set_cookie)),
            )],
        ),
        ("/w", vec![("x-auth-token", TOKEN.into())]),
    ];
    let before = seen.len();
    for (path, headers) in &wrong {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = get(gw.addr, path, &headers).await;
        assert_challenged(&reply, &format!("{path} {headers:?}"));
        assert_eq!(reply.header("set-cookie"), None, "{path} {headers:?}");
    }
    assert_eq!(seen.len(), before, "a wrong token reached the upstream");
}

fn html_owned() -> (&'static str, String) {
    ("accept", "text/html".into())
}

// ---------------------------------------------------------------------------------------------
// The environment's user and the default password
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_user_is_written_to_the_file_and_its_first_request_costs_no_hash() {
    let (app, seen) = echo_upstream("app").await;
    let (term, term_seen) = echo_upstream("terminal").await;
    let bob = line("bob", "bob-pw", 4);
    let old_alice = line("alice", "old-alice-pw", 4);
    let started = Instant::now();
    let gw = Gateway::start_with(
        &Setup::new(
            &format!("{BASIC}\nenv_credentials = true"),
            &[
                route("/", app.addr, ""),
                route("/terminal/", term.addr, "sensitive = true"),
            ],
        )
        .file("htpasswd", format!("{old_alice}\n{bob}\n"))
        .env("USERNAME", "alice")
        .env("PASSWORD", "s3cret"),
    )
    .await;
    let start_up = started.elapsed();

    // The very first request of all, by alice: the success cache was seeded at start.
    let alice = basic_auth("alice", "s3cret");
    assert_eq!(
        metric(gw.addr, "vastgate_auth_hashes_total", &alice).await,
        0,
        "alice's first request computed a hash"
    );
    let reply = get(gw.addr, "/x", &[("authorization", &alice)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(seen.last().all("x-forwarded-user"), ["alice"]);
    assert_eq!(
        metric(gw.addr, "vastgate_auth_hashes_total", &alice).await,
        0
    );
    // Not the default password: the sensitive route is open.
    let reply = get(gw.addr, "/terminal/", &[("authorization", &alice)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(term_seen.len(), 1);

    // The environment's user wins over the file's entry, and the other users are kept.
    assert_challenged(
        &get_as(gw.addr, "/x", "alice", "old-alice-pw").await,
        "alice's password from the file",
    );
    assert_eq!(
        get_as(gw.addr, "/x", "bob", "bob-pw").await.status,
        StatusCode::OK
    );
    let text = std::fs::read_to_string(gw.dir().join("htpasswd")).unwrap();
    let alice_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("alice:")).collect();
    assert_eq!(alice_lines.len(), 1, "{text}");
    assert!(alice_lines[0].starts_with("alice:$2y$10$"), "{text}");
    assert!(
        text.lines().any(|l| l == bob),
        "bob's line was not kept: {text}"
    );
    if let Some(out) = apache_htpasswd(&[
        "-vb",
        gw.dir().join("htpasswd").to_str().unwrap(),
        "alice",
        "s3cret",
    ]) {
        assert!(out.status.success(), "htpasswd -v refused alice's entry");
    }

    assert!(
        !gw.stderr.text().contains("default password"),
        "warned about a default password that is not in use"
    );
    // Start-up includes one cost-10 hash (writing the entry) and no other: far below Caddy's
    // tens of seconds even here. Bounded generously, as the machine is shared.
    assert!(
        start_up < Duration::from_secs(20),
        "start-up took {start_up:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_password_closes_sensitive_routes_and_flags_every_page() {
    let (files, files_seen) = echo_upstream("files").await;
    let (term, term_seen) = echo_upstream("terminal").await;
    let gw = Gateway::start_with(&Setup::new(
        &format!("{BASIC}\nenv_credentials = true"),
        &[
            route("/files/", files.addr, ""),
            route("/terminal/", term.addr, "sensitive = true"),
        ],
    ))
    .await;
    let admin = basic_auth("admin", "admin");
    let html = ("accept", "text/html");

    let reply = get(gw.addr, "/terminal/", &[("authorization", &admin), html]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let page = reply.text();
    assert!(
        page.contains("PASSWORD"),
        "the page does not say what to set: {page}"
    );
    let reply = get(gw.addr, "/terminal/ws", &[("authorization", &admin)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(term_seen.len(), 0, "the sensitive route was reached");
    // Without credentials it is a login like any other (nothing about the route is told).
    assert_challenged(&get(gw.addr, "/terminal/", &[]).await, "no credentials");

    let reply = get(gw.addr, "/files/a", &[("authorization", &admin)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(files_seen.len(), 1);

    // Every page of the gateway's own says so: 401, 404, 403, the portal; HTML and JSON.
    let warning = "default login admin/admin";
    for (path, headers) in [
        ("/files/a", vec![html]),
        ("/nowhere", vec![html, ("authorization", admin.as_str())]),
        ("/terminal/", vec![html, ("authorization", admin.as_str())]),
        ("/_vastgate/", vec![html, ("authorization", admin.as_str())]),
    ] {
        let reply = get(gw.addr, path, &headers).await;
        assert!(reply.text().contains(warning), "{path}: {}", reply.text());
    }
    let reply = get(gw.addr, "/nowhere", &[("authorization", &admin)]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.json()["warning"]
            .as_str()
            .unwrap_or_default()
            .contains(warning),
        "{}",
        reply.text()
    );

    let text = std::fs::read_to_string(gw.dir().join("htpasswd")).unwrap();
    assert!(text.starts_with("admin:$2y$10$"), "{text}");
    assert!(
        gw.stderr.text().contains("default password"),
        "no warning at start:\n{}",
        gw.stderr.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_default_password_opens_sensitive_routes() {
    let (term, term_seen) = echo_upstream("terminal").await;
    let gw = Gateway::start_with(
        &Setup::new(
            &format!("{BASIC}\nenv_credentials = true\nallow_default_password = true"),
            &[route("/terminal/", term.addr, "sensitive = true")],
        )
        .env("USERNAME", "root")
        .env("PASSWORD", "admin"),
    )
    .await;
    let reply = get_as(gw.addr, "/terminal/", "root", "admin").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(term_seen.len(), 1);
    // Still flagged on the gateway's pages.
    let reply = get(
        gw.addr,
        "/nowhere",
        &[
            ("accept", "text/html"),
            ("authorization", &basic_auth("root", "admin")),
        ],
    )
    .await;
    assert!(reply.text().contains("default login admin/admin"));
}

// ---------------------------------------------------------------------------------------------
// `vastgate passwd`
// ---------------------------------------------------------------------------------------------

/// Runs `vastgate passwd ARGS` with `password` and a newline on stdin.
fn vastgate_passwd(args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(vastgate_bin())
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vastgate passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "vastgate passwd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn apache_verifies(file: &Path, user: &str, password: &str) -> Option<bool> {
    let out = apache_htpasswd(&["-vb", file.to_str().unwrap(), user, password])?;
    Some(out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_lines_are_verified_by_apache_and_file_updates_reach_a_running_gateway() {
    const NEW: &str = "n3w pass:wörd";
    let dir = tempfile::tempdir().unwrap();
    let out = vastgate_passwd(&["alice", "--cost", "5"], NEW);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with("alice:$2y$05$"), "{printed}");
    let file = dir.path().join("printed");
    std::fs::write(&file, &printed).unwrap();
    let Some(ok) = apache_verifies(&file, "alice", NEW) else {
        return;
    };
    assert!(ok, "htpasswd -v refused {printed}");
    assert_eq!(apache_verifies(&file, "alice", "n3w pass"), Some(false));

    let out = vastgate_passwd(&["dora"], "dora-pw");
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("dora:$2y$10$"));

    // --file on the file of a running gateway.
    let Some(bob) = apache_line(&["-m"], "bob", "bob-pw") else {
        return;
    };
    let (app, _) = echo_upstream("app").await;
    let old_alice = line("alice", "old-pw", 4);
    let gw = Gateway::start_with(
        &Setup::new(BASIC, &[route("/", app.addr, "")])
            .file("htpasswd", format!("{bob}\n{old_alice}\n")),
    )
    .await;
    assert_eq!(
        get_as(gw.addr, "/x", "alice", "old-pw").await.status,
        StatusCode::OK
    );
    let file = gw.dir().join("htpasswd");
    vastgate_passwd(
        &["alice", "--cost", "5", "--file", file.to_str().unwrap()],
        NEW,
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines().any(|l| l == bob),
        "bob's line was not kept: {text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("alice:")).count(), 1);
    assert_eq!(apache_verifies(&file, "alice", NEW), Some(true));
    assert_eq!(apache_verifies(&file, "alice", "old-pw"), Some(false));
    assert_eq!(apache_verifies(&file, "bob", "bob-pw"), Some(true));

    eventually(
        PATIENCE,
        "the gateway accepts alice's new password",
        || async { get_as(gw.addr, "/x", "alice", NEW).await.status == StatusCode::OK },
    )
    .await;
    assert_challenged(
        &get_as(gw.addr, "/x", "alice", "old-pw").await,
        "old password",
    );
    assert_eq!(
        get_as(gw.addr, "/x", "bob", "bob-pw").await.status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_cookie_or_token_appears_in_any_log_line() {
    const ALICE_PW: &str = "alice-Secret-4711";
    const ALICE_NEW_PW: &str = "alice-Renewed-0815";
    const ENV_PW: &str = "env-Secret-2342";
    const WRONG_PW: &str = "wrong-Guess-1337";
    const PLAIN_PW: &str = "Plaintext-Secret-99";
    const JUPYTER_TOKEN: &str = "jupyter-Own-Token-31337";
    let (app, _) = echo_upstream("app").await;
    let dead = free_port();
    let htpasswd = format!(
        "{}\n{}\nplainuser:{PLAIN_PW}\n",
        metrics_line(),
        line("alice", ALICE_PW, 4)
    );
    let gw = Gateway::start_with(
        &vast_env(
            Setup::new(
                "auth = \"basic\"\nhtpasswd = \"htpasswd\"\nenv_credentials = true\n\
                 failure_limit = 4\npublic = [\"/public/\"]",
                &[
                    route("/", app.addr, ""),
                    route("/public/", app.addr, ""),
                    format!(
                        "[[route]]\nprefix = \"/dead/\"\nupstream = \"http://127.0.0.1:{dead}\"\n"
                    ),
                ],
            )
            .file("htpasswd", htpasswd),
        )
        .env("USERNAME", "envuser")
        .env("PASSWORD", ENV_PW)
        .env("VASTGATE_LOG", "debug"),
    )
    .await;
    let addr = gw.addr;
    let alice = basic_auth("alice", ALICE_PW);
    let html = ("accept", "text/html");
    let mut cookies = Vec::new();

    // Basic: right, wrong, unknown, environment user, malformed, metrics.
    assert_eq!(
        get(addr, "/a", &[("authorization", &alice)]).await.status,
        200
    );
    assert_eq!(get_as(addr, "/a", "envuser", ENV_PW).await.status, 200);
    assert_eq!(get_as(addr, "/a", "alice", WRONG_PW).await.status, 401);
    assert_eq!(get_as(addr, "/a", "nobody", WRONG_PW).await.status, 401);
    assert_eq!(get_as(addr, "/a", "plainuser", PLAIN_PW).await.status, 401);
    let no_colon = format!("Basic {}", STANDARD.encode(ALICE_PW));
    assert_eq!(
        get(addr, "/a", &[("authorization", &no_colon)])
            .await
            .status,
        401
    );
    warm_metrics(addr).await;
    // Tokens: browser, API, cookie, bearer, wrong; Jupyter's own token; the token on a public
    // path; credentials on an upstream that is down (its error is logged).
    for (path, headers) in [
        ("/t?token=secret-token&x=1", vec![html]),
        ("/t?token=secret-token", vec![("accept", "*/*")]),
        ("/public/p?token=secret-token", vec![]),
        ("/t?token=wrong-token", vec![html]),
    ] {
        let reply = get(addr, path, &headers).await;
        if let Some(c) = reply.header("set-cookie") {
            cookies.push(session_value(c));
        }
    }
    assert_eq!(cookies.len(), 2, "two token trades");
    let cookie = format!("{COOKIE_NAME}={}", cookies[0]);
    assert_eq!(get(addr, "/c", &[("cookie", &cookie)]).await.status, 200);
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get(addr, "/b", &[("authorization", &bearer)]).await.status,
        200
    );
    let reply = get(
        addr,
        &format!("/lab?token={JUPYTER_TOKEN}"),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let reply = get(
        addr,
        "/dead/x?token=secret-token",
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    // A password change picked up by the watcher, then a SIGHUP reload.
    let file = gw.dir().join("htpasswd");
    replace_file(
        &file,
        &format!(
            "{}\n{}\nplainuser:{PLAIN_PW}\n",
            metrics_line(),
            line("alice", ALICE_NEW_PW, 4)
        ),
    );
    // (Waiting on the log line, not on logins: failed logins would count against the limiter.)
    assert!(gw
        .stderr
        .wait_for(PATIENCE, |l| l.contains("htpasswd loaded"))
        .await
        .is_some());
    assert_eq!(get_as(addr, "/a", "alice", ALICE_NEW_PW).await.status, 200);
    gw.signal(libc::SIGHUP);
    assert!(gw
        .stderr
        .wait_for(PATIENCE, |l| l.contains("configuration reloaded"))
        .await
        .is_some());
    // Limited: 429s.
    let mut limited = false;
    for _ in 0..10 {
        if get_as(addr, "/a", "alice", WRONG_PW).await.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "never limited");

    // A last request whose log line marks the end of the run.
    let reply = get(addr, "/public/the-end", &[]).await;
    let id = reply.header("x-request-id").unwrap().to_owned();
    gw.access_log_entry(&id).await;

    let mut secrets: Vec<String> = vec![
        ALICE_PW.into(),
        ALICE_NEW_PW.into(),
        ENV_PW.into(),
        WRONG_PW.into(),
        PLAIN_PW.into(),
        METRICS_PASSWORD.into(),
        JUPYTER_TOKEN.into(),
        TOKEN.into(),
        "secret%2Dtoken".into(),
    ];
    for (user, password) in [
        ("alice", ALICE_PW),
        ("alice", ALICE_NEW_PW),
        ("alice", WRONG_PW),
        ("envuser", ENV_PW),
        ("nobody", WRONG_PW),
        ("plainuser", PLAIN_PW),
        (METRICS_USER, METRICS_PASSWORD),
    ] {
        let b64 = STANDARD.encode(format!("{user}:{password}"));
        secrets.push(b64.trim_end_matches('=').to_owned());
    }
    secrets.push(STANDARD.encode(ALICE_PW).trim_end_matches('=').to_owned());
    for c in &cookies {
        secrets.push(c.clone());
        // The MAC alone is a secret too.
        secrets.push(c.rsplit('.').next().unwrap().to_owned());
    }

    let stdout = gw.stdout.all();
    let stderr = gw.stderr.all();
    assert!(stdout.len() > 20, "too few access-log lines: {stdout:?}");
    for (stream, lines) in [("stdout", &stdout), ("stderr", &stderr)] {
        for l in lines.iter() {
            for s in &secrets {
                assert!(
                    !l.contains(s.as_str()),
                    "{stream} line holds a secret ({s}): {l}"
                );
            }
        }
    }
}

/// Starts `vastgate serve` on `config` with `USERNAME`/`PASSWORD`; waits until it answers.
async fn serve_as(
    config: &std::path::Path,
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> std::process::Child {
    let child = std::process::Command::new(vastgate_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env("USERNAME", user)
        .env("PASSWORD", password)
        .env_remove("OPEN_BUTTON_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn vastgate serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, "/healthz", &[]).await.status == StatusCode::OK
        {
            return child;
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_username_removes_the_old_login_at_the_next_start() {
    let (app, _seen) = echo_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("proxy.toml");
    let text = config_text(
        addr,
        &format!("{BASIC}\nenv_credentials = true"),
        &[route("/", app.addr, "")],
    )
    .replace("auth = \"none\"\n", "");
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        line("carol", "carol-pw", 4) + "\n",
    )
    .unwrap();

    let mut first = serve_as(&config, addr, "alice", "alice-pw").await;
    assert_eq!(
        get_as(addr, "/x", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = serve_as(&config, addr, "bob", "bob-pw").await;
    assert_eq!(
        get_as(addr, "/x", "bob", "bob-pw").await.status,
        StatusCode::OK
    );
    assert_challenged(
        &get_as(addr, "/x", "alice", "alice-pw").await,
        "the old USERNAME",
    );
    assert_eq!(
        get_as(addr, "/x", "carol", "carol-pw").await.status,
        StatusCode::OK,
        "a user of the file was lost"
    );
    let file = std::fs::read_to_string(dir.path().join("htpasswd")).unwrap();
    assert!(!file.lines().any(|l| l.starts_with("alice:")), "{file}");
    second.kill().unwrap();
    second.wait().unwrap();
}
