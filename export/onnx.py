"""ONNX export for ONNX Runtime (any language): ``OUT/<name>.onnx`` takes tiles like the
SavedModel's ``serving_default`` (``image`` ``(batch, H, W, C)`` float32 raw pixels, H and W valid
tile sizes) and ``OUT/<name>_segment.onnx`` whole images of any size like its ``segment``
signature (the in-graph tiling becomes an ONNX Loop). Both return ``probabilities`` and ``labels``.

Converted from the SavedModel this project exports (:mod:`keras_unet.onnx_conversion`: tf2onnx,
opset 17, in a subprocess). Needs the ``[onnx]`` extra.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from keras_unet.files import atomic_path
from keras_unet.graphs import save_module
from keras_unet.onnx_conversion import FILES, OPSET, convert_signature, require_converter, tf2onnx  # noqa: F401


def export_onnx(model, out_dir, name: str = "unet", tile: int | None = None) -> list[Path]:
    """Write both ONNX files (see the module docstring); returns their paths, tiles first."""
    require_converter()
    out_dir = Path(out_dir)
    workdir = Path(tempfile.mkdtemp(prefix="keras-unet-onnx-"))
    try:
        save_module(model, workdir / "saved_model", tile)
        converted = {}
        for signature in FILES:
            converted[signature] = workdir / f"{signature}.onnx"
            tf2onnx(workdir / "saved_model", signature, converted[signature])
        written = []
        for signature, pattern in FILES.items():  # publish only when both converted
            final = out_dir / pattern.format(name=name)
            with atomic_path(final) as tmp:
                shutil.copyfile(converted[signature], tmp)
            written.append(final)
        return written
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
