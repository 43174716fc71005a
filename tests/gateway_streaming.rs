//! Bodies that must stream through the gateway: a large upload, server-sent events, and
//! compression of large responses.

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

const UPLOAD_CHUNK: usize = 1 << 20;
const UPLOAD_CHUNKS: usize = 256;

/// Chunk `i` of the upload: pseudo-random bytes, different for every chunk.
fn upload_chunk(base: &Bytes, i: usize) -> Bytes {
    let mut chunk = base.to_vec();
    chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let last = chunk.len() - 8;
    chunk[last..].copy_from_slice(&(!(i as u64)).to_le_bytes());
    Bytes::from(chunk)
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_to_the_upstream_before_the_client_finishes() {
    // The upstream reports its first body bytes at once, then counts and checksums the rest.
    let (first_tx, first_rx) = oneshot::channel::<usize>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let (done_tx, mut done_rx) = mpsc::channel::<(u64, Checksum, Option<String>)>(1);
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let first_tx = first_tx.clone();
        let done_tx = done_tx.clone();
        async move {
            let length = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = req.into_body();
            let mut total = 0u64;
            let mut sum = Checksum::default();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.expect("upload body").into_data() else {
                    continue;
                };
                if total == 0 && !data.is_empty() {
                    if let Some(tx) = first_tx.lock().unwrap().take() {
                        let _ = tx.send(data.len());
                    }
                }
                total += data.len() as u64;
                sum.update(&data);
            }
            let _ = done_tx.send((total, sum, length)).await;
            Response::new(full(format!("{total}")))
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/files/", upstream.addr, "")]).await;

    let base = Bytes::from(pseudo_random(UPLOAD_CHUNK, 0x9e37_79b9_7f4a_7c15));
    let total = (UPLOAD_CHUNK * UPLOAD_CHUNKS) as u64;
    let (body_tx, body) = channel_body(2);
    let req = request(
        "PUT",
        "/files/api/resources/model.safetensors",
        &[
            ("content-type", "application/octet-stream"),
            ("content-length", &total.to_string()),
        ],
        body,
    );
    let mut conn = Conn::open(gw.addr).await;
    let response = tokio::spawn(async move { Reply::read(conn.send(req).await).await });

    // Only the first chunk goes out until the upstream has seen bytes of it: a gateway that
    // buffers the body before forwarding never gets there.
    let mut sent = Checksum::default();
    let first = upload_chunk(&base, 0);
    sent.update(&first);
    body_tx.send(first).await.expect("send the first chunk");
    let first_seen = within(
        Duration::from_secs(60),
        "the upstream receiving the first bytes while the client still holds the rest",
        first_rx,
    )
    .await
    .expect("first-chunk signal");
    assert!(first_seen > 0);

    for i in 1..UPLOAD_CHUNKS {
        let chunk = upload_chunk(&base, i);
        sent.update(&chunk);
        within(
            Duration::from_secs(60),
            "upload backpressure",
            body_tx.send(chunk),
        )
        .await
        .expect("send a chunk");
    }
    drop(body_tx);

    let reply = within(Duration::from_secs(300), "the upload's response", response)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (received, received_sum, length) = within(
        Duration::from_secs(60),
        "the upstream's tally",
        done_rx.recv(),
    )
    .await
    .unwrap();
    assert_eq!(received, total);
    assert_eq!(reply.text(), total.to_string());
    assert_eq!(received_sum, sent, "the upload arrived altered");
    assert_eq!(length, Some(total.to_string()), "Content-Length is kept");

    // 256 MiB went through; the gateway never held more than a sliver of it.
    if let Some(peak) = gw.peak_rss_kib() {
        assert!(
            peak < 64 * 1024,
            "the gateway's memory peaked at {peak} KiB while streaming 256 MiB"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_many_sizes_arrives_whole_and_in_order() {
    // The gateway hands a chunked body on in batches (gather.rs): nothing may be lost, doubled
    // or reordered, whatever the chunk sizes and however they are spread over time.
    let (upstream, mut done_rx) = tally_upstream("transfer-encoding").await;
    let gw = Gateway::start("", &[route("/files/", upstream.addr, "")]).await;

    let base = Bytes::from(pseudo_random(64 * 1024, 0x2545_f491_4f6c_dd1d));
    let (body_tx, body) = channel_body(64);
    let req = request("POST", "/files/api/upload", &[], body);
    let mut conn = Conn::open(gw.addr).await;
    let response = tokio::spawn(async move { Reply::read(conn.send(req).await).await });

    let (mut sent, mut total) = (Checksum::default(), 0u64);
    for i in 0..3000usize {
        // 1 byte to 64 KiB, in bursts and with pauses between some.
        let len = 1 + (i * 7919) % base.len();
        let start = (i * 104_729) % (base.len() - len + 1);
        let chunk = base.slice(start..start + len);
        sent.update(&chunk);
        total += len as u64;
        body_tx.send(chunk).await.expect("send a chunk");
        if i % 97 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(body_tx);

    let reply = within(Duration::from_secs(120), "the upload's response", response)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let (received, received_sum, framing) = within(
        Duration::from_secs(30),
        "the upstream's tally",
        done_rx.recv(),
    )
    .await
    .unwrap();
    assert_eq!(received, total);
    assert_eq!(received_sum, sent, "the upload arrived altered");
    assert_eq!(framing.as_deref(), Some("chunked"));
}

/// Drives an SSE stream through a gateway route: the upstream emits event N only after the test
/// client has received event N-1, so each event must cross the gateway on its own.
async fn events_arrive_one_by_one(route_extra: &str) -> Option<String> {
    let (stream_tx, mut stream_rx) = mpsc::channel::<(mpsc::Sender<Bytes>, Option<String>)>(1);
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let stream_tx = stream_tx.clone();
        async move {
            let accept_encoding = req
                .headers()
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (events, body) = channel_body(1);
            let _ = stream_tx.send((events, accept_encoding)).await;
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let gw = Gateway::start("", &[route("/", upstream.addr, route_extra)]).await;

    let mut conn = Conn::open(gw.addr).await;
    let resp = conn
        .send(request(
            "GET",
            "/queue/data?session_hash=abc",
            &[
                ("accept", "text/event-stream"),
                ("accept-encoding", "gzip, deflate, br"),
            ],
            empty(),
        ))
        .await;
    let (events, upstream_ae) = within(PATIENCE, "the upstream's event stream", stream_rx.recv())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("content-encoding").is_none(),
        "an event stream must not be compressed: {:?}",
        resp.headers()
    );
    assert!(resp.headers().get("content-length").is_none());

    let mut body = resp.into_body();
    let mut received = String::new();
    for n in 0..8 {
        let event = format!("event: progress\ndata: {{\"msg\": \"step\", \"n\": {n}}}\n\n");
        within(
            PATIENCE,
            "the upstream sending an event",
            events.send(event.clone().into()),
        )
        .await
        .expect("the gateway dropped the event stream");
        while !received.ends_with(&event) {
            let frame = within(
                Duration::from_secs(20),
                &format!(
                    "event {n} reaching the client before event {} exists",
                    n + 1
                ),
                body.frame(),
            )
            .await
            .expect("the stream ended early")
            .expect("stream error");
            if let Ok(data) = frame.into_data() {
                received.push_str(std::str::from_utf8(&data).expect("an uncompressed stream"));
            }
        }
    }
    drop(events);
    while let Some(frame) = within(PATIENCE, "the end of the stream", body.frame()).await {
        frame.expect("stream error");
    }
    assert_eq!(received.matches("event: progress").count(), 8);
    upstream_ae
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one_without_gateway_compression() {
    let upstream_ae = events_arrive_one_by_one("compress = false").await;
    assert_eq!(upstream_ae.as_deref(), Some("gzip, deflate, br"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one_with_gateway_compression() {
    // Compression on (the default) for a client that accepts gzip and br: not for events.
    let upstream_ae = events_arrive_one_by_one("").await;
    assert_eq!(upstream_ae.as_deref(), Some("gzip, deflate, br"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one_behind_drop_accept_encoding() {
    // The Forge setup: the upstream is not asked to compress, the gateway compresses instead —
    // but never an event stream.
    let upstream_ae =
        events_arrive_one_by_one("compress = true\ndrop_accept_encoding = true").await;
    assert_eq!(upstream_ae, None, "Accept-Encoding reached the upstream");
}

/// 2 MB of JavaScript-looking text, compressible but not trivially.
fn javascript(len: usize) -> Bytes {
    let mut out = String::with_capacity(len + 128);
    let mut n = 0u64;
    while out.len() < len {
        n += 1;
        out.push_str(&format!(
            "function component_{n}(props) {{ const v{n} = props.value * {m} + {k}; \
             return h('div', {{ class: 'gradio-{m}' }}, [v{n}, \"{n:x}\"]); }}\n",
            m = n.wrapping_mul(2_654_435_761) % 977,
            k = n % 13,
        ));
    }
    out.truncate(len);
    Bytes::from(out)
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

/// An upstream serving `script` at every path, recording the Accept-Encoding it was sent.
async fn script_upstream(script: Bytes) -> (Upstream, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let upstream = http_upstream(move |req: Request<Incoming>| {
        let script = script.clone();
        let record = record.clone();
        async move {
            record.lock().unwrap().push(
                req.headers()
                    .get("accept-encoding")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            );
            // In several chunks, as a real app streams a file.
            let length = script.len().to_string();
            let (tx, body) = channel_body(4);
            tokio::spawn(async move {
                for piece in script.chunks(64 * 1024) {
                    if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "application/javascript; charset=utf-8")
                .header("content-length", length)
                .body(body)
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_javascript_arrives_compressed_as_the_client_accepts() {
    let script = javascript(2 * 1024 * 1024);
    let (upstream, seen) = script_upstream(script.clone()).await;
    let gw = Gateway::start("", &[route("/", upstream.addr, "")]).await;

    // The gateway produces gzip only (one window per stream between chunks, see compress.rs).
    for (accept, expected) in [
        ("gzip, deflate, br, zstd", "gzip"),
        ("gzip, deflate", "gzip"),
        ("br;q=0, gzip", "gzip"),
    ] {
        let reply = get(
            gw.addr,
            "/assets/index-1234.js",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(reply.header("content-encoding"), Some(expected), "{accept}");
        assert!(reply.header("content-length").is_none(), "{accept}");
        let vary = reply
            .headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            vary.contains("accept-encoding"),
            "{accept}: Vary = {vary:?}"
        );
        assert!(
            reply.body.len() < script.len() / 3,
            "{accept}: {} compressed bytes for {}",
            reply.body.len(),
            script.len()
        );
        assert!(
            decode(expected, &reply.body) == script,
            "{accept}: decodes to something else"
        );
    }

    // A client that accepts no coding, or none the gateway produces, gets the bytes as they are.
    let reply = get(gw.addr, "/assets/index-1234.js", &[]).await;
    assert!(reply.header("content-encoding").is_none());
    assert!(reply.body == script);
    let reply = get(
        gw.addr,
        "/assets/index-1234.js",
        &[("accept-encoding", "br")],
    )
    .await;
    assert!(reply.header("content-encoding").is_none());
    assert!(reply.body == script);

    // Without drop_accept_encoding the upstream is asked as the client asked.
    assert_eq!(
        seen.lock().unwrap()[0].as_deref(),
        Some("gzip, deflate, br, zstd")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_accept_encoding_hides_it_from_the_upstream_and_the_gateway_compresses() {
    let script = javascript(2 * 1024 * 1024);
    let (upstream, seen) = script_upstream(script.clone()).await;
    let gw = Gateway::start(
        "",
        &[route("/", upstream.addr, "drop_accept_encoding = true")],
    )
    .await;

    let reply = get(
        gw.addr,
        "/assets/index.js",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[None],
        "Accept-Encoding reached the upstream"
    );
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert!(reply.header("content-length").is_none());
    assert!(decode("gzip", &reply.body) == script);
}
