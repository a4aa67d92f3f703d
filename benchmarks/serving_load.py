"""A served model under load: the exported SavedModel behind keras_unet.export.server (TF
Serving's REST predict API; TF Serving's own binary is not on PyPI), driven by N concurrent
clients that mix valid requests with malformed ones (wrong rank, wrong type, too many channels, a
huge image, an empty body, broken JSON, a tile of the wrong size).

Measured: throughput, p50/p99 latency of the valid requests, failed valid requests (the goal: 0),
malformed requests answered with a readable 400 (the goal: all), the server's resident memory
after the first 1,000 requests and at the end (the goal: flat), and whether it is still up.

    python benchmarks/serving_load.py --requests 10000 --clients 32
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _common import write_table

MALFORMED = [
    b"",
    b"{not json",
    json.dumps({"signature_name": "segment", "inputs": {"image": [[1.0, 2.0]]}}).encode(),
    json.dumps({"signature_name": "segment", "inputs": {"image": [[["x"]] * 32] * 32}}).encode(),
    json.dumps({"signature_name": "segment", "inputs": {"image": np.zeros((32, 32, 3)).tolist()}}).encode(),
    json.dumps({"inputs": {"image": np.zeros((1, 64, 64, 1)).tolist()}}).encode(),
    json.dumps({"signature_name": "segment", "inputs": {"image": [[[0.0] * 1] * 5000] * 4000}}).encode(),  # 20 Mpx
    json.dumps({"signature_name": "nope", "inputs": {"image": [[[0.0]]]}}).encode(),
]


def exported(work: Path, base_filters: int) -> Path:
    """A model exported as users do (``keras-unet export --format savedmodel --tile 220``)."""
    import keras
    from click.testing import CliRunner

    from keras_unet.cli.main import main
    from keras_unet.model import inference_model, unet

    keras.utils.set_random_seed(3)
    model = work / "tiny.keras"
    inference_model(unet(base_filters=base_filters, dropout=0.0, input_range=None), (1.0, 99.8)).save(model)
    result = CliRunner().invoke(main, ["export", str(model), "--format", "savedmodel", "--out", str(work / "serving"),
                                       "--name", "unet", "--tile", "220", "--version", "1", "--no-verify"])
    assert result.exit_code == 0, result.output
    return work / "serving" / "unet"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, body: bytes) -> tuple[int, dict, float]:
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/v1/models/unet:predict", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        value = json.loads(response.read() or b"{}")
        return response.status, value, time.perf_counter() - start
    except (OSError, http.client.HTTPException, ValueError) as err:
        return -1, {"error": f"{type(err).__name__}: {err}"}, time.perf_counter() - start
    finally:
        connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size", type=int, default=96, help="side of the valid requests' images (px)")
    parser.add_argument("--base-filters", type=int, default=4)
    parser.add_argument("--bad-share", type=float, default=0.1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (args.size, args.size, 1)).astype(np.float32)
    valid = json.dumps({"signature_name": "segment", "inputs": {"image": image.tolist()}}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        base = exported(Path(tmp), args.base_filters)
        process = subprocess.Popen([sys.executable, "-m", "keras_unet.export.server", str(base), "--port", "0"],
                                   stderr=subprocess.PIPE, text=True)
        line = ""
        while "serving" not in line:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise SystemExit("the server did not start")
        port = int(re.search(r":(\d+)$", line.strip()).group(1))
        plan = ["bad" if rng.uniform() < args.bad_share else "valid" for _ in range(args.requests)]
        results, lock, memory = [], threading.Lock(), {}

        def send(i: int):
            kind = plan[i]
            status, value, seconds = post(port, valid if kind == "valid" else MALFORMED[i % len(MALFORMED)])
            error = value.get("error") if status != 200 else None  # the answers' arrays are not kept
            with lock:
                results.append((kind, status, {"error": error} if error else {}, seconds))
                if len(results) == 1000:
                    memory["after 1,000"] = rss_mb(process.pid)
                if len(results) % 1000 == 0:
                    print(f"{len(results)} requests, server RSS {rss_mb(process.pid):.0f} MB", file=sys.stderr,
                          flush=True)

        memory["warm"] = rss_mb(process.pid)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(send, range(args.requests)))
        wall = time.perf_counter() - start
        memory["end"] = rss_mb(process.pid)
        alive = process.poll() is None
        process.terminate()
        process.wait(timeout=30)
    good = [r for r in results if r[0] == "valid"]
    bad = [r for r in results if r[0] == "bad"]
    failed_valid = sum(1 for r in good if r[1] != 200)
    readable = sum(1 for r in bad if r[1] == 400 and r[2].get("error") and "\n" not in r[2]["error"])
    latencies = np.array([r[3] for r in good if r[1] == 200])
    for kind, status, value, _ in [r for r in good if r[1] != 200][:5] + [r for r in bad if r[1] != 400][:5]:
        print(f"{kind} request answered {status}: {value.get('error')}", file=sys.stderr)
    growth = memory["end"] - memory["after 1,000"]
    rows = [[args.requests, args.clients, f"{len(good)} / {len(bad)}", f"{len(good) / wall:.1f}",
             f"{1000 * np.percentile(latencies, 50):.0f}", f"{1000 * np.percentile(latencies, 99):.0f}",
             failed_valid, f"{readable} of {len(bad)}",
             f"{memory['warm']:.0f} / {memory['after 1,000']:.0f} / {memory['end']:.0f} ({growth:+.0f})",
             "yes" if alive else "NO"]]
    header = ["requests", "clients", "valid / malformed", "valid req/s", "p50 ms", "p99 ms", "failed valid",
              "malformed with a readable 400", "server RSS MB: warm / after 1,000 / end", "still up"]
    notes = (f"Valid requests: `segment` on one {args.size}x{args.size} gray image (REST JSON), a base-"
             f"{args.base_filters} depth-5 network exported with --tile 220; the server runs at most one request "
             "per core through the network (the rest wait). Malformed: empty body, broken JSON, rank 2, strings, "
             "3 channels, a 64 px tile where the export takes 220, a 4000x5000 image (over the 16 Mpx limit), an "
             "unknown signature. Latency is client-side, queueing included.")
    path = write_table("serving_load", "A served model under load (keras_unet.export.server)",
                       " ".join(["python benchmarks/serving_load.py"] + sys.argv[1:]), header, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
