"""SavedModel export for TF Serving: ``OUT/<name>/<version>/``, the graphs of
:mod:`keras_unet.graphs` (``serving_default``, ``segment``, ``instances``; their contract is
described there) with TF Serving's warm-up requests, written atomically, versioned as TF Serving
expects. It loads with plain TensorFlow, no keras_unet code.
"""
from __future__ import annotations

import errno
from pathlib import Path

from keras_unet.errors import ExportError
from keras_unet.files import atomic_directory
from keras_unet.graphs import SIGNATURES, WARMUP_FILE, default_export_tile, save_module  # noqa: F401 (the export's names)


def next_version(model_dir: Path) -> int:
    """1 + the largest numeric version folder in ``model_dir`` (1 if none)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_savedmodel(model, out_dir, name: str = "unet", version: int | None = None, tile: int | None = None,
                      min_size: int = 0, threshold: float | None = None) -> Path:
    """Write ``out_dir/name/version/`` atomically (a temporary folder renamed at the end)."""
    model_dir = Path(out_dir) / name
    made = [p for p in (model_dir, *model_dir.parents) if not p.exists()]  # removed again if nothing is written
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(f"{final}: version {version} exists already; leave out --version for the next free one "
                          f"({next_version(model_dir)})")
    import tensorflow as tf

    try:
        with atomic_directory(final) as staging:
            try:
                save_module(model, staging, tile, model_name=name, min_size=min_size, threshold=threshold)
            except tf.errors.OpError as err:  # TF's own file writes: a full disk is ResourceExhaustedError
                raise _os_error(err) from None
    except BaseException:
        for folder in made:  # innermost first; a folder something else wrote into is kept
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return final


def _os_error(err) -> OSError:
    """A TensorFlow file-writing error as the OSError it wraps (ENOSPC for a full disk), so it is
    reported as one line naming the export's folder (:func:`keras_unet.files.atomic_directory`)."""
    message = err.message.rsplit(";", 1)[-1].strip() or err.message
    code = errno.ENOSPC if "No space left" in message else errno.EIO
    return OSError(code, message)
