//! Routing, canonical paths, forwarded headers, hop-by-hop rules and error pages, through the
//! real `vastgate` binary to upstreams started by each test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn target_of(reply: &Reply) -> (String, String) {
    let j = reply.json();
    (
        j["upstream"].as_str().unwrap_or_default().to_string(),
        j["target"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_wins_on_segment_boundaries() {
    let (root, _) = echo_upstream("root").await;
    let (files, _) = echo_upstream("files").await;
    let (deep, _) = echo_upstream("deep").await;
    let (api, _) = echo_upstream("api").await;
    let gw = Gateway::start(
        "",
        &[
            route("/", root.addr, ""),
            route("/files/", files.addr, ""),
            route("/files/deep/", deep.addr, ""),
            route("/api", api.addr, ""),
        ],
    )
    .await;

    let cases = [
        ("/files/a.txt", "files", "/files/a.txt"),
        ("/files/", "files", "/files/"),
        ("/files/deep/x?y=1", "deep", "/files/deep/x?y=1"),
        ("/files/deeper", "files", "/files/deeper"),
        ("/filesystem", "root", "/filesystem"),
        ("/filesystem/files/", "root", "/filesystem/files/"),
        ("/api", "api", "/api"),
        ("/api/v1/run", "api", "/api/v1/run"),
        ("/apix", "root", "/apix"),
        ("/", "root", "/"),
    ];
    for (path, upstream, target) in cases {
        let reply = get(gw.addr, path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(
            target_of(&reply),
            (upstream.to_string(), target.to_string()),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_prefix_redirects_to_its_slash_keeping_the_query() {
    let (files, seen) = echo_upstream("files").await;
    let gw = Gateway::start("", &[route("/files/", files.addr, "")]).await;

    for (path, location) in [
        ("/files", "/files/"),
        ("/files?a=1&b=two%20words", "/files/?a=1&b=two%20words"),
    ] {
        let reply = get(gw.addr, path, &[]).await;
        assert!(
            reply.status.is_redirection(),
            "{path}: status {}",
            reply.status
        );
        assert_eq!(reply.header("location"), Some(location), "{path}");
    }
    assert_eq!(
        seen.len(),
        0,
        "a redirect is answered by the gateway itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_forwards_the_rest_and_names_the_prefix() {
    let (logs, seen) = echo_upstream("logs").await;
    let gw = Gateway::start("", &[route("/logs/", logs.addr, "strip_prefix = true")]).await;

    let reply = get(gw.addr, "/logs/api/x?q=1", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(target_of(&reply).1, "/api/x?q=1");
    assert_eq!(seen.last().header("x-forwarded-prefix"), Some("/logs"));

    let reply = get(gw.addr, "/logs/", &[]).await;
    assert_eq!(target_of(&reply).1, "/");
    assert_eq!(seen.last().header("x-forwarded-prefix"), Some("/logs"));

    let reply = get(gw.addr, "/logs?x=1", &[]).await;
    assert!(reply.status.is_redirection());
    assert_eq!(reply.header("location"), Some("/logs/?x=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_without_a_route_is_404() {
    let (files, seen) = echo_upstream("files").await;
    let gw = Gateway::start("", &[route("/files/", files.addr, "")]).await;

    for path in ["/", "/nothing", "/filesystem", "/file"] {
        let reply = get(gw.addr, path, &[("accept", "application/json")]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["status"], 404, "{path}");
    }
    let reply = get(gw.addr, "/nothing", &[("accept", "text/html")]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(seen.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_the_canonical_path_it_was_routed_on() {
    let (files, _) = echo_upstream("files").await;
    let (logs, _) = echo_upstream("logs").await;
    let gw = Gateway::start(
        "",
        &[
            route("/files/", files.addr, ""),
            route("/logs/", logs.addr, "strip_prefix = true"),
        ],
    )
    .await;

    let cases = [
        ("/files/a/./b/../c", "files", "/files/a/c"),
        ("/files//x///y", "files", "/files/x/y"),
        ("/files/%7Euser/%41%62c", "files", "/files/~user/Abc"),
        ("/files/a%20b?q=%2e%2e", "files", "/files/a%20b?q=%2e%2e"),
        ("/files/caf%c3%a9", "files", "/files/caf%C3%A9"),
        // Routed on the canonical path: this is a logs URL, not a files one.
        ("/files/../logs/x", "logs", "/x"),
        ("/files/./../logs/./y/", "logs", "/y/"),
    ];
    for (raw, upstream, target) in cases {
        let reply = raw_get(gw.addr, raw, "").await;
        assert_eq!(
            reply.status,
            200,
            "{raw}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let j = reply.json();
        assert_eq!(j["upstream"], upstream, "{raw}");
        assert_eq!(j["target"], target, "{raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused_before_reaching_the_upstream() {
    let (root, seen) = echo_upstream("root").await;
    let (files, files_seen) = echo_upstream("files").await;
    let gw = Gateway::start(
        "",
        &[route("/", root.addr, ""), route("/files/", files.addr, "")],
    )
    .await;

    let refused = [
        "/files/%2e%2e/secret",
        "/files/%2E%2e/",
        "/files/.%2e/x",
        "/files/%2e/x",
        "/files/a%2fb",
        "/files/a%2F..%2Fb",
        "/files/a%5cb",
        "/files/a%5C..%5Cb",
        "/files/a%00b",
        "/files/%zz",
        "/files/%4",
        "/files/..;/x",
        "/files/%252e%252e/x",
        "/files/%c0%ae%c0%ae/x",
        "/..",
        "/files/../../etc/passwd",
        "/files/a%0Ab",
    ];
    for raw in refused {
        let reply = raw_get(gw.addr, raw, "Accept: application/json\r\n").await;
        assert_eq!(reply.status, 400, "{raw} must be refused");
    }
    // A raw backslash is refused too (by the HTTP parser or by canonicalization).
    let reply = raw_get(gw.addr, "/files/a\\..\\b", "").await;
    assert_eq!(reply.status, 400);

    assert_eq!(seen.len(), 0, "{:?}", seen.all());
    assert_eq!(files_seen.len(), 0, "{:?}", files_seen.all());
    // And the gateway is still fine.
    assert_eq!(get(gw.addr, "/files/ok", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_does_not_choose_the_route() {
    let (files, seen) = echo_upstream("files").await;
    let gw = Gateway::start("", &[route("/files/", files.addr, "")]).await;

    // The authority in the target is not a route key; the path is, and the upstream gets the
    // request in origin form.
    let req = "GET http://evil.example/files/a?x=1 HTTP/1.1\r\nHost: box.example:8000\r\n\
               Connection: close\r\n\r\n";
    let reply = within(
        PATIENCE,
        "absolute-form request",
        raw_exchange(gw.addr, req.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["upstream"], "files");
    assert_eq!(seen.last().target, "/files/a?x=1");

    // An authority that looks like an app name does not select anything: no route, 404.
    let req = "GET http://files.example/other HTTP/1.1\r\nHost: files.example\r\n\
               Connection: close\r\n\r\n";
    let reply = raw_exchange(gw.addr, req.as_bytes()).await.unwrap();
    assert_eq!(reply.status, 404);

    // The path inside an absolute-form target is canonicalized like any other.
    let req = "GET http://evil.example/files/%2e%2e/x HTTP/1.1\r\nHost: box.example\r\n\
               Connection: close\r\n\r\n";
    let reply = raw_exchange(gw.addr, req.as_bytes()).await.unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_port_reaches_the_upstream_unchanged_with_forwarded_headers() {
    let (app, seen) = echo_upstream("app").await;
    // No peer is trusted, so the gateway's own view is all the upstream gets.
    let gw = Gateway::start("trusted_proxies = []", &[route("/", app.addr, "")]).await;

    let reply = get(gw.addr, "/gradio_api/info", &[("host", "box.example:8000")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = seen.last();
    assert_eq!(s.all("host"), ["box.example:8000"]);
    assert_eq!(s.all("x-forwarded-host"), ["box.example:8000"]);
    assert_eq!(s.all("x-forwarded-proto"), ["http"]);
    assert_eq!(s.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.all("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(s.target, "/gradio_api/info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_cannot_spoof_forwarded_headers() {
    let (app, seen) = echo_upstream("app").await;
    let gw = Gateway::start("trusted_proxies = []", &[route("/", app.addr, "")]).await;

    let reply = get(
        gw.addr,
        "/x",
        &[
            ("host", "box.example:8000"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/evil"),
            ("x-request-id", "spoofed-id"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = seen.last();
    assert_eq!(s.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.all("x-forwarded-proto"), ["http"]);
    assert_eq!(s.all("x-forwarded-host"), ["box.example:8000"]);
    assert_eq!(s.all("x-real-ip"), ["127.0.0.1"]);
    assert!(s.all("x-forwarded-prefix").is_empty(), "{:?}", s.headers);
    let id = s.header("x-request-id").expect("a request id");
    assert_ne!(id, "spoofed-id");
    assert_eq!(reply.header("x-request-id"), Some(id));
    let line = gw.access_log_entry(id).await;
    assert_eq!(line["client"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peer_forwarded_for_is_appended_and_its_proto_and_host_kept() {
    let (app, seen) = echo_upstream("app").await;
    // Default config: 127.0.0.1 is a trusted proxy (Vast's Caddy sits on loopback).
    let gw = Gateway::start("", &[route("/", app.addr, "")]).await;

    let reply = get(
        gw.addr,
        "/x",
        &[
            ("host", "box.example:8000"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
            ("x-request-id", "trace-123"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = seen.last();
    assert_eq!(s.all("host"), ["box.example:8000"]);
    assert_eq!(s.all("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(s.all("x-forwarded-proto"), ["https"]);
    assert_eq!(s.all("x-forwarded-host"), ["public.example"]);
    assert_eq!(s.all("x-real-ip"), ["203.0.113.9"]);
    // A trusted peer's request id is kept end to end.
    assert_eq!(s.all("x-request-id"), ["trace-123"]);
    assert_eq!(reply.header("x-request-id"), Some("trace-123"));
    let line = gw.access_log_entry("trace-123").await;
    assert_eq!(line["client"], "203.0.113.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_in_the_response_the_upstream_request_and_the_access_log() {
    let (files, seen) = echo_upstream("files").await;
    let gw = Gateway::start("", &[route("/files/", files.addr, "")]).await;

    let reply = get(
        gw.addr,
        "/files/report.txt?token=secret-token",
        &[
            ("authorization", "Basic c2VjcmV0OnNlY3JldA=="),
            ("cookie", "C.1_auth_token=secret-cookie"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply
        .header("x-request-id")
        .expect("X-Request-Id")
        .to_string();
    assert!(!id.is_empty());
    assert_eq!(seen.last().header("x-request-id"), Some(id.as_str()));

    let line = gw.access_log_entry(&id).await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/files/report.txt");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/files/");
    assert_eq!(line["upstream"], files.addr.to_string());
    assert_eq!(line["bytes"], reply.body.len() as u64);
    assert!(line["duration_ms"].is_number(), "{line}");
    assert!(line["time"].is_string(), "{line}");
    let text = line.to_string();
    for secret in ["secret-token", "secret-cookie", "c2VjcmV0OnNlY3JldA=="] {
        assert!(
            !text.contains(secret),
            "the access log leaks {secret}: {text}"
        );
    }

    // The gateway's own answers carry an id and a log line too.
    let reply = get(gw.addr, "/nowhere", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let id = reply.header("x-request-id").expect("X-Request-Id on a 404");
    let line = gw.access_log_entry(id).await;
    assert_eq!(line["status"], 404);
    assert_eq!(line["path"], "/nowhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let (app, seen) = echo_upstream("app").await;
    let gw = Gateway::start("", &[route("/", app.addr, "")]).await;

    let reply = get(
        gw.addr,
        "/x",
        &[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "must not pass"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "X-Checksum"),
            ("proxy-authorization", "Basic cHJveHk6cHJveHk="),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "end-to-end"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let s = seen.last();
    for hop in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            s.all(hop).is_empty(),
            "{hop} reached the upstream: {:?}",
            s.headers
        );
    }
    for connection in s.all("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-secret-hop"),
            "Connection still names the hop header: {connection}"
        );
    }
    assert_eq!(s.all("x-kept"), ["end-to-end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let (listener, addr) = raw_upstream().await;
    let _upstream = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let resp = "HTTP/1.1 200 OK\r\n\
                            Content-Type: text/plain\r\n\
                            Content-Length: 2\r\n\
                            Connection: X-Secret-Hop, Keep-Alive\r\n\
                            Keep-Alive: timeout=5, max=100\r\n\
                            X-Secret-Hop: must not pass\r\n\
                            Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
                            Proxy-Connection: keep-alive\r\n\
                            X-Kept: end-to-end\r\n\
                            \r\n\
                            ok";
                let _ = stream.write_all(resp.as_bytes()).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    let gw = Gateway::start("", &[route("/", addr, "")]).await;

    let reply = raw_get(gw.addr, "/x", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"ok");
    for hop in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
    ] {
        assert!(
            reply.header(hop).is_none(),
            "{hop} reached the client: {:?}",
            reply.headers
        );
    }
    for (name, value) in &reply.headers {
        if name == "connection" {
            assert!(
                !value.to_ascii_lowercase().contains("x-secret-hop"),
                "Connection still names the hop header: {value}"
            );
        }
    }
    assert_eq!(reply.header("x-kept"), Some("end-to-end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_a_502_page_and_the_gateway_keeps_serving() {
    let down: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (ok, _) = echo_upstream("ok").await;
    let gw = Gateway::start(
        "",
        &[
            route("/", down, "name = \"Forge\""),
            route("/ok/", ok.addr, ""),
        ],
    )
    .await;

    let browser = get(
        gw.addr,
        "/",
        &[("accept", "text/html,application/xhtml+xml,*/*")],
    )
    .await;
    assert_eq!(browser.status, StatusCode::BAD_GATEWAY);
    assert!(browser
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = browser.text();
    assert!(page.contains("<html"), "{page}");
    assert!(page.contains("Forge"), "the page names the app: {page}");
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");

    let api = get(
        gw.addr,
        "/sdapi/v1/txt2img",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(api.status, StatusCode::BAD_GATEWAY);
    assert!(api
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(api.json()["status"], 502);

    // Cloudflare replaces 5xx bodies with its own page; the gateway's page must get through.
    let cf = get(
        gw.addr,
        "/",
        &[("accept", "text/html"), ("cf-ray", "8a1b2c3d4e5f-AMS")],
    )
    .await;
    assert_eq!(cf.status, StatusCode::OK);
    assert!(cf.text().contains("Forge"));

    let next = get(gw.addr, "/ok/still-here", &[]).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.json()["upstream"], "ok");
    let again = get(gw.addr, "/", &[]).await;
    assert_eq!(again.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slow_to_answer_headers_gives_504() {
    let slow = http_upstream(|_req| async {
        // Answers long after the route's response_timeout (the test ends first).
        tokio::time::sleep(Duration::from_secs(600)).await;
        Response::new(empty())
    })
    .await;
    let (ok, _) = echo_upstream("ok").await;
    let gw = Gateway::start(
        "",
        &[
            route("/slow/", slow.addr, "response_timeout = \"1s\""),
            route("/ok/", ok.addr, ""),
        ],
    )
    .await;

    let started = Instant::now();
    let reply = get(gw.addr, "/slow/generate", &[("accept", "application/json")]).await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["status"], 504);
    assert!(
        took >= Duration::from_millis(900),
        "504 after only {took:?}"
    );
    assert!(took < Duration::from_secs(20), "504 only after {took:?}");

    assert_eq!(get(gw.addr, "/ok/", &[]).await.status, StatusCode::OK);
}
