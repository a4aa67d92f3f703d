"""ONNX export for ONNX Runtime (any language): ``OUT/<name>.onnx`` takes tiles like the
SavedModel's ``serving_default`` (``image`` ``(batch, H, W, C)`` float32 raw pixels, H and W valid
tile sizes) and ``OUT/<name>_segment.onnx`` whole images of any size like its ``segment``
signature (the in-graph tiling becomes an ONNX Loop). Both return ``probabilities`` and ``labels``.

Converted from the SavedModel this project exports, with tf2onnx (opset 17), in a subprocess: the
converter's graph rewriting stays out of the caller's process. Needs the ``[onnx]`` extra.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keras_unet.errors import ExportError
from keras_unet.files import atomic_path
from keras_unet.subprocesses import child_env

OPSET = 17
FILES = {"serving_default": "{name}.onnx", "segment": "{name}_segment.onnx"}


def require_converter() -> None:
    """An :class:`ExportError` naming the extra to install where tf2onnx or onnxruntime is missing."""
    import importlib.util

    missing = [m for m in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install 'unet-paper-keras[onnx]'")


def _tf2onnx(saved_model: Path, signature: str, target: Path) -> None:
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
    from keras_unet.export.savedmodel import save_module

    require_converter()
    workdir = Path(tempfile.mkdtemp(prefix="keras-unet-onnx-"))
    try:
        save_module(model, workdir / "saved_model", tile, signatures=(signature,))
        _tf2onnx(workdir / "saved_model", signature, Path(target))
        return Path(target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export_onnx(model, out_dir, name: str = "unet", tile: int | None = None) -> list[Path]:
    """Write both ONNX files (see the module docstring); returns their paths, tiles first."""
    from keras_unet.export.savedmodel import save_module

    require_converter()
    out_dir = Path(out_dir)
    workdir = Path(tempfile.mkdtemp(prefix="keras-unet-onnx-"))
    try:
        save_module(model, workdir / "saved_model", tile)
        converted = {}
        for signature in FILES:
            converted[signature] = workdir / f"{signature}.onnx"
            _tf2onnx(workdir / "saved_model", signature, converted[signature])
        written = []
        for signature, pattern in FILES.items():  # publish only when both converted
            final = out_dir / pattern.format(name=name)
            with atomic_path(final) as tmp:
                shutil.copyfile(converted[signature], tmp)
            written.append(final)
        return written
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
