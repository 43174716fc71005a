//! `[vast] portal = true`: vastgate in the place of Vast's own Caddy, one listener per
//! `PORTAL_CONFIG` entry that Caddy would serve.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::StatusCode;

/// Waits until something listens on `addr` (the portal listeners open after the main one).
async fn wait_listening(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_entries_are_served_like_vasts_caddy() {
    if std::path::Path::new("/etc/portal.yaml").exists() {
        // That file wins over PORTAL_CONFIG, as with Vast's tools; this machine has one.
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("/etc/portal.yaml exists: the test cannot control the portal entries");
        }
        eprintln!("SKIPPED: /etc/portal.yaml exists and would override PORTAL_CONFIG");
        return;
    }
    let (app, seen) = echo_upstream("app").await;
    let (open_app, open_seen) = echo_upstream("open").await;
    let (unpublished, unpublished_seen) = echo_upstream("unpublished").await;
    let [ext_app, ext_open, ext_unpublished] = [free_port(), free_port(), free_port()];
    let portal_config = format!(
        "localhost:{ext_app}:{}:/:App: one|127.0.0.1:{ext_open}:{}:/:Open|localhost:{ext_unpublished}:{}:/:Hidden|bad:entry",
        app.addr.port(),
        open_app.addr.port(),
        unpublished.addr.port()
    );
    let htpasswd = std::process::Command::new(vastgate_bin())
        .args(["passwd", "alice", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"wonder\n")?;
            child.wait_with_output()
        })
        .expect("vastgate passwd");
    let htpasswd = String::from_utf8(htpasswd.stdout).expect("UTF-8");
    let gw = Gateway::start_with(
        &Setup::new("auth = \"basic\"\nhtpasswd = \"htpasswd\"", &[])
            .file("htpasswd", htpasswd)
            .env("VASTGATE_PORTAL", "true")
            .env("PORTAL_CONFIG", &portal_config)
            .env(&format!("VAST_TCP_PORT_{ext_app}"), "41001")
            .env(&format!("VAST_TCP_PORT_{ext_open}"), "41002")
            .env("AUTH_EXCLUDE", &ext_open.to_string())
            .env("OPEN_BUTTON_TOKEN", "tok-123")
            .env("VAST_CONTAINERLABEL", "C.42"),
    )
    .await;
    let app_addr: SocketAddr = ([127, 0, 0, 1], ext_app).into();
    let open_addr: SocketAddr = ([127, 0, 0, 1], ext_open).into();
    wait_listening(app_addr).await;
    wait_listening(open_addr).await;

    // Behind the login: basic auth, the token and Bearer all work; nothing without them.
    let reply = get(app_addr, "/x?a=1", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.len(), 0);
    let reply = get(
        app_addr,
        "/x?a=1",
        &[("authorization", &basic_auth("alice", "wonder"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let first = seen.last();
    assert_eq!(first.target, "/x?a=1");
    assert_eq!(
        first.header("host"),
        Some(format!("127.0.0.1:{ext_app}").as_str()),
        "Host is kept"
    );
    assert_eq!(first.header("x-forwarded-user"), Some("alice"));
    let reply = get(app_addr, "/y", &[("authorization", "Bearer tok-123")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get(app_addr, "/z?token=tok-123", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some("/z"));
    assert!(reply
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("C.42_auth_token=")));

    // Vast's public paths, and the resolver its portal polls from another origin.
    let reply = get(app_addr, "/portal-resolver", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let before = seen.len();
    let reply = get(app_addr, "/.well-known/acme", &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "public paths pass without a login"
    );
    assert_eq!(seen.len(), before + 1);

    // AUTH_EXCLUDE: that entry's port is open.
    let reply = get(open_addr, "/free", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(open_seen.last().target, "/free");

    // No VAST_TCP_PORT for it: Caddy would not serve it, neither do we.
    assert!(refused(([127, 0, 0, 1], ext_unpublished).into()).await);
    assert_eq!(unpublished_seen.len(), 0);
    assert!(
        gw.stderr.text().contains("portal entry \"bad:entry\""),
        "a malformed entry is named: {}",
        gw.stderr.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_entry_whose_app_is_down_gets_the_refreshing_page() {
    if std::path::Path::new("/etc/portal.yaml").exists() {
        eprintln!("SKIPPED: /etc/portal.yaml exists and would override PORTAL_CONFIG");
        return;
    }
    let ext = free_port();
    let dead = free_port();
    let gw = Gateway::start_with(
        &Setup::new("auth = \"none\"", &[])
            .env("VASTGATE_PORTAL", "true")
            .env("PORTAL_CONFIG", &format!("localhost:{ext}:{dead}:/:Forge"))
            .env(&format!("VAST_TCP_PORT_{ext}"), "41003"),
    )
    .await;
    let addr: SocketAddr = ([127, 0, 0, 1], ext).into();
    wait_listening(addr).await;
    let reply = get(addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.text().contains("http-equiv=\"refresh\""),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("Forge is not answering"));
    let reply = get(addr, "/", &[("accept", "text/html"), ("cf-ray", "abc")]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "Cloudflare would hide a 5xx page"
    );
    drop(gw);
}

/// Behind Vast's Caddy: `auth = "upstream"` believes a trusted proxy's check (no second login)
/// and its X-Forwarded-*, and refuses everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_upstream_trusts_only_the_proxy_in_front() {
    let (app, seen) = echo_upstream("app").await;
    let trusted = Gateway::start_with(&Setup::new(
        "auth = \"upstream\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &[route("/", app.addr, "")],
    ))
    .await;
    let reply = get(
        trusted.addr,
        "/x",
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "198.51.100.4"),
        ],
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "no second login behind the trusted proxy"
    );
    let last = seen.last();
    assert_eq!(last.header("x-forwarded-proto"), Some("https"));
    assert_eq!(last.header("x-real-ip"), Some("198.51.100.4"));

    let untrusted = Gateway::start_with(&Setup::new(
        "auth = \"upstream\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
        &[route("/", app.addr, "")],
    ))
    .await;
    let before = seen.len();
    let reply = get(untrusted.addr, "/x", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "a peer that is not the proxy"
    );
    assert_eq!(seen.len(), before, "nothing reached the app");
    let reply = get(untrusted.addr, "/healthz", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "public paths stay public");
}

#[test]
fn portal_config_prints_this_gateways_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[gateway]\nlisten = \"127.0.0.1:18000\"\nauth = \"upstream\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(vastgate_bin())
        .args(["portal-config", "--name", "Forge: UI", "--config"])
        .arg(&config)
        .output()
        .expect("run vastgate portal-config");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "localhost:8000:18000:/:Forge: UI\n"
    );
    // What it prints parses back to the same entry, so a template can append it as is.
    let (entries, problems) =
        vastgate::vast::parse_portal_config(String::from_utf8_lossy(&out.stdout).trim());
    assert!(problems.is_empty());
    assert_eq!(entries[0].internal_port, 18000);
    assert_eq!(entries[0].name, "Forge: UI");
}
