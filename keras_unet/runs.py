"""The run folder's record: ``config.json`` (the settings and what the run found: input range,
minimum object size, the post-processing chosen on validation data, read as a value by
:meth:`keras_unet.postprocess.PostProcessing.of_record`) and ``state.json`` (epochs done, the
plan, the best epoch). The one module that reads and writes them, so a library caller
who loads a run's model gets the same settings as the CLI. :class:`Run` is the folder as an
object; the functions below take a run folder, a model file in one or a shipped model's name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from keras_unet.files import atomic_path

# The run folder's files. Their names become paths here only (run_file, Run), so a rename is one line.
CONFIG, STATE = "config.json", "state.json"
MODEL, LAST = "model.keras", "last.keras"  # the best inference model; the latest network with optimizer state
LOG, CURVES, SAMPLES, TENSORBOARD = "log.csv", "curves.png", "samples.png", "tensorboard"
SHOWN = (MODEL, LAST, CONFIG, LOG, CURVES, SAMPLES)  # what fit lists for the user at its end
# The models shipped with the package: each a run folder (model.keras, config.json) plus card.json.
SHIPPED = Path(__file__).resolve().parent / "models"
CARD = "card.json"


def run_file(run_dir, name: str) -> Path:
    """``run_dir/name`` for one of the run folder's files (:data:`MODEL`, :data:`LAST`, :data:`LOG`, ...)."""
    return Path(run_dir) / name


def shipped_models() -> list[str]:
    """Names of the models shipped with the package (``keras-unet models``)."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / MODEL).is_file()) if SHIPPED.is_dir() else []


def locate(path) -> Path:
    """``path`` as given where it exists, else the folder of the shipped model of that name
    (``nuclei``), else ``path`` unchanged (the caller's error names it)."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1 and (SHIPPED / path.name / MODEL).is_file():
        return SHIPPED / path.name
    return path


def card(name: str) -> dict:
    """A shipped model's card: training data, licence, input expectations, held-out scores."""
    return read_json(SHIPPED / name / CARD)


def partners(path) -> dict:
    """The models a shipped model hands images of another kind to (its card's ``partners``,
    :data:`keras_unet.kinds.KINDS` -> shipped model name, e.g. ``{"light": "nuclei-stained"}``),
    those installed; ``{}`` for every other model: a run of one's own predicts every image."""
    folder = folder_of(path)
    if not (folder.resolve().is_relative_to(SHIPPED) and (folder / CARD).is_file()):
        return {}
    installed = shipped_models()
    return {kind: name for kind, name in read_json(folder / CARD).get("partners", {}).items() if name in installed}


def folder_of(path) -> Path:
    """The run folder of a model file in it, or the folder itself (a shipped model's by its name)."""
    path = locate(path)
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


def architecture(path) -> dict | None:
    """The network's settings as the run recorded them (``unet_config``'s keys but
    ``in_channels``), or None for a model without a run record."""
    run = record(path)
    settings = run.get("config")
    if not settings or "depth" not in settings:
        return None
    percentile = settings.get("normalization", "range") == "percentile"
    return {"depth": settings["depth"], "base_filters": settings["base_filters"], "n_classes": settings["n_classes"],
            "padding": settings.get("padding", "valid"), "batch_norm": bool(settings.get("batch_norm", False)),
            "input_range": None if percentile else tuple(run.get("input_range") or (0.0, 1.0)),
            "percentiles": tuple(settings["percentiles"]) if percentile else None}


@dataclass(frozen=True)
class Run:
    """One run folder: its record, its state, its model files. ``Run.of(path)`` takes a run
    folder, a model file in one or a shipped model's name."""

    folder: Path

    @classmethod
    def of(cls, path) -> "Run":
        return cls(folder_of(path))

    @property
    def started(self) -> bool:
        """True where the run has its record (``config.json``): it can be resumed, not started anew."""
        return (self.folder / CONFIG).is_file()

    @property
    def shipped(self) -> bool:
        """A model shipped with the package: read, never written."""
        return self.folder.resolve().is_relative_to(SHIPPED)

    def record(self) -> dict:
        return record(self.folder)

    def settings(self) -> dict:
        """The run's training settings (``TrainConfig`` fields as saved)."""
        return self.record().get("config", {})

    def start(self, value: dict) -> None:
        """Write the record of a new run."""
        write_json(self.folder / CONFIG, value)

    def update(self, **values) -> dict:
        return update_record(self.folder, **values)

    def state(self) -> dict:
        """``state.json``: epochs done, the plan, the best epoch (``{}`` before the first epoch)."""
        return read_json(self.folder / STATE)

    def write_state(self, state: dict) -> None:
        write_json(self.folder / STATE, state)

    def min_object_size(self) -> int | None:
        return min_object_size(self.folder)

    def model_file(self) -> Path | None:
        """``model.keras`` (the best), else ``last.keras``, else None."""
        return next((self.folder / n for n in (MODEL, LAST) if (self.folder / n).is_file()), None)
