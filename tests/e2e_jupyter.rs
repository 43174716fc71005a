//! End to end with a real Jupyter Server behind `/jupyter/` (`base_url=/jupyter/`), reached as
//! remote users reach it: under a host name that is not a loopback address, through the
//! gateway's basic auth, with Jupyter's own `?token=` on every request.

mod common;
#[path = "e2e/support.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "box.example";
const JUPYTER_TOKEN: &str = "jupyters-own-token-5c1d";
/// The gateway's own Vast token, different from Jupyter's: Jupyter's must pass untouched.
const VAST_TOKEN: &str = "the-gateways-vast-token-77aa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_created_over_rest_runs_code_over_its_websocket_through_the_gateway() {
    let Some(python) = python(&["jupyter_server", "ipykernel"]) else {
        return;
    };
    let Some(()) = curl() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (runtime, data, config, root) = (
        dir.path().join("runtime"),
        dir.path().join("data"),
        dir.path().join("config"),
        dir.path().join("root"),
    );
    std::fs::create_dir_all(&root).unwrap();
    let args: Vec<String> = [
        "-m",
        "jupyter_server",
        "--ServerApp.base_url=/jupyter/",
        &format!("--IdentityProvider.token={JUPYTER_TOKEN}"),
        "--ServerApp.ip=127.0.0.1",
        &format!("--ServerApp.port={}", upstream.port()),
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        &format!("--ServerApp.root_dir={}", root.display()),
        // CI runs as root.
        "--ServerApp.allow_root=True",
        // Behind a proxy under a real name Jupyter must be told that name is fine: its default
        // refuses every Host that is not a loopback address (DNS-rebinding protection), which a
        // test on 127.0.0.1 never notices.
        "--ServerApp.allow_remote_access=True",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("JUPYTER_RUNTIME_DIR", runtime.to_str().unwrap()),
        ("JUPYTER_DATA_DIR", data.to_str().unwrap()),
        ("JUPYTER_CONFIG_DIR", config.to_str().unwrap()),
    ];
    let mut jupyter = App::spawn("jupyter-server", &python, &args, &env);
    jupyter.wait_http(upstream, "/jupyter/api/status").await;

    let gw = gateway_with(&[route("/jupyter/", upstream, "")], |setup| {
        setup.env("OPEN_BUTTON_TOKEN", VAST_TOKEN)
    })
    .await;
    let port = gw.addr.port();
    let origin = format!("http://{HOST}:{port}");

    // REST, with curl under the real name, as JupyterLab's page would send it.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(["--resolve", &format!("{HOST}:{port}:127.0.0.1")])
        .args(["-u", &format!("{USER}:{PASSWORD}")])
        .args(["-H", &format!("Origin: {origin}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"name":"python3"}"#])
        .arg(format!(
            "{origin}/jupyter/api/kernels?token={JUPYTER_TOKEN}"
        ))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl's status line");
    assert_eq!(status, "201", "create a kernel: {body}");
    let kernel: serde_json::Value = serde_json::from_str(body).expect("kernel JSON");
    let kernel_id = kernel["id"].as_str().expect("kernel id").to_owned();

    // The kernel's channels, over the tunnel, as a browser page on `origin` opens them.
    let session = "e2e-session-1";
    let url = format!(
        "ws://{HOST}:{port}/jupyter/api/kernels/{kernel_id}/channels?session_id={session}&token={JUPYTER_TOKEN}"
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", authorization().parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, resp) = within(
        PATIENCE,
        "kernel channels handshake",
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .expect("the kernel's channels WebSocket opens through the gateway");
    assert_eq!(resp.status(), 101);

    let msg_id = "e2e-execute-1";
    let execute = serde_json::json!({
        "header": {
            "msg_id": msg_id, "msg_type": "execute_request", "session": session,
            "username": "e2e", "version": "5.3", "date": "2026-01-01T00:00:00Z",
        },
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {
            "code": "1+1", "silent": false, "store_history": true,
            "user_expressions": {}, "allow_stdin": false, "stop_on_error": true,
        },
    });
    ws.send(Message::Text(execute.to_string())).await.unwrap();

    // The kernel may still be starting: its first messages can be status updates.
    let result = within(
        Duration::from_secs(120),
        "the kernel's execute_result",
        async {
            while let Some(msg) = ws.next().await {
                let msg = msg.expect("a kernel message");
                let Message::Text(text) = msg else { continue };
                let v: serde_json::Value = serde_json::from_str(&text).expect("kernel JSON");
                if v["parent_header"]["msg_id"] == msg_id
                    && v["header"]["msg_type"] == "execute_result"
                {
                    return v;
                }
            }
            panic!("the channels closed before the result");
        },
    )
    .await;
    assert_eq!(result["content"]["data"]["text/plain"], "2", "{result}");
    ws.close(None).await.unwrap();

    // Jupyter answered both requests only because its token reached it: neither the query nor
    // the access log carries it past the gateway's own Vast-token handling.
    let log = gw.access_log();
    let ws_entry = log
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with("/channels")))
        .expect("the channels request in the access log");
    assert_eq!(ws_entry["status"], 101, "{ws_entry}");
    assert!(
        !gw.stdout.text().contains(JUPYTER_TOKEN),
        "the access log never shows queries"
    );
    let kernels = jupyter.stderr.text();
    assert!(
        kernels.contains("Kernel started") || kernels.contains(&kernel_id),
        "{kernels}"
    );
}
