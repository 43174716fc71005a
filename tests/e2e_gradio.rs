//! End to end, Forge's way: a real Gradio 4.40 app (queue on, a streaming generator, a file
//! upload, a slow function, starlette's GZipMiddleware and a FastAPI `/sdapi/v1/txt2img`, as
//! Forge builds itself: `tests/e2e/gradio_app.py`) behind the gateway at `/` with
//! `drop_accept_encoding` and basic auth, used by the clients people use: `gradio_client`,
//! headless Chromium, and the README's curl commands, under a real host name.

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use support::*;

const HOST: &str = "box.example";

/// The Gradio app on its own port and the gateway in front of it.
struct Forge {
    _app: App,
    gateway: Gateway,
    upstream: std::net::SocketAddr,
    gates: tempfile::TempDir,
}

async fn forge(python: &Path) -> Forge {
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let gates = tempfile::tempdir().expect("temp dir");
    let mut app = App::python(
        python,
        "gradio_app.py",
        &[
            upstream.port().to_string(),
            gates.path().display().to_string(),
        ],
    );
    app.wait_ready("READY").await;
    let gateway = gateway(&[route("/", upstream, "drop_accept_encoding = true")]).await;
    Forge {
        _app: app,
        gateway,
        upstream,
        gates,
    }
}

const GRADIO_MODULES: &[&str] = &["gradio", "gradio_client"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradio_client_predicts_uploads_and_streams_live_through_the_gateway() {
    let Some(python) = python(GRADIO_MODULES) else {
        return;
    };
    let forge = forge(&python).await;

    // 3 MiB of incompressible bytes: several reads of the gateway's upload path.
    let upload = forge.gates.path().join("upload.bin");
    let data: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&upload, &data).unwrap();
    let digest = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&data))
    };

    let ran = run_python(
        &python,
        "gradio_client_run.py",
        &[
            forge.gateway.url("/"),
            authorization(),
            forge.gates.path().display().to_string(),
            upload.display().to_string(),
        ],
        Duration::from_secs(300),
    )
    .await;
    let out = ran.json();
    assert_eq!(out["greet"], "Hello, gateway!", "{out}");
    assert_eq!(
        out["upload"],
        format!("{} {digest}", data.len()),
        "the uploaded file reached the app whole"
    );
    assert_eq!(out["slow"], "slept 3s");
    assert!(out["slow_seconds"].as_f64().unwrap() >= 3.0);

    // The app produced step N+1 only after the client had received step N (gradio_app.py), so
    // four steps in order mean every event was delivered while the stream was still open: with
    // Forge's GZip middleware that is only so because the gateway dropped Accept-Encoding.
    let stream: Vec<String> = out["stream"]
        .as_array()
        .expect("stream outputs")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stream.len(), 4, "one output per step: {stream:?}");
    for (i, output) in stream.iter().enumerate() {
        assert!(
            output.starts_with(&format!("cat: step {i} produced at")),
            "output {i} arrived out of order or not live: {stream:?}"
        );
    }
    assert_eq!(out["stream_status"], "Status.FINISHED");

    // Everything went through the gateway, authenticated.
    let log = forge.gateway.access_log();
    let paths: Vec<&str> = log.iter().filter_map(|l| l["path"].as_str()).collect();
    for needed in ["/upload", "/queue/join", "/queue/data"] {
        assert!(
            paths.iter().any(|p| p.starts_with(needed)),
            "no {needed} in the access log: {paths:?}"
        );
    }
    assert!(
        log.iter().all(|l| l["status"].as_u64() != Some(401)),
        "gradio_client's Authorization header was refused somewhere: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_is_challenged_logs_in_and_uses_the_page_under_a_real_host_name() {
    let Some(python) = python(&["gradio", "selenium"]) else {
        return;
    };
    let Some(_) = chromium() else {
        return;
    };
    let forge = forge(&python).await;
    let port = forge.gateway.addr.port();
    let screenshot = artifacts_dir().join("gradio.png");
    let _ = std::fs::remove_file(&screenshot);

    let ran = run_python(
        &python,
        "gradio_browser.py",
        &[
            HOST.into(),
            port.to_string(),
            USER.into(),
            PASSWORD.into(),
            screenshot.display().to_string(),
        ],
        Duration::from_secs(300),
    )
    .await;
    let out = ran.json();
    assert_eq!(out["greeting"], "Hello, browser!", "{out}");
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");

    let gateway_authority = format!("{HOST}:{port}");
    let requests = out["requests"].as_array().expect("the browser's requests");
    let first = requests
        .iter()
        .find(|r| {
            authority(r["url"].as_str().unwrap_or_default()).as_deref() == Some(&gateway_authority)
        })
        .expect("the browser asked the gateway");
    assert_eq!(
        first["status"], 401,
        "the first visit was challenged: {first}"
    );
    assert!(
        first["www_authenticate"]
            .as_str()
            .is_some_and(|v| v.starts_with("Basic realm=")),
        "with a Basic challenge: {first}"
    );

    // Every request of the page went to the gateway under the name the browser used: none to
    // the upstream's own address (which would mean Host or X-Forwarded-* were mishandled).
    // The one third-party script is Gradio's own index.html asking cdnjs for iframe-resizer.
    let mut seen_queue = false;
    for r in requests {
        let url = r["url"].as_str().unwrap_or_default();
        let Some(host) = authority(url) else {
            continue; // data:, chrome:, blob:
        };
        assert!(
            !url.contains(&forge.upstream.port().to_string()) || host == gateway_authority,
            "the browser was sent to the upstream's own address: {url}"
        );
        if host == "cdnjs.cloudflare.com" && url.contains("/iframe-resizer/") {
            continue;
        }
        assert_eq!(host, gateway_authority, "a request left the gateway: {url}");
        seen_queue |= url.contains("/queue/data");
    }
    assert!(
        seen_queue,
        "the click went through Gradio's queue: {requests:?}"
    );
}

/// The README's curl lines for `/healthz`, `/` and `/sdapi/v1/txt2img`, as written there except
/// for the address (`box.example:PORT`, resolved with `--resolve`) and the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_curl_examples_run_as_written_against_the_fastapi_of_a_gradio_app() {
    let Some(python) = python(GRADIO_MODULES) else {
        return;
    };
    let Some(()) = curl() else {
        return;
    };
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let example = |path: &str| -> Vec<String> {
        let line = readme
            .lines()
            .find(|l| l.starts_with("curl ") && l.contains(&format!("127.0.0.1:8000{path} ")))
            .or_else(|| {
                readme.lines().find(|l| {
                    l.starts_with("curl ") && l.ends_with(&format!("127.0.0.1:8000{path}"))
                })
            })
            .unwrap_or_else(|| panic!("README.md has no curl example for {path}"));
        let command = line.split(" # ").next().unwrap();
        shell_words(command)
    };
    let forge = forge(&python).await;
    let port = forge.gateway.addr.port();
    let run = |words: Vec<String>| {
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| {
                w.replace("demo:vastgate-demo", &format!("{USER}:{PASSWORD}"))
                    .replace("127.0.0.1:8000", &format!("{HOST}:{port}"))
            })
            .collect();
        let out = Command::new("curl")
            .args([
                "--max-time",
                "120",
                "--resolve",
                &format!("{HOST}:{port}:127.0.0.1"),
            ])
            .args(&args)
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        (args, String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let (args, body) = run(example("/healthz"));
    assert_eq!(body.trim(), r#"{"status":"ok"}"#, "curl {args:?}");
    let (args, head) = run(example("/"));
    assert!(head.starts_with("HTTP/1.1 401"), "curl {args:?}: {head}");
    let (args, body) = run(example("/sdapi/v1/txt2img"));
    let json: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("curl {args:?} answered no JSON ({e}): {body}"));
    assert_eq!(
        json["images"][0], "aGVsbG8=",
        "curl {args:?} reached the FastAPI route: {json}"
    );
    assert_eq!(json["parameters"]["prompt"], "cat");
}

/// Splits a command line as a POSIX shell would, for the subset the README uses (words, and
/// single-quoted strings).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
