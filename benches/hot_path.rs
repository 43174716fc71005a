//! Micro-benchmarks of the per-request hot path: canonical path + route, header rewriting, an
//! app's answer head on its way to the client, an auth cache hit, and one password verification
//! per htpasswd scheme (what a cache miss costs).
//! Run: `cargo bench --bench hot_path` (a few minutes; the non-bcrypt hashes come from Apache's
//! `htpasswd`, and are skipped with a note when it is not installed).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use http::{HeaderMap, HeaderValue, Method};

use vastgate::auth::{
    htpasswd_line, AuthSettings, Authenticator, GrantMemo, StoredHash, UserTable, Verdict,
};
use vastgate::config::Config;
use vastgate::gateway::headers::{remove_hop_by_hop, set_forwarded, single_length, Hop};
use vastgate::gateway::path::canonicalize;
use vastgate::gateway::rewrite::Rewrite;
use vastgate::gateway::router::Router;
use vastgate::gateway::wire::{encode_response, parse_response};

fn shipped_router() -> Router {
    let text = include_str!("../proxy.toml");
    let config =
        Config::parse(Path::new("proxy.toml"), text).expect("the shipped proxy.toml is valid");
    Router::new(&config.routes)
}

fn canonical_path_and_route(c: &mut Criterion) {
    let router = shipped_router();
    let mut group = c.benchmark_group("canonicalize+route");
    for path in [
        "/sdapi/v1/txt2img",
        "/files/api/resources/models/Stable-diffusion/model.safetensors",
        "/logs/api/status",
        "/files/a/./b/../c%2Dd",
    ] {
        group.bench_function(path, |b| {
            b.iter(|| {
                let canonical = canonicalize(black_box(path)).expect("valid");
                black_box(matches!(
                    router.lookup(&canonical),
                    vastgate::gateway::router::RouteMatch::Forward { .. }
                ))
            })
        });
    }
    group.finish();
}

fn header_rewrite(c: &mut Criterion) {
    let mut template = HeaderMap::new();
    for (k, v) in [
        ("host", "box.example:8000"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9"),
        ("connection", "keep-alive"),
        ("cookie", "C.38250_auth_token=abc; gradio=1"),
    ] {
        template.insert(k, HeaderValue::from_static(v));
    }
    let host = HeaderValue::from_static("box.example:8000");
    let hop = Hop {
        peer: "203.0.113.7".parse().expect("literal"),
        trusted: false,
        proto: "http",
        host: Some(&host),
    };
    let plan = |h: &HeaderMap| {
        let mut plan = Rewrite::new(h);
        set_forwarded(h, &hop, &mut plan);
        plan
    };
    let mut out = Vec::with_capacity(1024);
    // A body-less request: the plan is written beside the client's fields.
    c.bench_function("header rewrite (hop-by-hop + forwarded), written", |b| {
        b.iter(|| {
            out.clear();
            plan(&template).write(&template, &mut out);
            black_box(out.len())
        })
    });
    // A request hyper's client sends: the plan is carried out on the map.
    c.bench_function("header rewrite (hop-by-hop + forwarded), on the map", |b| {
        b.iter(|| {
            let mut h = template.clone();
            plan(&h).apply(&mut h);
            black_box(h)
        })
    });
}

const USER: &str = "bench";
const PASSWORD: &str = "correct horse battery staple";

/// The hash field of `htpasswd -nb FLAGS USER PASSWORD`, or `None` when `htpasswd` is missing.
fn apache_hash(flags: &str) -> Option<StoredHash> {
    let out = Command::new("htpasswd")
        .args([flags, USER, PASSWORD])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let line = String::from_utf8(out.stdout).ok()?;
    let (_, hash) = line.trim().split_once(':')?;
    Some(StoredHash::parse(hash, false).expect("htpasswd writes hashes vastgate reads"))
}

fn bcrypt_10() -> StoredHash {
    let line = htpasswd_line(USER, PASSWORD, 10).expect("a valid user and cost");
    let (_, hash) = line.split_once(':').expect("user:hash");
    StoredHash::parse(hash, false).expect("vastgate reads its own bcrypt")
}

/// A request with credentials that were verified before: what every request of a logged-in user
/// costs. Includes a current-thread runtime's `block_on` (a cache hit never waits).
fn auth_cache_hit(c: &mut Criterion) {
    let auth = Authenticator::new(
        AuthSettings::default(),
        UserTable::from_entries([(USER.to_owned(), bcrypt_10())]),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let header = HeaderValue::try_from(format!(
        "Basic {}",
        STANDARD.encode(format!("{USER}:{PASSWORD}"))
    ))
    .expect("base64 is a valid header value");
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let first = runtime.block_on(auth.check_basic(Some(&header), client));
    assert!(matches!(first, Verdict::Granted { .. }), "{first:?}");
    let hashes = auth.hash_count();
    c.bench_function("auth cache hit (check_basic, bcrypt-10 entry)", |b| {
        b.iter(|| {
            let verdict = runtime.block_on(auth.check_basic(Some(black_box(&header)), client));
            black_box(matches!(verdict, Verdict::Granted { .. }))
        })
    });
    assert_eq!(auth.hash_count(), hashes, "a cache hit must not hash");
    // The same value again on a connection that keeps its last grant (the gateway's own codec).
    let mut memo = GrantMemo::default();
    let first = runtime.block_on(auth.check_basic_remembered(Some(&header), client, &mut memo));
    assert!(matches!(first, Verdict::Granted { .. }), "{first:?}");
    c.bench_function(
        "auth, the connection's last grant (check_basic_remembered)",
        |b| {
            b.iter(|| {
                let check =
                    auth.check_basic_remembered(Some(black_box(&header)), client, &mut memo);
                black_box(matches!(runtime.block_on(check), Verdict::Granted { .. }))
            })
        },
    );
    assert_eq!(
        auth.hash_count(),
        hashes,
        "a remembered grant must not hash"
    );
}

/// `StoredHash::verify` with the correct password, per scheme Apache's `htpasswd` writes.
fn verify_per_scheme(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    // bcrypt-10 takes tens of milliseconds: a few flat samples are enough.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let bcrypt = bcrypt_10();
    assert!(bcrypt.verify(PASSWORD.as_bytes()));
    group.bench_function("bcrypt cost 10", |b| {
        b.iter(|| black_box(bcrypt.verify(black_box(PASSWORD.as_bytes()))))
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    for (name, flags) in [
        ("apr1 (htpasswd -m)", "-nbm"),
        ("SHA-1 (htpasswd -s)", "-nbs"),
        ("SHA-256 crypt, 5000 rounds (htpasswd -2)", "-nb2"),
        ("SHA-512 crypt, 5000 rounds (htpasswd -5)", "-nb5"),
    ] {
        let Some(hash) = apache_hash(flags) else {
            eprintln!("verify/{name}: skipped, Apache's htpasswd is not installed");
            continue;
        };
        assert!(hash.verify(PASSWORD.as_bytes()), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(hash.verify(black_box(PASSWORD.as_bytes()))))
        });
    }
    group.finish();
}

/// An answer as uvicorn (Gradio, Forge) writes it, read from the upstream and written to an
/// HTTP/1.1 client: with its fields kept where they lie (the gateway's way for such answers), and
/// through a header map and the response rules (its way for HTTP/2 clients).
fn answer_head(c: &mut Criterion) {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ndate: Mon, 30 Nov 2026 10:00:00 GMT\r\n\
        server: uvicorn\r\ncontent-length: 5437\r\ncontent-type: application/json\r\n\
        x-content-type-options: nosniff\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\n\r\n";
    let mut group = c.benchmark_group("answer head to an HTTP/1.1 client");
    let mut out = Vec::with_capacity(1024);
    group.bench_function("kept verbatim", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(HEAD));
            let head = parse_response(&mut buf, &Method::GET, true)
                .expect("valid")
                .expect("whole");
            out.clear();
            let kept = head.kept.as_deref();
            assert!(kept.is_some());
            black_box(encode_response(
                &head.parts,
                kept,
                &Method::GET,
                None,
                false,
                &mut out,
            ));
        })
    });
    group.bench_function("through a header map", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(HEAD));
            let mut head = parse_response(&mut buf, &Method::GET, false)
                .expect("valid")
                .expect("whole");
            remove_hop_by_hop(&mut head.parts.headers);
            single_length(&mut head.parts.headers);
            out.clear();
            black_box(encode_response(
                &head.parts,
                None,
                &Method::GET,
                None,
                false,
                &mut out,
            ));
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the whole file finishes in a few minutes on a small machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = canonical_path_and_route, header_rewrite, answer_head, auth_cache_hit, verify_per_scheme
}
criterion_main!(benches);
