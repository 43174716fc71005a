"""A small Gradio 4.40 app served the way Stable Diffusion WebUI Forge serves itself.

Forge launches its Blocks with the queue on and `prevent_thread_lock`, then rebuilds the app's
middleware stack with starlette's GZipMiddleware (minimum_size=1000) and mounts its JSON API
(`/sdapi/v1/...`) on the same FastAPI app. With the starlette Forge pins (0.27) that middleware
holds server-sent events until the stream ends whenever the request accepts gzip, which is why
the gateway's Forge route drops Accept-Encoding.

Usage: gradio_app.py PORT GATE_DIR. Prints `READY` once it serves. `/stream` yields `step N` and
then waits until the file GATE_DIR/go-N exists before producing the next step, so a client
that receives step N only after step N+1 was produced cannot exist: the test's client creates
go-N when it has seen step N.
"""

import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from fastapi import Body  # noqa: E402
from starlette.middleware.gzip import GZipMiddleware  # noqa: E402

PORT = int(sys.argv[1])
GATE_DIR = Path(sys.argv[2])
STEPS = 4


def greet(name):
    return f"Hello, {name}!"


def stream(prompt):
    for step in range(STEPS):
        yield f"{prompt}: step {step} produced at {time.time():.6f}"
        gate = GATE_DIR / f"go-{step}"
        deadline = time.monotonic() + 120
        while not gate.exists():
            if time.monotonic() > deadline:
                yield f"{prompt}: gave up waiting for {gate.name}"
                return
            time.sleep(0.02)


def upload(file):
    data = Path(file).read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def slow(seconds):
    time.sleep(float(seconds))
    return f"slept {float(seconds):g}s"


# System fonts only: the page then has no reason to fetch anything from another host.
theme = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)

with gr.Blocks(theme=theme, title="vastgate e2e") as demo:
    name = gr.Textbox(label="Name", elem_id="name")
    greeting = gr.Textbox(label="Greeting", elem_id="greeting")
    gr.Button("Greet", elem_id="greet").click(greet, name, greeting, api_name="greet")

    prompt = gr.Textbox(label="Prompt")
    progress = gr.Textbox(label="Progress")
    gr.Button("Stream").click(stream, prompt, progress, api_name="stream")

    file = gr.File(label="Upload", type="filepath")
    digest = gr.Textbox(label="Digest")
    gr.Button("Digest").click(upload, file, digest, api_name="upload")

    seconds = gr.Number(label="Seconds", value=1)
    slept = gr.Textbox(label="Slept")
    gr.Button("Slow").click(slow, seconds, slept, api_name="slow")

demo.queue(default_concurrency_limit=8)
app, _, _ = demo.launch(
    server_name="127.0.0.1",
    server_port=PORT,
    prevent_thread_lock=True,
    show_api=True,
    quiet=True,
)

# As Forge's webui.py does after launch: rebuild the middleware stack with GZip...
app.middleware_stack = None
app.add_middleware(GZipMiddleware, minimum_size=1000)
app.build_middleware_stack()


# ...and mount the txt2img API, which blocks for the whole generation.
def txt2img(payload: dict = Body(...)):
    time.sleep(float(payload.get("seconds", 0.5)))
    return {"images": ["aGVsbG8="], "parameters": payload, "info": "fake Forge"}


app.add_api_route("/sdapi/v1/txt2img", txt2img, methods=["POST"])

print("READY", flush=True)
while True:
    time.sleep(3600)
