"""Exporters (installed as ``keras_unet.export``): they only read a trained model.

:data:`FORMATS` is the one registry of export formats: each :class:`Format` says how it is
written (a module of this package), what it needs installed, and what :func:`verify` compares
in a fresh Python process that never imports keras_unet. A new format is one module plus one
line there; ``keras-unet export`` only parses and prints.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from keras_unet.errors import DataError, ExportError
from keras_unet.inference import load_model, resolve_model_path
from keras_unet.postprocess import PostProcessing

# Largest tolerated max |export - keras| on probabilities, per format (TFLite: per quantisation).
TOLERANCE = {"savedmodel": 1e-5, "onnx": 1e-4, "none": 1e-4, "float16": 1e-2, "dynamic": 0.1}


@dataclass(frozen=True)
class Settings:
    """What an export is asked for: the model's ``name`` (TF Serving folder, file names), the TF
    Serving ``version`` (None: the next free number), the ``tile`` of fixed-size inputs, TFLite's
    ``quantize``, the objects' ``postprocessing`` (the SavedModel's ``instances`` signature) and
    bioimage.io's ``sample`` image, ``authors`` and ``license``."""

    name: str = "unet"
    version: int | None = None
    tile: int | None = None
    quantize: str = "none"
    postprocessing: PostProcessing = PostProcessing()
    sample: np.ndarray | None = None
    authors: list | None = None
    license: str = "CC-BY-4.0"


@dataclass(frozen=True)
class Format:
    """One export format: ``write(model, out_dir, settings)`` makes its file(s); ``require()``
    names a missing extra before any work; ``targets(path)`` gives the ``(check, file,
    signature)`` that :func:`verify` runs in a fresh process; ``check(path)`` is a format's own
    verification where it has one (a line of its result); ``objects``: it makes objects in TF ops
    (what it cannot do of the post-processing is warned about)."""

    write: Callable
    targets: Callable = field(default=lambda path: [])
    require: Callable = field(default=lambda: None)
    check: Callable | None = None
    objects: bool = False


def _require_onnx() -> None:
    from keras_unet.onnx_conversion import require_converter

    require_converter()


def _require_bioimageio() -> None:
    from keras_unet.export.bioimageio import require_spec

    require_spec()


def _test_bioimageio(path) -> str:
    from keras_unet.export.bioimageio import test_package

    return f"bioimageio.core test_model in a fresh process: {test_package(path)}"


FORMATS = {
    "savedmodel": Format(write=lambda model, out, s: export_savedmodel(model, out, s.name, s.version, s.tile,
                                                                         postprocessing=s.postprocessing),
                         targets=lambda path: [("serving_default", path, "serving_default"),
                                               ("segment", path, "segment"), ("instances", path, "instances")],
                         objects=True),
    "tflite": Format(write=lambda model, out, s: export_tflite(model, out, s.name, s.quantize, s.tile),
                     targets=lambda path: [("tflite", path, "serving_default")]),
    "onnx": Format(write=lambda model, out, s: export_onnx(model, out, s.name, s.tile), require=_require_onnx,
                   targets=lambda paths: [("onnx tiles", paths[0], "serving_default"),
                                          ("onnx segment", paths[1], "segment")]),
    "bioimageio": Format(write=lambda model, out, s: export_bioimageio(model, out, s.name, s.tile, s.sample,
                                                                       s.authors, s.license),
                         require=_require_bioimageio, check=_test_bioimageio),
}


def export(model, fmt: str, out_dir, settings: Settings = Settings()):
    """Write ``model`` (a loaded model, a path or a shipped name) in the format ``fmt`` of
    :data:`FORMATS` into ``out_dir``; returns the path(s) written."""
    return FORMATS[fmt].write(_loaded(model), out_dir, settings)


def resolve_model(path) -> Path:
    """The ``.keras`` file of a run folder or model path (clear error if missing)."""
    return resolve_model_path(path)


def _loaded(model):
    return load_model(model) if isinstance(model, (str, Path)) else model


def export_savedmodel(model, out_dir, name: str = "unet", version: int | None = None, tile: int | None = None,
                      postprocessing: PostProcessing = PostProcessing()) -> Path:
    """Write ``out_dir/name/version/`` (see :mod:`keras_unet.export.savedmodel`); the ``instances``
    signature makes objects with ``postprocessing``'s minimum size and threshold (argmax without
    one); what it cannot do (a split) is :meth:`PostProcessing.in_tf_ops`."""
    from keras_unet.export import savedmodel

    return savedmodel.export_savedmodel(_loaded(model), out_dir, name, version, tile,
                                        min_size=postprocessing.min_size, threshold=postprocessing.threshold)


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


# Runs in a fresh interpreter: plain TensorFlow / ai-edge-litert / onnxruntime only, never
# keras_unet. One process runs every check of an export (each start costs a TensorFlow import).
_RUNNER = r"""
import json, sys
import numpy as np
jobs = json.loads(sys.argv[1])
loaded = {}

def run(fmt, path, signature, image):
    if fmt == "savedmodel":
        import tensorflow as tf
        if path not in loaded:
            loaded[path] = tf.saved_model.load(path)
        outputs = loaded[path].signatures[signature](image=tf.constant(image))
        key = "instances" if signature == "instances" else "probabilities"
        return outputs[key].numpy()
    if fmt == "onnx":
        import onnxruntime
        return onnxruntime.InferenceSession(path).run(["probabilities"], {"image": image})[0]
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    if list(detail["shape"]) != list(image.shape):
        interpreter.resize_tensor_input(detail["index"], image.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], image)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

for fmt, path, signature, inp, out in jobs:
    np.save(out, run(fmt, path, signature, np.load(inp)))
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("keras_unet"))}))
"""


def run_in_fresh_process(jobs: list) -> list[np.ndarray]:
    """Outputs of exported models in one new interpreter that never imports keras_unet.

    ``jobs``: ``(fmt, path, signature, image)`` tuples; the output is the ``instances`` of that
    signature, else the ``probabilities``.
    """
    from keras_unet.subprocesses import child_env

    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for i, (fmt, path, signature, image) in enumerate(jobs):
            inp, out = Path(tmp) / f"in{i}.npy", Path(tmp) / f"out{i}.npy"
            np.save(inp, image.astype(np.float32))
            specs.append((fmt, str(path), signature, str(inp), str(out)))
        done = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(specs)], capture_output=True, text=True,
                              env=child_env())
        path = jobs[0][1] if len(jobs) else ""
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
            raise DataError(f"{path}: the export does not load in a fresh process ({tail})")
        if json.loads(done.stdout.strip().splitlines()[-1])["modules"]:
            raise DataError(f"{path}: loading the export imported keras_unet")
        return [np.load(spec[4]) for spec in specs]


# Odd on both axes and not a tile size: exercises mirrored edges and stitching of ``segment``.
ODD_SHAPE = (203, 317)


def verify(model, export_path, fmt: str, quantize: str = "none", tile: int | None = None,
           postprocessing: PostProcessing = PostProcessing()) -> dict:
    """Compare an export with the Keras model in a fresh process; raise beyond the tolerance.

    Every signature is checked on a real-looking image: ``serving_default`` (and TFLite) on one
    tile of the export's size, ``segment`` on an odd-sized whole image against overlap-tile
    prediction, ``instances`` on the same image against :meth:`PostProcessing.objects` with
    ``postprocessing``'s minimum size and threshold, no split (object labels must be equal pixel for pixel). Returns ``{check: (max |dp|,
    label flips)}`` (for ``instances``: pixels whose label differs, twice) and the tolerance under
    ``"tolerance"``.
    """
    from dataclasses import replace

    from keras_unet import synthetic, tiling
    from keras_unet.graphs import default_export_tile
    from keras_unet.model import unet_config

    keras_model = _loaded(model)
    config = unet_config(keras_model)
    size = _input_size(export_path, fmt) or tile or default_export_tile(keras_model)
    tolerance = TOLERANCE[fmt if fmt in TOLERANCE else quantize]
    tile_image = synthetic.model_image((size, size), config)[None]
    odd = synthetic.model_image(ODD_SHAPE, config, seed=1)
    # (check name, file, signature, input): a tile for serving_default, an odd-sized image otherwise
    targets = [(name, path, signature, tile_image if signature == "serving_default" else odd)
               for name, path, signature in FORMATS[fmt].targets(export_path)]
    outputs = run_in_fresh_process([(fmt, path, signature, image) for _, path, signature, image in targets])
    whole = tiling.predict_tiled(keras_model, odd, tile=size) if len(targets) > 1 else None
    report = {"tolerance": tolerance}
    for (name, _, signature, image), got in zip(targets, outputs):
        shape = f"{size}x{size}" if signature == "serving_default" else f"{ODD_SHAPE[0]}x{ODD_SHAPE[1]}"
        if signature == "instances":
            expected = replace(postprocessing, split="none").objects(whole)
            differ = int(np.sum(got != expected))
            report[f"{name} {shape}"] = (float(differ), differ)
            if differ:
                raise ExportError(f"{export_path}: {name} gives other objects than keras-unet predict "
                                  f"({differ} pixels differ)")
            continue
        expected = np.asarray(keras_model.predict_on_batch(image)) if signature == "serving_default" else whole
        diff = float(np.max(np.abs(got - expected)))
        flips = int(np.sum(got.argmax(-1) != expected.argmax(-1)))
        report[f"{name} {shape}"] = (diff, flips)
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
