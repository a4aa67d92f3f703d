"""SavedModel export for TF Serving: ``OUT/<name>/<version>/``, the graphs of
:mod:`keras_unet.graphs` (``serving_default``, ``segment``, ``instances``; their contract is
described there) with TF Serving's warm-up requests, written atomically, versioned as TF Serving
expects. It loads with plain TensorFlow, no keras_unet code.
"""
from __future__ import annotations

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
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(f"{final}: version {version} exists already; leave out --version for the next free one "
                          f"({next_version(model_dir)})")
    with atomic_directory(final) as staging:
        save_module(model, staging, tile, model_name=name, min_size=min_size, threshold=threshold)
    return final
