"""Numeric precision of the network: float32, or bfloat16 where the CPU computes it natively.

On a CPU with AMX or AVX512_BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) oneDNN runs
convolutions in bfloat16 several times faster than in float32 (TensorFlow 3-6x, OpenVINO 4-5x on
the paper network, 2x for training steps; benchmarks/results/engines.md) with the same objects;
on a CPU without it bfloat16 is emulated and slower (0.5x measured on an AMD Zen 3). So ``auto``
is bfloat16 only where the CPU has it natively *and* it measured faster, and float32 everywhere
else, which then gives float32's results exactly.

What stays float32 in every precision: the weights (the models saved are float32), the input
normalisation (16-bit raw values do not fit bfloat16's 8-bit mantissa), the softmax (its
probabilities) and, in training, the loss and the weight map (:mod:`keras_unet.losses`).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

from keras_unet.errors import SettingsError

PRECISIONS = ("auto", "float32", "bfloat16")
# Training also knows float16 (mixed_float16 on a GPU; the old --mixed-precision there).
TRAINING_PRECISIONS = PRECISIONS + ("float16",)
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# Layers kept in float32 in a reduced-precision copy: the raw-range normalisation and the softmax.
FLOAT32_LAYERS = ("normalize", "probabilities")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


CPUINFO = "/proc/cpuinfo"


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of :data:`CPUINFO` (``model name``, ``cpu family``, ``flags``,
    ...; empty where there is none): the one reader of it (engines names the CPU from it too)."""
    fields = {}
    try:
        with open(CPUINFO) as fh:
            for line in fh:
                if not line.strip():  # the end of the first processor's block
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    return set(cpuinfo().get("flags", "").split())


def native_bfloat16() -> bool:
    """True where the CPU computes bfloat16 natively (AMX or AVX512_BF16)."""
    return bool(set(BF16_FLAGS) & cpu_flags())


def bfloat16_flags() -> str:
    """The CPU's bfloat16 flags for tables and messages (``amx_bf16 avx512_bf16``, or ``none``)."""
    found = [flag for flag in BF16_FLAGS if flag in cpu_flags()]
    return " ".join(found) or "none"


def check_precision(precision: str, choices=PRECISIONS) -> str:
    """``precision`` if it is one of ``choices``, else a :class:`SettingsError` naming them."""
    if precision not in choices:
        raise SettingsError(f"--precision must be one of {', '.join(choices)}, got {precision!r}")
    return precision


def candidates(precision: str) -> tuple[str, ...]:
    """The precisions ``precision`` may run as here: ``auto`` is float32, plus bfloat16 where the
    CPU has it natively (measured against float32 before it is used)."""
    check_precision(precision)
    if precision != "auto":
        return (precision,)
    return ("float32", "bfloat16") if native_bfloat16() else ("float32",)


def with_policy(network, policy: str):
    """A copy of ``network`` computing under the Keras dtype ``policy`` (``float32``,
    ``mixed_bfloat16``, ``mixed_float16``), with the same float32 weights; :data:`FLOAT32_LAYERS`
    stay float32. ``network`` itself where every layer already has that policy."""
    import keras

    def policy_of(layer) -> str:
        return "float32" if layer.name in FLOAT32_LAYERS else policy

    inner = [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]
    if all(layer.dtype_policy.name == policy_of(layer) for layer in inner):
        return network

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = policy_of(layer)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=clone)
    copy.set_weights(network.get_weights())
    return copy


_BFLOAT16 = weakref.WeakKeyDictionary()  # network -> its bfloat16 compute copy, made once


def bfloat16_network(network):
    """``network`` computing in bfloat16 (softmax and normalisation in float32), made once per
    network object: what TensorFlow runs for ``precision="bfloat16"``."""
    if network not in _BFLOAT16:
        _BFLOAT16[network] = with_policy(network, POLICIES["bfloat16"])
    return _BFLOAT16[network]


def training_policy(precision: str, gpu: bool) -> str:
    """The Keras global policy a run trains under: ``float16`` is for GPUs (bfloat16 on a CPU)."""
    check_precision(precision, TRAINING_PRECISIONS[1:])
    if precision == "float16" and not gpu:
        precision = "bfloat16"
    return POLICIES[precision]


@contextmanager
def global_policy(policy: str):
    """Keras' global dtype policy set to ``policy`` inside the block, restored after it (layers
    made there, e.g. the inference model a run saves while it trains in bfloat16, get ``policy``)."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)
