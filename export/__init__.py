"""Exporters (installed as ``keras_unet.export``): they only read a trained model.

:func:`export_savedmodel` writes a TF Serving model folder, :func:`export_tflite` a ``.tflite``
file, and :func:`verify` reloads either in a fresh Python process that never imports keras_unet
and compares its output with the Keras model's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from keras_unet.errors import DataError, ExportError
from keras_unet.inference import load_model, resolve_model_path

# Largest tolerated max |export - keras| on probabilities, per format.
TOLERANCE = {"savedmodel": 1e-5, "onnx": 1e-4, "none": 1e-4, "float16": 1e-2, "dynamic": 0.1}


def resolve_model(path) -> Path:
    """The ``.keras`` file of a run folder or model path (clear error if missing)."""
    return resolve_model_path(path)


def _loaded(model):
    return load_model(model) if isinstance(model, (str, Path)) else model


def export_savedmodel(model, out_dir, name: str = "unet", version: int | None = None, tile: int | None = None,
                      min_size: int = 0) -> Path:
    """Write ``out_dir/name/version/`` (see :mod:`keras_unet.export.savedmodel`); ``min_size``: the
    ``instances`` signature drops smaller objects."""
    from keras_unet.export import savedmodel

    return savedmodel.export_savedmodel(_loaded(model), out_dir, name, version, tile, min_size=min_size)


def export_onnx(model, out_dir, name: str = "unet", tile: int | None = None) -> list[Path]:
    """Write ``out_dir/name.onnx`` (tiles) and ``out_dir/name_segment.onnx`` (any size); see
    :mod:`keras_unet.export.onnx`."""
    from keras_unet.export import onnx

    return onnx.export_onnx(_loaded(model), out_dir, name, tile)


def export_bioimageio(model, out_dir, name: str = "unet", tile: int | None = None, sample=None, authors=None,
                      license: str = "CC-BY-4.0") -> Path:
    """Write ``out_dir/name.bioimageio.zip``; see :mod:`keras_unet.export.bioimageio`."""
    from keras_unet.export import bioimageio

    return bioimageio.export_bioimageio(_loaded(model), out_dir, name, tile, sample, authors, license)


def export_tflite(model, out_dir, name: str = "unet", quantize: str = "none", tile: int | None = None) -> Path:
    """Write ``out_dir/name[_quant].tflite`` (see :mod:`keras_unet.export.tflite`)."""
    from keras_unet.export import tflite

    return tflite.export_tflite(_loaded(model), out_dir, name, quantize, tile)


# Runs in a fresh interpreter: plain TensorFlow / ai-edge-litert only, never keras_unet.
_RUNNER = r"""
import json, sys
import numpy as np
fmt, path, signature, inp, out = sys.argv[1:6]
image = np.load(inp)
if fmt == "savedmodel":
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    result = loaded.signatures[signature](image=tf.constant(image))["probabilities"].numpy()
elif fmt == "onnx":
    import onnxruntime
    result = onnxruntime.InferenceSession(path).run(["probabilities"], {"image": image})[0]
else:
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    if list(detail["shape"]) != list(image.shape):
        interpreter.resize_tensor_input(detail["index"], image.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], image)
    interpreter.invoke()
    result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
np.save(out, result)
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("keras_unet"))}))
"""


def run_in_fresh_process(fmt: str, path, image: np.ndarray, signature: str = "serving_default") -> np.ndarray:
    """Probabilities of an exported model's ``signature`` on ``image``, in a new interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(inp, image.astype(np.float32))
        done = subprocess.run([sys.executable, "-c", _RUNNER, fmt, str(path), signature, str(inp), str(out)],
                              capture_output=True, text=True, env=_clean_env())
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
            raise DataError(f"{path}: the export does not load in a fresh process ({tail})")
        if json.loads(done.stdout.strip().splitlines()[-1])["modules"]:
            raise DataError(f"{path}: loading the export imported keras_unet")
        return np.load(out)


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# Odd on both axes and not a tile size: exercises mirrored edges and stitching of ``segment``.
ODD_SHAPE = (203, 317)


def verify(model, export_path, fmt: str, quantize: str = "none", tile: int | None = None) -> dict:
    """Compare an export with the Keras model in a fresh process; raise beyond the tolerance.

    Every signature is checked on a real-looking image: ``serving_default`` (and TFLite) on one
    tile of the export's size, ``segment`` on an odd-sized whole image against overlap-tile
    prediction. Returns ``{check: (max |dp|, label flips)}`` and the tolerance under ``"tolerance"``.
    """
    from keras_unet import synthetic, tiling
    from keras_unet.export.savedmodel import default_export_tile
    from keras_unet.model import unet_config

    keras_model = _loaded(model)
    config = unet_config(keras_model)
    size = _input_size(export_path, fmt) or tile or default_export_tile(keras_model)
    tolerance = TOLERANCE[fmt if fmt in ("savedmodel", "onnx") else quantize]
    tile_image = synthetic.model_image((size, size), config)[None]
    odd = synthetic.model_image(ODD_SHAPE, config, seed=1)
    inputs = {"tile": (tile_image, "serving_default"), "whole": (odd, "segment")}
    # (check name, file, which input): what each format's files take
    if fmt == "savedmodel":
        targets = [("serving_default", export_path, "tile"), ("segment", export_path, "whole")]
    elif fmt == "onnx":  # export_path: the tile file and the any-size file
        targets = [("onnx tiles", export_path[0], "tile"), ("onnx segment", export_path[1], "whole")]
    else:
        targets = [("tflite", export_path, "tile")]
    expected = {"tile": lambda: np.asarray(keras_model.predict_on_batch(tile_image)),
                "whole": lambda: tiling.predict_tiled(keras_model, odd, tile=size)}
    checks = {}
    for name, path, kind in targets:
        image, signature = inputs[kind]
        shape = f"{size}x{size}" if kind == "tile" else f"{ODD_SHAPE[0]}x{ODD_SHAPE[1]}"
        checks[f"{name} {shape}"] = (run_in_fresh_process(fmt, path, image, signature), expected[kind]())
    report = {"tolerance": tolerance}
    for name, (got, expected) in checks.items():
        diff = float(np.max(np.abs(got - expected)))
        flips = int(np.sum(got.argmax(-1) != expected.argmax(-1)))
        report[name] = (diff, flips)
        if not diff <= tolerance:
            raise ExportError(f"{export_path}: {name} differs from the Keras model by {diff:.3g} (> {tolerance:g})")
    return report


def _input_size(export_path, fmt: str) -> int | None:
    """The fixed input size of a TFLite file, or None when resizable."""
    if fmt != "tflite":
        return None
    from ai_edge_litert.interpreter import Interpreter

    shape = Interpreter(model_path=str(export_path)).get_input_details()[0]["shape_signature"]
    return int(shape[1]) if shape[1] > 0 else None
