"""Which engine runs the network on tiles: TensorFlow (Keras' ``predict_on_batch``), or ONNX Runtime
or OpenVINO on the same network converted once. Everything around the network (whole-image normalisation,
overlap-tile geometry, test-time augmentation, instances) stays in :mod:`keras_unet.tiling` and
:mod:`keras_unet.inference`; an engine only maps ``tiles (B, S, S, C) float32 -> probabilities``.

ONNX Runtime ran the paper network 1.25-1.30x faster than TensorFlow on a 2-vCPU AMD EPYC (Zen 3)
and is what Fiji, ilastik and most deployments of other frameworks' models already use. The
conversion is this project's own ONNX export (:mod:`keras_unet.export.onnx`, tf2onnx in a
subprocess) of the bare network, cached under a key of its architecture and weights, written
atomically, so a stale or half-written file is never used.

``auto`` picks, per machine (CPU model, threads), network and tile batch shape, the faster of the
engines installed, from a short measurement on first use that is cached; it keeps TensorFlow where
the job is too small to pay for a conversion (about 10-20 s), so it is never slower than
TensorFlow by more than that measurement.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import weakref
from pathlib import Path

import numpy as np

from keras_unet.errors import SettingsError
from keras_unet.files import atomic_path, cache_root

ENGINES = ("auto", "tensorflow", "onnxruntime", "openvino")
EXTRAS = {"onnxruntime": ("onnxruntime", "tf2onnx"), "openvino": ("openvino", "tf2onnx")}
# auto converts only for jobs whose TensorFlow time is estimated above this (s): a conversion costs
# 10-20 s on 2 cores, and a job shorter than that cannot win it back.
CONVERSION_PAYS_AFTER = 60.0

_SESSIONS = {}  # network_key -> onnxruntime session


def installed() -> list[str]:
    """The engines that can run here: TensorFlow always; ONNX Runtime with the ``[onnx]`` extra
    (onnxruntime to run, tf2onnx to convert); OpenVINO with ``[openvino]`` (it reads the same
    converted ONNX file)."""
    return ["tensorflow"] + [name for name, modules in EXTRAS.items()
                             if all(importlib.util.find_spec(m) is not None for m in modules)]


def check_engine(engine: str) -> str:
    """``engine`` if it is known and installed, else a :class:`SettingsError` saying what to install."""
    if engine not in ENGINES:
        raise SettingsError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto" and engine not in installed():
        extra = "onnx" if engine == "onnxruntime" else engine
        raise SettingsError(f"--engine {engine} needs {' and '.join(EXTRAS[engine])}: "
                            f"pip install 'unet-paper-keras[{extra}]'")
    return engine


def network_key(network) -> str:
    """A hash of the network's architecture and weights: the name of its converted file."""
    digest = hashlib.sha256(json.dumps(network.get_config(), sort_keys=True, default=str).encode())
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:32]


def onnx_file(network, key: str | None = None) -> Path:
    """The network converted to ONNX (tiles of valid sizes in, probabilities out), converted on
    first use and cached under :func:`network_key` (``key`` if computed already)."""
    from keras_unet.export.onnx import convert_signature

    path = cache_root() / "onnx" / f"{key or network_key(network)}.onnx"
    if not path.is_file():
        with atomic_path(path) as tmp:
            convert_signature(network, tmp, "serving_default")
    return path


def onnx_forward(network):
    """``tiles -> probabilities`` through ONNX Runtime. Sessions are kept by :func:`network_key`,
    not by the Keras object, so a network whose weights changed since never runs an old file."""
    key = network_key(network)
    if key not in _SESSIONS:
        import onnxruntime

        while len(_SESSIONS) >= 4:  # a few networks at a time; each session holds its weights
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = onnxruntime.InferenceSession(str(onnx_file(network, key)), providers=["CPUExecutionProvider"])
    session = _SESSIONS[key]
    return lambda tiles: session.run(["probabilities"], {"image": np.ascontiguousarray(tiles, np.float32)})[0]


def openvino_forward(network):
    """``tiles -> probabilities`` through OpenVINO's CPU plugin, on the same converted ONNX file
    (compiled models kept by :func:`network_key`, as the ONNX Runtime sessions)."""
    key = "openvino:" + network_key(network)
    if key not in _SESSIONS:
        import openvino

        while len(_SESSIONS) >= 4:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        # float32 as the other engines: the CPU plugin otherwise runs bfloat16 where the CPU has it
        # (AVX512_BF16, AMX), 2e-2 off in probabilities
        _SESSIONS[key] = openvino.Core().compile_model(str(onnx_file(network, key.split(":", 1)[1])), "CPU",
                                                       {"INFERENCE_PRECISION_HINT": "f32"})
    compiled = _SESSIONS[key]
    output = next(o for o in compiled.outputs if "probabilities" in o.get_names())
    return lambda tiles: compiled(np.ascontiguousarray(tiles, np.float32))[output]


def tensorflow_forward(network):
    return lambda tiles: np.asarray(network.predict_on_batch(tiles))


FORWARDS = {"tensorflow": tensorflow_forward, "onnxruntime": onnx_forward, "openvino": openvino_forward}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_key() -> str:
    """CPU model and thread count: what an engine's measurement holds for."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()} / {threads} threads"


def _choices_file() -> Path:
    return cache_root() / "engines.json"


def measured_choice(network, tile_shape) -> str | None:
    """The engine measured fastest before for this machine, network and tile batch shape, if any."""
    try:
        choices = json.loads(_choices_file().read_text())
    except (OSError, ValueError):
        return None
    return choices.get(f"{machine_key()} | {network_key(network)} | {tuple(tile_shape)}", {}).get("engine")


def measure(network, tile_shape, repeat: int = 3) -> dict:
    """Seconds per tile batch of every installed engine (best of ``repeat`` after a warm-up run),
    the fastest as ``engine``, recorded for :func:`measured_choice`."""
    tiles = np.random.default_rng(0).uniform(0, 1, tile_shape).astype(np.float32)
    seconds = {}
    for name in installed():
        forward = FORWARDS[name](network)
        forward(tiles)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            forward(tiles)
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
    result = {"engine": min(seconds, key=seconds.get), "seconds": seconds}
    try:
        choices = json.loads(_choices_file().read_text())
    except (OSError, ValueError):
        choices = {}
    choices[f"{machine_key()} | {network_key(network)} | {tuple(tile_shape)}"] = result
    with atomic_path(_choices_file()) as tmp:
        tmp.write_text(json.dumps(choices, indent=1))
    return result


def resolve(network, engine: str, tile_shape, n_batches: int) -> str:
    """The engine that runs ``n_batches`` tile batches of ``tile_shape``: ``engine`` itself unless
    ``auto``, which takes a measured choice, else measures where the job is long enough for a
    conversion to pay, else TensorFlow."""
    if check_engine(engine) != "auto":
        return engine
    if installed() == ["tensorflow"]:
        return "tensorflow"
    known = measured_choice(network, tile_shape)
    if known is not None:
        return known
    if tensorflow_seconds(network, tile_shape) * n_batches < CONVERSION_PAYS_AFTER:
        return "tensorflow"
    return measure(network, tile_shape)["engine"]


_TF_SECONDS = weakref.WeakKeyDictionary()  # network -> {tile shape: s per batch}, timed once per process


def tensorflow_seconds(network, tile_shape) -> float:
    """Seconds per tile batch in TensorFlow (after the call that builds the graph), timed once."""
    times = _TF_SECONDS.setdefault(network, {})
    if tuple(tile_shape) not in times:
        forward, tiles = tensorflow_forward(network), np.zeros(tile_shape, np.float32)
        forward(tiles)
        start = time.perf_counter()
        forward(tiles)
        times[tuple(tile_shape)] = time.perf_counter() - start
    return times[tuple(tile_shape)]


def forward_function(network, engine: str = "tensorflow"):
    """``tiles -> probabilities`` (numpy) through ``engine`` (``tensorflow`` or ``onnxruntime``)."""
    return FORWARDS[engine](network)
