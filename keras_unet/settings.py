"""Every setting of a training run and the presets, in one place, without TensorFlow.

:class:`TrainConfig` holds the settings (the paper's values as defaults, where it gives one);
:data:`PRESETS` the named starting points: ``paper`` (the defaults), ``cpu`` (good quality in
about 30 minutes on 2 CPU cores) and ``demo`` (what
``keras-unet fit`` without ``--data`` trains: a small network that learns the synthetic cells in
about two minutes on 2 CPU cores). Settings are passed by keyword.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from keras_unet.errors import SettingsError

@dataclass
class TrainConfig:
    """Every training setting; the defaults are the paper's where it gives one."""

    data: str | None = None  # dataset folder; None = the embedded synthetic cells
    val_data: str | None = None  # explicit validation folder; else val_fraction of data
    val_fraction: float = 0.2
    synthetic_images: int = 8
    synthetic_size: int = 256
    # model
    depth: int = 5
    base_filters: int = 64
    n_classes: int = 2
    padding: str = "valid"
    dropout: float = 0.5
    batch_norm: bool = False
    # input normalisation (keras_unet.normalize): per image by percentiles, or the data's fixed range
    normalization: str = "percentile"  # percentile | range
    percentiles: tuple = (1.0, 99.8)
    # targets and weight maps
    # borders: the paper's two classes, separation borders cut between touching objects and weighted
    # by w0/sigma; three_class: background / interior / boundary (Caicedo et al. 2019), 3 classes
    target: str = "borders"
    w0: float = 10.0
    sigma: float = 5.0
    border_width: int = 1
    balance_classes: bool = True
    mask_kind: str = "auto"
    # optimisation
    tile: int = 572
    batch_size: int = 1
    epochs: int = 50
    steps_per_epoch: int = 100
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.99
    lr_schedule: str = "constant"  # constant | cosine
    loss: str = "wce"
    early_stopping: int = 0  # patience in epochs; 0 = off
    # float32 | bfloat16 | float16 (mixed_float16, a GPU's) | auto: bfloat16 where the CPU has it
    # natively and it measured faster (keras_unet.precision); a run records what it resolved to
    precision: str = "auto"
    max_minutes: float = 0.0  # the wall-time budget: the schedule is planned to fit it; 0 = no limit
    fixed_schedule: bool = False  # epochs and steps given explicitly: kept as they are, not planned to the budget
    tensorboard: bool = False
    augment: bool = True
    augment_on: str = "auto"  # host | device | auto (device where a GPU is, else host)
    zoom: float = 1.0  # tiles sampled at a scale log-uniform in [1/zoom, zoom] (augment.AugmentParams.zoom); 1 = off
    stain_jitter: float = 0.0  # optical density: colour images' stains jittered by this (augment.stain_jitter); 0 = off
    select_on: str = "auto"  # the best model.keras by: auto (object_f1 for 2 classes, else iou) | object_f1 | iou | loss
    seed: int = 0
    strategy: str = "default"  # default | mirrored | multiworker
    init_from: str | None = None  # start from this model's weights: a run folder, .keras file or shipped model name

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """From a saved ``config.json``; a run from before a setting existed keeps what it had then
        (the fixed input range, selection on the validation loss)."""
        known = {f.name for f in fields(cls)}
        # a run from before precision was recorded trained in float32, or float16 / bfloat16 with
        # the old --mixed-precision flag
        old_precision = "float16" if values.get("mixed_precision") else "float32"
        values = {"normalization": "range", "select_on": "loss", "precision": old_precision, **values}
        return cls(**{k: v for k, v in values.items() if k in known})

    def validated(self) -> "TrainConfig":
        """``self`` if every setting is in range, else :class:`SettingsError` naming the option.

        Checked before a run folder is made, so a bad setting never leaves a half-made run.
        """
        positive = ("base_filters", "depth", "tile", "batch_size", "epochs", "steps_per_epoch", "synthetic_images",
                    "synthetic_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        checks = [
            ("n_classes", self.n_classes >= 2, ">= 2 (two classes for a binary segmentation)"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("val_fraction", 0.0 <= self.val_fraction < 1.0, "in [0, 1)"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("momentum", 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            ("w0", self.w0 >= 0, ">= 0"),
            ("sigma", self.sigma > 0, "> 0"),
            ("border_width", self.border_width >= 0, ">= 0"),
            ("early_stopping", self.early_stopping >= 0, ">= 0 (0 = off)"),
            ("max_minutes", self.max_minutes >= 0, ">= 0 (0 = no limit)"),
            ("padding", self.padding in ("valid", "same"), "'valid' or 'same'"),
            ("optimizer", self.optimizer in ("sgd", "adam"), "'sgd' or 'adam'"),
            ("lr_schedule", self.lr_schedule in ("constant", "cosine"), "'constant' or 'cosine'"),
            ("loss", self.loss in ("wce", "dice", "wce+dice"), "'wce', 'dice' or 'wce+dice'"),
            ("target", self.target in ("borders", "three_class"), "'borders' or 'three_class'"),
            ("n_classes", self.target != "three_class" or self.n_classes == 3,
             "3 for --target three_class (background, interior, boundary); leave --classes out"),
            ("mask_kind", self.mask_kind in ("auto", "binary", "instance", "classes"), "auto, binary, instance or classes"),
            ("normalization", self.normalization in ("percentile", "range"), "'percentile' or 'range'"),
            ("percentiles", len(self.percentiles) == 2 and 0 <= self.percentiles[0] < self.percentiles[1] <= 100,
             "two numbers 0 <= low < high <= 100 (e.g. 1 99.8)"),
            ("augment_on", self.augment_on in ("auto", "host", "device"), "auto, host or device"),
            ("zoom", 1.0 <= self.zoom <= 4.0, "between 1 (off) and 4 (1.25-1.5: moderate)"),
            ("stain_jitter", 0.0 <= self.stain_jitter <= 1.0, "between 0 and 1 (0.05: light, 0.2: strong)"),
            ("select_on", self.select_on in ("auto", "object_f1", "iou", "loss"), "auto, object_f1, iou or loss"),
            ("strategy", self.strategy in ("default", "mirrored", "multiworker"), "default, mirrored or multiworker"),
            ("precision", self.precision in ("auto", "float32", "bfloat16", "float16"),
             "auto, float32, bfloat16 or float16"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise SettingsError(f"{_flag(name)} must be {rule}, got {getattr(self, name)!r}")
        return self

    def updated(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` (keywords of the fields)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)


# The CLI's option for each setting whose name differs, for messages the user can act on.
FLAGS = {"steps_per_epoch": "--steps", "n_classes": "--classes", "learning_rate": "--lr",
         "synthetic_images": "synthetic_images", "synthetic_size": "synthetic_size", "val_fraction": "--val-fraction"}


def _flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


PRESETS = {
    "paper": {},
    # About 30 minutes on 2 CPU cores (benchmarks/results/quality.md): a quarter of the paper's
    # filters, mid-size tiles, Adam with a cosine decay; --max-minutes bounds the wall time.
    "cpu": dict(base_filters=16, tile=348, batch_size=2, epochs=50, steps_per_epoch=50, optimizer="adam",
                learning_rate=1e-3, lr_schedule="cosine", max_minutes=30.0),
    # Fine-tuning a trained model (fit --from) on a few images in a short CPU budget: its
    # architecture (ARCHITECTURE, from the model's run), a learning rate a third of the cpu
    # preset's so the start is not forgotten, and as many epochs as fit the 10 minutes.
    "finetune": dict(tile=348, batch_size=2, epochs=1000, steps_per_epoch=25, optimizer="adam", learning_rate=3e-4,
                     lr_schedule="cosine", max_minutes=10.0),
    "demo": dict(base_filters=16, tile=316, batch_size=2, epochs=30, steps_per_epoch=20, optimizer="adam",
                 learning_rate=1e-3, max_minutes=2.5, synthetic_images=10),
}


# What a model is built from: a run started from another model's weights (init_from) takes these from it.
ARCHITECTURE = ("depth", "base_filters", "n_classes", "padding", "batch_norm", "normalization", "percentiles")


def inherited(architecture: dict, given: dict, source) -> dict:
    """``given`` settings with the ``architecture`` of the model ``source`` that a run starts from
    (:data:`ARCHITECTURE` keys); a :class:`SettingsError` where ``given`` contradicts it."""
    for name, value in architecture.items():
        if name in given and given[name] != value:
            raise SettingsError(f"{_flag(name)} {given[name]} contradicts {source}, which has {value}; "
                                f"leave {_flag(name)} out to start from its weights")
    return {**given, **architecture, "init_from": str(source)}


def preset(name: str, **changes) -> TrainConfig:
    """The :class:`TrainConfig` of a preset, with ``changes`` on top, validated."""
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[name], **changes}
    if values.get("target") == "three_class":
        values.setdefault("n_classes", 3)
    return TrainConfig(**values).validated()
