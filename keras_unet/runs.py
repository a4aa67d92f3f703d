"""The run folder's record: ``config.json`` (the settings and what the run found: input range,
minimum object size, the post-processing chosen on validation data) and ``state.json`` (epochs
done, the plan, the best epoch). The one module that reads and writes them, so a library caller
who loads a run's model gets the same settings as the CLI.
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_unet.files import atomic_path

CONFIG, STATE = "config.json", "state.json"


def folder_of(path) -> Path:
    """The run folder of a model file in it, or the folder itself."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def write_json(path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))


def read_json(path) -> dict:
    """A JSON file's object, ``{}`` where there is none or it is unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def record(path) -> dict:
    """The ``config.json`` of the run a model file or run folder belongs to (``{}`` if none)."""
    return read_json(folder_of(path) / CONFIG)


def update_record(run_dir, **values) -> dict:
    """Write ``values`` into the run's ``config.json`` (atomically; other keys kept)."""
    updated = {**record(run_dir), **values}
    write_json(Path(run_dir) / CONFIG, updated)
    return updated


def min_object_size(path) -> int | None:
    """The ``min_object_size`` the run recorded (None where the model has no run record)."""
    value = record(path).get("min_object_size")
    return int(value) if value is not None else None


def postprocessing(path) -> dict:
    """How the run's objects are made by default: ``{"threshold": float or None (argmax),
    "min_size": int, "split": "none" | "watershed", "chosen": bool}``: what the run chose on
    validation data (:mod:`keras_unet.postprocess`; ``chosen`` True), else argmax, its
    ``min_object_size`` and no split (runs from before the choice; 0 for a model without a run)."""
    run = record(path)
    chosen = run.get("postprocessing") or {}
    return {"threshold": chosen.get("threshold"),
            "min_size": int(chosen.get("min_size", run.get("min_object_size") or 0)),
            "split": chosen.get("split", "none"), "chosen": bool(chosen)}
