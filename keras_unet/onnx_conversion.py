"""A model's graphs (:mod:`keras_unet.graphs`) converted to ONNX with tf2onnx (opset 17), in a
subprocess so the converter's graph rewriting stays out of the caller's process. Below both the
ONNX export (:mod:`keras_unet.export.onnx`) and the engines that run the converted network
(:mod:`keras_unet.engines`), so neither imports the other. Needs the ``[onnx]`` extra.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keras_unet.errors import ExportError
from keras_unet.subprocesses import child_env

OPSET = 17
FILES = {"serving_default": "{name}.onnx", "segment": "{name}_segment.onnx"}


def require_converter() -> None:
    """An :class:`ExportError` naming the extra to install where tf2onnx or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install 'unet-paper-keras[onnx]'")


def tf2onnx(saved_model: Path, signature: str, target: Path) -> None:
    """Convert one signature of a SavedModel with tf2onnx, in a subprocess."""
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
                           "--signature_def", signature, "--opset", str(OPSET), "--output", str(target)],
                          capture_output=True, text=True, env=child_env())
    if done.returncode != 0 or not Path(target).is_file():
        lines = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        raise ExportError(f"tf2onnx could not convert the {signature} signature: {lines[-1] if lines else 'no output'}")


def convert_signature(model, target, signature: str = "serving_default", tile: int | None = None) -> Path:
    """Write one signature of the model's SavedModel export as ONNX to ``target`` (the caller
    publishes it: :mod:`keras_unet.engines` renames it into its cache)."""
    from keras_unet.graphs import save_module

    require_converter()
    workdir = Path(tempfile.mkdtemp(prefix="keras-unet-onnx-"))
    try:
        save_module(model, workdir / "saved_model", tile, signatures=(signature,))
        tf2onnx(workdir / "saved_model", signature, Path(target))
        return Path(target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
