"""TFLite export: float32, float16 or dynamic-range quantized; fixed or resizable input.

Converted from a SavedModel of the ``serving_default`` signature (converting from concrete
functions yields a model without weights that outputs NaN). Run the file with ai-edge-litert:

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path="unet.tflite")
    runner = interpreter.get_signature_runner("serving_default")
    probabilities = runner(image=tile)["probabilities"]   # tile: (1, S, S, C) float32 raw pixels
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from keras_unet.files import atomic_path
from keras_unet.errors import ExportError
from keras_unet.model import unet_config
from keras_unet.model import exported_forward

QUANTIZE = ("none", "float16", "dynamic")


def convert(model, quantize: str = "none", tile: int | None = None) -> bytes:
    """The ``.tflite`` bytes of ``model`` (input fixed to ``tile`` px if given, else resizable)."""
    if quantize not in QUANTIZE:
        raise ExportError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    shape = [1, tile, tile] if tile else [None, None, None]
    spec = tf.TensorSpec(shape + [unet_config(model)["in_channels"]], tf.float32, name="image")
    workdir = Path(tempfile.mkdtemp(prefix="keras-unet-tflite-"))
    try:
        # Keras's ExportArchive lists the variables so that the converter freezes them into the
        # file; a plain tf.Module of the model converts to a weightless model that outputs NaN.
        archive = keras.export.ExportArchive()
        archive.track(model)
        forward = exported_forward(model)  # the normalisation in float32 TF ops TFLite has kernels for
        archive.add_endpoint("serving_default", lambda image: {"probabilities": forward(image)}, [spec])
        archive.write_out(str(workdir / "sm"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir / "sm"), signature_keys=["serving_default"])
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export_tflite(model, out_dir, name: str = "unet", quantize: str = "none", tile: int | None = None) -> Path:
    """Write ``out_dir/<name>[_float16|_dynamic].tflite`` atomically."""
    suffix = "" if quantize == "none" else f"_{quantize}"
    final = Path(out_dir) / f"{name}{suffix}.tflite"
    content = convert(model, quantize, tile)  # before anything is written: a failed conversion leaves nothing
    with atomic_path(final) as tmp:
        tmp.write_bytes(content)
    return final
