"""The small REST server over an exported SavedModel (keras_unet.export.server), in its own
process as users run it: 16 concurrent clients mixing valid and malformed requests. Every valid
one is answered with what the SavedModel gives in this process; every malformed one gets a
readable 400; the server is still up at the end. (Throughput, latency and memory over 10,000
requests: benchmarks/serving_load.py.)"""
import http.client
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import child_env


@pytest.fixture(scope="module")
def server(served):
    folder = served[0]
    process = subprocess.Popen([sys.executable, "-m", "keras_unet.export.server", str(folder), "--port", "0",
                                "--name", "cells", "--workers", "2"], stderr=subprocess.PIPE, text=True,
                               env=child_env())
    line = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "serving" not in line:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, f"the server did not start: {line!r}"
    yield process, int(match.group(1)), folder
    process.terminate()
    process.wait(timeout=30)


def post(port: int, body: bytes, path: str = "/v1/models/cells:predict") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


MALFORMED = [
    (b"", "empty body"),
    (b"{not json", "body is not JSON"),
    (json.dumps({"inputs": {"image": [[1.0, 2.0], [3.0, 4.0]]}, "signature_name": "segment"}).encode(), "rank 3"),
    (json.dumps({"inputs": {"image": [[["a"]] * 40] * 40}, "signature_name": "segment"}).encode(),
     "nested list of numbers"),
    (json.dumps({"inputs": {"image": np.zeros((40, 40, 3)).tolist()}, "signature_name": "segment"}).encode(),
     "1 channel(s), got 3"),
    (json.dumps({"inputs": {"image": np.zeros((1, 64, 64, 1)).tolist()}}).encode(), "220"),  # a tile of the wrong size
    (json.dumps({"inputs": {"image": [[[0.0]]]}, "signature_name": "nope"}).encode(), "unknown signature_name"),
    (json.dumps([1, 2]).encode(), "JSON object"),
]


def test_concurrent_clients_get_answers_and_malformed_requests_readable_errors(server):
    import tensorflow as tf

    process, port, folder = server
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (h, w, 1)).astype(np.float32) for h, w in [(64, 80), (97, 61), (120, 120)]]
    segment = tf.saved_model.load(str(folder)).signatures["segment"]
    expected = [segment(image=tf.constant(image))["probabilities"].numpy() for image in images]
    requests = [("valid", i % 3) if i % 3 else ("bad", i % len(MALFORMED)) for i in range(96)]

    def send(request):
        kind, index = request
        if kind == "valid":
            body = json.dumps({"signature_name": "segment", "inputs": {"image": images[index].tolist()}}).encode()
        else:
            body = MALFORMED[index][0]
        return request, post(port, body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, requests))
    for (kind, index), (status, value) in answers:
        if kind == "valid":
            assert status == 200, value
            got = np.asarray(value["outputs"]["probabilities"], np.float32)
            np.testing.assert_allclose(got, expected[index], atol=1e-5)
        else:
            assert status == 400 and MALFORMED[index][1] in value["error"], (MALFORMED[index][1], status, value)
            assert "\n" not in value["error"]
    status, value = post(port, b"{}", path="/v1/models/other:predict")
    assert status == 400 and "POST to /v1/models/cells:predict" in value["error"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/models/cells")
    state = json.loads(connection.getresponse().read())
    assert state["model_version_status"][0] == {"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}
    assert process.poll() is None  # still serving
