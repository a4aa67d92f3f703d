"""Which engine runs the network on tiles: TensorFlow (the Keras network in one graph), or ONNX Runtime
or OpenVINO on the same network converted once. Everything around the network (whole-image normalisation,
overlap-tile geometry, test-time augmentation, instances) stays in :mod:`keras_unet.tiling` and
:mod:`keras_unet.inference`; an engine only maps ``tiles (B, S, S, C) float32 -> probabilities``.

ONNX Runtime ran the paper network 1.25-1.30x faster than TensorFlow on a 2-vCPU AMD EPYC (Zen 3)
and is what Fiji, ilastik and most deployments of other frameworks' models already use. The
conversion is this project's own ONNX conversion (:mod:`keras_unet.onnx_conversion`, tf2onnx in a
subprocess) of the bare network, cached under a key of its architecture and weights, written
atomically, so a stale or half-written file is never used.

``auto`` picks, per machine (CPU model, threads), network and tile batch shape, the fastest of the
engines installed at the precisions this CPU computes natively (:mod:`keras_unet.precision`: float32,
and bfloat16 where it has AMX or AVX512_BF16), from a short measurement on first use that is cached;
it keeps TensorFlow where the job is too small to pay for a conversion (about 10-20 s), and float32
where it is too small to pay for a measurement, so it is never slower than TensorFlow float32 by
more than that measurement. Engine and precision are chosen together: :func:`resolve` returns both.
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

from keras_unet.converted import ConvertedNetwork, keras_of
from keras_unet.errors import SettingsError
from keras_unet.files import atomic_path, cache_root
from keras_unet.precision import bfloat16_flags, bfloat16_network, candidates, check_precision, cpuinfo

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
    if engine not in ("auto", "tensorflow") and engine not in installed():  # TensorFlow is always there
        extra = "onnx" if engine == "onnxruntime" else engine
        raise SettingsError(f"--engine {engine} needs {' and '.join(EXTRAS[engine])}: "
                            f"pip install 'unet-paper-keras[{extra}]'")
    return engine


_KEYS = weakref.WeakKeyDictionary()  # network -> (fingerprint, key): the key computed once per weights


def _fingerprint(network) -> bytes:
    """A cheap check that ``network``'s weights are those its key was computed for: the first and
    last two weight arrays (the first convolution, the output convolution: a few KB), which every
    training step and every load of weights changes."""
    weights = network.weights
    chosen = weights if len(weights) <= 4 else weights[:2] + weights[-2:]
    return hashlib.sha256(b"".join(np.ascontiguousarray(w.numpy()).tobytes() for w in chosen)).digest()


def network_key(network) -> str:
    """A hash of the network's architecture and weights: the name of its converted file.

    Kept per network object while its fingerprint holds: the whole hash (its config and every
    weight) took 20 ms, and an OpenVINO job asked for it on every image (2.4 s of 120 DSB2018
    images, a fifth of the job on an AMX CPU). A converted network's as recorded."""
    if isinstance(network, ConvertedNetwork):
        return network.key
    fingerprint = _fingerprint(network)
    known = _KEYS.get(network)
    if known is not None and known[0] == fingerprint:
        return known[1]
    digest = hashlib.sha256(json.dumps(network.get_config(), sort_keys=True, default=str).encode())
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    _KEYS[network] = (fingerprint, digest.hexdigest()[:32])
    return _KEYS[network][1]


def onnx_file(network, key: str | None = None) -> Path:
    """The network converted to ONNX (tiles of valid sizes in, probabilities out), converted on
    first use and cached under :func:`network_key` (``key`` if computed already)."""
    from keras_unet.onnx_conversion import convert_signature

    path = onnx_path(key or network_key(network))
    if not path.is_file():
        with atomic_path(path) as tmp:
            convert_signature(keras_of(network), tmp, "serving_default")
    return path


def onnx_path(key: str) -> Path:
    """Where the network of :func:`network_key` ``key`` is cached converted (there or not)."""
    return cache_root() / "onnx" / f"{key}.onnx"


def onnx_forward(network, precision: str = "float32"):
    """``tiles -> probabilities`` through ONNX Runtime (float32 only: its CPU provider has no
    bfloat16 convolutions). Sessions are kept by :func:`network_key`, not by the Keras object, so
    a network whose weights changed since never runs an old file."""
    if precision != "float32":
        raise SettingsError(ONNX_FLOAT32_ONLY)
    key = network_key(network)
    if key not in _SESSIONS:
        import onnxruntime

        while len(_SESSIONS) >= 4:  # a few networks at a time; each session holds its weights
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = onnxruntime.InferenceSession(str(onnx_file(network, key)), providers=["CPUExecutionProvider"])
    session = _SESSIONS[key]
    return lambda tiles: session.run(["probabilities"], {"image": np.ascontiguousarray(tiles, np.float32)})[0]


# OpenVINO's CPU plugin precision hint per precision: it would otherwise pick bfloat16 by itself
# where the CPU has it, so float32 is asked for explicitly.
OPENVINO_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def openvino_forward(network, precision: str = "float32"):
    """``tiles -> probabilities`` through OpenVINO's CPU plugin, on the same converted ONNX file
    (compiled models kept by :func:`network_key` and precision, as the ONNX Runtime sessions)."""
    network_hash = network_key(network)
    key = f"openvino:{precision}:{network_hash}"
    if key not in _SESSIONS:
        import openvino

        while len(_SESSIONS) >= 4:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        core = openvino.Core()
        # OpenVINO's own cache of compiled models (keyed by the file and the hint; a blob it cannot
        # read is compiled again): a fresh process loads one in 0.1 s where compiling took 0.6-0.9 s
        core.set_property({"CACHE_DIR": str(cache_root() / "openvino")})
        _SESSIONS[key] = core.compile_model(str(onnx_file(network, network_hash)), "CPU",
                                            {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]})
    compiled = _SESSIONS[key]
    output = next(o for o in compiled.outputs if "probabilities" in o.get_names())
    return lambda tiles: compiled(np.ascontiguousarray(tiles, np.float32))[output]


_TF_GRAPHS = weakref.WeakKeyDictionary()  # network -> its one graph for every tile shape


def tensorflow_forward(network, precision: str = "float32"):
    """``tiles -> probabilities`` through TensorFlow; bfloat16: the network's bfloat16 compute
    copy (:func:`keras_unet.precision.bfloat16_network`, softmax in float32).

    One graph of unknown batch and tile size per network, traced once: Keras' ``predict_on_batch``
    traces again for each new tile shape, and the 7 tile sizes of 120 DSB2018 images cost 0.6 s
    of a 4.6 s bfloat16 job in tracing (the same kernels run either way)."""
    import tensorflow as tf

    network = keras_of(network)
    if precision == "bfloat16":
        network = bfloat16_network(network)
    if network not in _TF_GRAPHS:
        held = weakref.ref(network)  # the graph holds the variables, not the network (a cache, not an owner)
        spec = tf.TensorSpec([None, None, None, network.input_shape[-1]], tf.float32)
        _TF_GRAPHS[network] = tf.function(lambda tiles: tf.cast(held()(tiles, training=False), tf.float32),
                                          input_signature=[spec])
    graph = _TF_GRAPHS[network]
    return lambda tiles: graph(tf.convert_to_tensor(np.asarray(tiles, np.float32))).numpy()


FORWARDS = {"tensorflow": tensorflow_forward, "onnxruntime": onnx_forward, "openvino": openvino_forward}
ONNX_FLOAT32_ONLY = ("--engine onnxruntime runs float32 only; for --precision bfloat16 use --engine openvino or "
                     "tensorflow (or --precision auto)")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    import platform

    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_generation() -> str:
    """The CPU's family and model numbers (``family 25 model 17``; /proc/cpuinfo), or ``""``.

    Clouds name very different CPUs alike ("AMD EPYC" is a Zen 3 with AVX2 and a Zen 4 with
    AVX512_BF16 here), so the name alone does not tell one generation from the next."""
    fields = cpuinfo()
    family, model = fields.get("cpu family"), fields.get("model")
    return f"family {family} model {model}" if family and model else ""


def describe_cpu() -> str:
    """The CPU as tables and caches name it: model name, generation and bfloat16 flags
    (``AMD EPYC, family 25 model 17, bf16: avx512_bf16``)."""
    return ", ".join(part for part in (cpu_model(), cpu_generation(), f"bf16: {bfloat16_flags()}") if part)


def machine_key() -> str:
    """The CPU (:func:`describe_cpu`) and thread count: what an engine's measurement holds for."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{describe_cpu()} / {threads} threads"


def _choices_file() -> Path:
    return cache_root() / "engines.json"


def backend_name(engine: str, precision: str) -> str:
    """``engine/precision``, how a measured option is named in the cache and the tables."""
    return f"{engine}/{precision}"


def _choice_key(network, tile_shape) -> str:
    return f"{machine_key()} | {network_key(network)} | {tuple(tile_shape)}"


def _read_choices() -> dict:
    try:
        choices = json.loads(_choices_file().read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _write_choices(choices: dict) -> None:
    with atomic_path(_choices_file()) as tmp:
        tmp.write_text(json.dumps(choices, indent=1))


def measured_seconds(network, tile_shape) -> dict:
    """Seconds per tile batch measured before on this machine for this network and tile batch
    shape, by ``engine/precision`` (an entry of an older cache, by engine alone, is float32)."""
    seconds = _read_choices().get(_choice_key(network, tile_shape), {}).get("seconds", {})
    return {(name if "/" in name else backend_name(name, "float32")): value for name, value in seconds.items()}


def measured_choice(network, tile_shape) -> str | None:
    """The engine measured fastest before for this machine, network and tile batch shape, if any."""
    seconds = measured_seconds(network, tile_shape)
    return min(seconds, key=seconds.get).split("/")[0] if seconds else None


def options(engine: str, precision: str) -> list[tuple[str, str]]:
    """The ``(engine, precision)`` pairs that ``engine`` and ``precision`` (each may be ``auto``)
    allow here: installed engines, bfloat16 only on a CPU that has it natively
    (:func:`keras_unet.precision.candidates`) and not on ONNX Runtime."""
    check_engine(engine)
    if engine == "onnxruntime" and precision == "bfloat16":
        raise SettingsError(ONNX_FLOAT32_ONLY)
    names = installed() if engine == "auto" else [engine]
    return [(name, p) for name in names for p in candidates(precision) if not (name == "onnxruntime" and p != "float32")]


def measure(network, tile_shape, repeat: int = 3, pairs=None) -> dict:
    """Seconds per tile batch of every ``(engine, precision)`` in ``pairs`` (default: every
    installed engine at every precision this CPU has), best of ``repeat`` after a warm-up run,
    recorded for later choices with what was measured before; the fastest as ``engine`` and
    ``precision``."""
    pairs = options("auto", "auto") if pairs is None else pairs
    tiles = np.random.default_rng(0).uniform(0, 1, tile_shape).astype(np.float32)
    seconds = {}
    for name, precision in pairs:
        forward = FORWARDS[name](network, precision)
        forward(tiles)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            forward(tiles)
            times.append(time.perf_counter() - start)
        seconds[backend_name(name, precision)] = min(times)
    choices = _read_choices()
    key = _choice_key(network, tile_shape)
    everything = {**measured_seconds(network, tile_shape), **seconds}
    best = min(seconds, key=seconds.get)
    choices[key] = {**choices.get(key, {}), "engine": min(everything, key=everything.get).split("/")[0],
                    "seconds": everything}
    _write_choices(choices)
    engine, precision = best.split("/")
    return {"engine": engine, "precision": precision, "seconds": seconds}


# auto measures TensorFlow in float32 against bfloat16 (no conversion, a few passes) only for jobs
# whose float32 time is estimated above this (s); shorter ones stay float32.
BFLOAT16_PAYS_AFTER = 2.0


def resolve(network, engine: str, tile_shape, n_batches: int, precision: str = "float32") -> tuple[str, str]:
    """``(engine, precision)`` that run ``n_batches`` tile batches of ``tile_shape``: as given
    unless ``auto``. ``auto`` takes the fastest measured before on this machine, else measures
    where the job is long enough to pay for it: a conversion (ONNX Runtime, OpenVINO) only after
    :data:`CONVERSION_PAYS_AFTER` s of TensorFlow time (or where the network was converted before),
    a measurement after :data:`BFLOAT16_PAYS_AFTER` s; a shorter job stays in float32
    (:func:`short_job_engine` for ``auto``, else the engine given)."""
    check_precision(precision)
    pairs = options(engine, precision)
    if len(pairs) == 1:
        return pairs[0]
    known = measured_seconds(network, tile_shape)
    if not all(backend_name(*pair) in known for pair in pairs):
        # the job's length in TensorFlow float32 time; else in the slowest engine measured (within
        # about 2x of it, enough for these thresholds), so a converted network's job needs no TensorFlow
        per_batch = known.get("tensorflow/float32") or max(known.values(), default=0.0)
        seconds = (per_batch or reference_seconds(network, tile_shape, pairs)) * n_batches
        if engine == "auto" and seconds < CONVERSION_PAYS_AFTER and not converted(network):
            pairs = [pair for pair in pairs if pair[0] == "tensorflow"]  # TensorFlow only: nothing to convert
        if seconds < BFLOAT16_PAYS_AFTER:  # too short to measure (an engine given too): what is known, else float32
            fallback = (short_job_engine(network) if engine == "auto" else engine, "float32")
            pairs = [pair for pair in pairs if backend_name(*pair) in known] or [fallback]
        if len(pairs) == 1:  # nothing left to choose between
            return pairs[0]
    todo = [pair for pair in pairs if backend_name(*pair) not in known]
    if todo:
        measure(network, tile_shape, pairs=todo)
        known = measured_seconds(network, tile_shape)
    return min(pairs, key=lambda pair: known[backend_name(*pair)])


def short_job_engine(network) -> str:
    """What ``auto`` runs a job too short to measure on: TensorFlow, or for a network loaded
    converted (:mod:`keras_unet.converted`) OpenVINO, else ONNX Runtime: importing TensorFlow
    would cost such a job more (3-4 s) than any engine's difference."""
    if isinstance(network, ConvertedNetwork):
        return next((name for name in ("openvino", "onnxruntime") if name in installed()), "tensorflow")
    return "tensorflow"


def converted(network) -> bool:
    """True where the network's ONNX file is in the cache already (a conversion costs nothing more)."""
    return onnx_path(network_key(network)).is_file()


_SECONDS = weakref.WeakKeyDictionary()  # network -> {(engine, tile shape): s per batch}, timed once per process


def reference_seconds(network, tile_shape, pairs=()) -> float:
    """Seconds per tile batch that size a job, timed once (after the call that builds the graph):
    TensorFlow float32; a converted network's (:mod:`keras_unet.converted`) by the first converted
    engine of ``pairs`` in float32, so that its job loads no TensorFlow to size itself.

    Kept in the engine cache beside the measurements (as ``reference``, one run: not one of the
    best-of-3 measurements an engine is chosen by), so that later jobs of this network and tile
    batch do not time it again: on a CPU where auto has nothing to choose for a short job, that
    timing was the only thing auto did that float32 does not (one more tile batch per job)."""
    engine = "tensorflow"
    if isinstance(network, ConvertedNetwork):
        engine = next((name for name, _ in pairs if name != "tensorflow"), engine)
    name, times = backend_name(engine, "float32"), _SECONDS.setdefault(network, {})
    if (engine, tuple(tile_shape)) not in times:
        choices = _read_choices()
        entry = choices.setdefault(_choice_key(network, tile_shape), {})
        kept = entry.get("reference", {}).get(name)
        if not isinstance(kept, (int, float)) or kept <= 0:
            forward, tiles = FORWARDS[engine](network, "float32"), np.zeros(tile_shape, np.float32)
            forward(tiles)
            start = time.perf_counter()
            forward(tiles)
            kept = time.perf_counter() - start
            entry["reference"] = {**entry.get("reference", {}), name: kept}
            _write_choices(choices)
        times[engine, tuple(tile_shape)] = float(kept)
    return times[engine, tuple(tile_shape)]


def forward_function(network, engine: str = "tensorflow", precision: str = "float32"):
    """``tiles -> probabilities`` (numpy float32) through ``engine`` at ``precision`` (resolved:
    neither ``auto``; :func:`resolve`)."""
    return FORWARDS[engine](network, precision)
