"""A small HTTP server for an exported SavedModel, speaking TF Serving's REST predict API, for
where TF Serving's model server cannot be installed (it ships as a Docker image and an apt
package, not on PyPI) and for tests and load benchmarks on one machine.

Run: ``python -m keras_unet.export.server SERVING/unet --port 8501`` (the model's base folder with
numbered versions, or one version folder). It loads the newest version with
``tf.saved_model.load`` (TensorFlow and the standard library only: no keras_unet code serves a
request), runs every signature once before it answers (warm-up), and then serves:

* ``GET /v1/models/NAME``: the version and its state, as TF Serving answers;
* ``POST /v1/models/NAME:predict`` with ``{"signature_name": ..., "inputs": {"image": ...}}``
  (columnar: ``{"outputs": ...}``) or ``{"instances": [...]}`` (rows: ``{"predictions": ...}``).

What it refuses, each with HTTP 400 and ``{"error": "..."}`` in one line: a body that is not
JSON or over :data:`MAX_BODY`, an unknown signature, an input of the wrong rank, channels or
type, an image over :data:`MAX_PIXELS`. The SavedModel's own checks (a tile of the wrong size)
come back as 400 too. Any other failure is a 500 with its message; none stops the server. At
most ``--workers`` requests are parsed and run at once (the rest wait), which bounds memory: a
JSON image costs some 30 bytes a number in Python before it is an array.

Why our own and not a framework's: the standard library's ``ThreadingHTTPServer`` is enough for
this API, adds no dependency, and the load benchmark (benchmarks/serving_load.py) measures it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 64 * 1024 * 1024  # bytes of JSON: a 2048x2048 image is about 25-60 MB of it
DRAIN = 1024 * 1024 * 1024  # a body over MAX_BODY is read and dropped up to this, to answer it
MAX_PIXELS = 4096 * 4096  # per image: beyond it a request is refused, not tried


class Refused(Exception):
    """A request the server answers with HTTP 400 and this message."""


def reason(message: str) -> str:
    """The one line of a TensorFlow error that says what is wrong: an assertion's own words and
    values (the SavedModel's run-time checks), else its first line that is not boilerplate."""
    found = re.search(r"assertion failed: \[(.*?)\] \[(.*?)\]", message, flags=re.S)
    if found:
        return f"{found.group(1)} {found.group(2)}".replace("\\'", "'").replace("\n", " ")
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.startswith(("Graph execution error", "Detected at node", "<stack"))]
    return lines[0] if lines else "invalid argument"


def version_folder(path: Path) -> Path:
    """``path`` itself if it holds a saved_model.pb, else its highest numbered subfolder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())
    if not versions:
        raise SystemExit(f"{path}: no SavedModel (saved_model.pb) in it or in a numbered version folder")
    return versions[-1][1]


class Model:
    """The loaded SavedModel, its signatures' input specs, and the gate of ``workers`` slots."""

    def __init__(self, base: Path, name: str, workers: int):
        import tensorflow as tf

        self.tf, self.name = tf, name
        self.folder = version_folder(base)
        self.version = int(self.folder.name) if self.folder.name.isdigit() else 1
        self.loaded = tf.saved_model.load(str(self.folder))
        self.signatures = dict(self.loaded.signatures)
        self.specs = {key: fn.structured_input_signature[1]["image"] for key, fn in self.signatures.items()}
        self.gate = threading.BoundedSemaphore(max(1, workers))  # requests parsed and run at once
        self.state = "LOADING"

    def warm_up(self, tile: int = 188) -> None:
        """Every signature once on a zero input (the first call builds the graph's kernels)."""
        import numpy as np

        for key, spec in self.specs.items():
            channels = int(spec.shape[-1])
            image = np.zeros((tile, tile, channels), np.float32)
            self.run(key, image[None] if spec.shape.rank == 4 else image)
        self.state = "AVAILABLE"

    def check(self, signature: str, image):
        """The request's ``image`` as a float32 array of ``signature``'s rank and channels, within
        the size limit; :class:`Refused` with what is wrong otherwise."""
        import numpy as np

        spec = self.specs.get(signature)
        if spec is None:
            raise Refused(f"unknown signature_name {signature!r}; this model has {', '.join(sorted(self.specs))}")
        try:
            array = np.asarray(image, dtype=np.float32)
        except (TypeError, ValueError):
            raise Refused("'image' must be a nested list of numbers") from None
        if array.ndim != spec.shape.rank:
            raise Refused(f"'image' of {signature} must have rank {spec.shape.rank} "
                          f"({'tiles, ' if spec.shape.rank == 4 else ''}height, width, channels), got {array.ndim}")
        if array.shape[-1] != spec.shape[-1]:
            raise Refused(f"'image' must have {spec.shape[-1]} channel(s), got {array.shape[-1]}")
        if array.shape[-3] * array.shape[-2] > MAX_PIXELS or array.size > 4 * MAX_PIXELS:
            raise Refused(f"image of {array.shape[-3]}x{array.shape[-2]} px is over this server's "
                          f"{MAX_PIXELS} px; split it or use gRPC TF Serving")
        if not np.all(np.isfinite(array)):
            raise Refused("'image' has NaN or infinite values")
        return array

    def run(self, signature: str, image) -> dict:
        tf = self.tf
        try:
            outputs = self.signatures[signature](image=tf.constant(image))
        except tf.errors.InvalidArgumentError as err:  # the SavedModel's own checks
            raise Refused(reason(err.message)) from None
        return {key: value.numpy().tolist() for key, value in outputs.items()}


def make_handler(model: Model):
    prefix = f"/v1/models/{model.name}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # one line per request on stderr is noise under load
            pass

        def _send(self, status: int, value: dict) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") != prefix:
                return self._send(404, {"error": f"no such path {self.path}; try {prefix}"})
            return self._send(200, {"model_version_status": [{"version": str(model.version), "state": model.state,
                                                              "status": {"error_code": "OK", "error_message": ""}}]})

        def do_POST(self):
            try:
                with model.gate:  # parsing a large body costs as much memory as running it
                    answer = self._predict()
                self._send(200, answer)
            except Refused as err:
                self._send(400, {"error": str(err)})
            except Exception as err:  # a bug or a resource error: answered, never the end of the server
                self._send(500, {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})

        def _drop(self, length: int) -> None:
            """Read and drop a body too big to parse, in small pieces, so the client (which sends
            it all before it reads) gets the answer; past :data:`DRAIN` the connection is closed."""
            left = min(length, DRAIN)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
            if length > DRAIN:
                self.close_connection = True

        def _predict(self) -> dict:
            if self.path != f"{prefix}:predict":
                raise Refused(f"POST to {prefix}:predict, not {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0:
                raise Refused("empty body; send JSON with 'inputs' or 'instances'")
            if length > MAX_BODY:
                self._drop(length)
                raise Refused(f"body of {length} bytes is over this server's {MAX_BODY}; send smaller images")
            try:
                request = json.loads(self.rfile.read(length))
            except ValueError as err:
                raise Refused(f"body is not JSON ({err})") from None
            if not isinstance(request, dict):
                raise Refused("body must be a JSON object with 'inputs' or 'instances'")
            signature = request.get("signature_name", "serving_default")
            if "inputs" in request:
                inputs = request["inputs"]
                image = inputs.get("image") if isinstance(inputs, dict) else inputs
                return {"outputs": model.run(signature, model.check(signature, image))}
            if "instances" in request:  # rows: each instance one image of a batch
                rows = request["instances"]
                images = [row.get("image") if isinstance(row, dict) else row for row in rows] \
                    if isinstance(rows, list) else None
                if not images:
                    raise Refused("'instances' must be a non-empty list")
                outputs = [model.run(signature, model.check(signature, image)) for image in images]
                return {"predictions": outputs}
            raise Refused("body must have 'inputs' or 'instances'")

    return Handler


def serve(base, port: int = 8501, name: str = "unet", workers: int | None = None, host: str = "127.0.0.1",
          ready=None) -> None:
    """Load, warm up and serve until interrupted; ``ready(server)`` is called once it answers."""
    model = Model(Path(base), name, workers or os.cpu_count() or 1)
    model.warm_up()
    # the standard library's listen backlog is 5: more clients than that at once would be refused
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer((host, port), make_handler(model))
    server.daemon_threads = True
    print(f"serving {model.folder} as {name} (version {model.version}) on http://{host}:{server.server_port}",
          file=sys.stderr, flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the model's base folder (numbered versions) or one version folder")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="unet")
    parser.add_argument("--workers", type=int, default=None, help="requests run at once [CPU cores]")
    args = parser.parse_args(argv)
    serve(args.model, port=args.port, name=args.name, workers=args.workers, host=args.host)


if __name__ == "__main__":
    main()
