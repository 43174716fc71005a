//! Micro-benchmarks of the per-request hot path: canonical path + route, and header rewriting.
//! Run: `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

use vastgate::config::Config;
use vastgate::gateway::headers::{remove_hop_by_hop, set_forwarded, Hop};
use vastgate::gateway::path::canonicalize;
use vastgate::gateway::router::Router;

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
    c.bench_function("header rewrite (hop-by-hop + forwarded)", |b| {
        b.iter(|| {
            let mut h = template.clone();
            remove_hop_by_hop(&mut h);
            set_forwarded(
                &mut h,
                &Hop {
                    peer: "203.0.113.7".parse().expect("literal"),
                    trusted: false,
                    proto: "http",
                    host: Some(&host),
                },
            );
            black_box(h)
        })
    });
}

criterion_group!(benches, canonical_path_and_route, header_rewrite);
criterion_main!(benches);
