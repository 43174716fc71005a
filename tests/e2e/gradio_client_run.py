"""Drives gradio_app.py through the gateway with gradio_client, as an API user would.

Usage: gradio_client_run.py URL AUTHORIZATION GATE_DIR UPLOAD_FILE. Prints one JSON object:
the prediction, the upload's digest, the slow call's answer, and the streamed outputs in the
order they arrived (each arrived while the app was waiting for this client's go-N file, see
gradio_app.py).
"""

import json
import sys
import time
from pathlib import Path

from gradio_client import Client, handle_file

url, authorization, gate_dir, upload_file = sys.argv[1:5]
gate_dir = Path(gate_dir)

# gradio_client's `auth=` is Gradio's own login form; HTTP basic auth travels as a header.
client = Client(url, headers={"Authorization": authorization}, verbose=False)
result = {"greet": client.predict("gateway", api_name="/greet")}
result["upload"] = client.predict(handle_file(upload_file), api_name="/upload")
started = time.monotonic()
result["slow"] = client.predict(3, api_name="/slow")
result["slow_seconds"] = time.monotonic() - started

job = client.submit("cat", api_name="/stream")
streamed = []
seen = 0
deadline = time.monotonic() + 180
while not job.done() or seen < len(job.outputs()):
    outputs = job.outputs()
    while seen < len(outputs):
        streamed.append(outputs[seen])
        # Only now may the app produce the next step.
        (gate_dir / f"go-{seen}").touch()
        seen += 1
    if time.monotonic() > deadline:
        streamed.append("client gave up waiting")
        break
    time.sleep(0.01)
result["stream"] = streamed
result["stream_status"] = str(job.status().code)
print(json.dumps(result), flush=True)
