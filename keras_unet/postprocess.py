"""Choosing the post-processing of objects on validation data, as StarDist's
``optimize_thresholds`` does: the object class's probability threshold, the minimum object size
and the splitting of touching objects that score best on labelled images, searched over
probabilities predicted once.

The one owner of the post-processing: :class:`PostProcessing` is the value every caller passes
(predict, evaluate, the widget, Dask workers, export, the end of training): what a run recorded,
overridden by what a user gave, scaled for ``--diameter``, applied to probabilities, searched on
validation data. A new split rule is a change here and in :mod:`keras_unet.instances`.

The score is the 2018 Data Science Bowl score (mean over IoU 0.50, 0.55, ..., 0.95 of
TP / (TP + FP + FN)): it rewards exact outlines and touching objects kept apart, where the F1 at
IoU 0.5 (one of its ten terms) forgives an object that is a little too fat or thin, and it is what
held-out nuclei sets are scored with. The class-balanced loss makes objects fat at argmax (p >= 0.5),
so the threshold matters: 0.285 -> 0.43 on held-out DSB2018 images when it was chosen by hand.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from keras_unet import metrics
from keras_unet.errors import SettingsError
from keras_unet.instances import SPLITS as ALL_SPLITS
from keras_unet.instances import instances_from_probabilities

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SPLITS = ALL_SPLITS[:2]  # what the search tries for a two-class model: none, watershed
SCORE = "dsb_score"


def default_settings(min_size: int = 0, split: str = "none") -> dict:
    """What predict did before anything was chosen: argmax, ``min_size``, no splitting (a
    three-class model: its boundary, ``split="boundary"``)."""
    return {"threshold": None, "min_size": int(min_size), "split": split}


def searched_splits(split: str) -> tuple:
    """The splits the search tries for a run whose own is ``split``: a three-class model's boundary
    against none, else :data:`SPLITS`."""
    return ("boundary", "none") if split == "boundary" else SPLITS


def min_size_candidates(typical: int) -> list[int]:
    """Minimum sizes to try around a run's ``typical`` one (a quarter of the 5th percentile of
    its training objects' areas): none, half, it, twice, four times."""
    return sorted({0, typical // 2, typical, 2 * typical, 4 * typical})


def score(probabilities: list, truths: list, settings: dict, object_class: int = 1) -> float:
    """Mean :data:`SCORE` of the objects ``settings`` make of each probability map."""
    values = []
    for p, truth in zip(probabilities, truths):
        found = instances_from_probabilities(p, object_class=object_class, threshold=settings["threshold"],
                                             min_size=settings["min_size"], split=settings["split"], dtype=np.int32)
        values.append(metrics.evaluate_objects(found, truth)[SCORE])
    return float(np.mean(values)) if values else 0.0


def choose(probabilities: list, truths: list, typical_min_size: int = 0, thresholds=THRESHOLDS,
           splits=SPLITS) -> dict:
    """The settings with the best mean :data:`SCORE` on ``(probabilities (H, W, classes), true
    instance labels (H, W))`` pairs.

    A coordinate search (threshold and split together, then the minimum size for the best pair):
    16 evaluations per image instead of 70 for the full grid, and the minimum size interacts little
    with the other two. Returns the settings with ``score`` (its name), ``value``, ``default_value``
    (argmax, the run's minimum size, the first of ``splits``: what predict gave before) and ``images``.
    """
    default = default_settings(typical_min_size, split=splits[0])
    trials = {}

    def tried(settings: dict) -> float:
        key = (settings["threshold"], settings["min_size"], settings["split"])
        if key not in trials:
            trials[key] = score(probabilities, truths, settings)
        return trials[key]

    best = max(({**default, "threshold": t, "split": s} for t in thresholds for s in splits), key=tried)
    best = max(({**best, "min_size": m} for m in min_size_candidates(typical_min_size)), key=tried)
    return {**best, "score": SCORE, "value": tried(best), "default_value": tried(default), "images": len(truths)}


def default_split(target: str, n_classes: int = 2) -> str | None:
    """How a run's objects come from its output before anything is chosen: ``boundary`` for a
    three-class target (interiors grown over their rims), ``none`` for two classes, None where its
    classes are not objects."""
    if target == "three_class":
        return "boundary"
    return "none" if n_classes == 2 else None


def labels_from_probabilities(probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class map ``(H, W)`` uint8: argmax, or ``p(class 1) >= threshold`` for two classes."""
    if threshold is not None and probabilities.shape[-1] == 2:
        return (probabilities[..., 1] >= threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class PostProcessing:
    """How objects are made of a model's probabilities, as one value: the object class's
    probability ``threshold`` (None: argmax), the ``min_size`` (px) under which objects are
    dropped, the ``split`` of touching objects (:data:`keras_unet.instances.SPLITS`), the
    ``scale`` the images are resized by for the network (``--diameter``; 1: as they are) and
    whether it was ``chosen`` on the run's validation data (else defaults)."""

    threshold: float | None = None
    min_size: int = 0
    split: str = "none"
    scale: float = 1.0
    chosen: bool = False

    @classmethod
    def of_record(cls, record: dict) -> "PostProcessing":
        """What a run recorded (its ``config.json`` as a dict): the choice on its validation data
        (:func:`search`), else argmax, its ``min_object_size`` and its :func:`default_split`
        (runs from before the choice; everything default for a model without a run)."""
        chosen = record.get("postprocessing") or {}
        settings = record.get("config", {})
        split = default_split(settings.get("target", "two_class"), settings.get("n_classes", 2)) or "none"
        return cls(threshold=chosen.get("threshold"),
                   min_size=int(chosen.get("min_size", record.get("min_object_size") or 0)),
                   split=chosen.get("split", split), chosen=bool(chosen))

    def given(self, threshold: float | None = None, min_size: int | None = None,
              split: str | None = None) -> "PostProcessing":
        """This value with what a caller gave (not None) in place of its own."""
        given = {"threshold": threshold, "min_size": min_size, "split": split}
        if split is not None and split not in ALL_SPLITS:
            raise SettingsError(f"split {split!r} is not one of {', '.join(ALL_SPLITS)}")
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def at_diameter(self, diameter: float | None, learned: float | None, source="the model") -> "PostProcessing":
        """For objects of ``diameter`` px in the images, where the model learned objects of
        ``learned`` px: ``scale`` resizes them to the learned size and ``min_size`` is in the
        images' pixels. Unchanged without a ``diameter``."""
        if diameter is None:
            return self
        if not learned:
            raise SettingsError(f"{source}: the model records no object diameter (it did not train on objects, or "
                                f"before diameters were recorded); leave out --diameter and resize the images")
        scale = float(learned) / float(diameter)
        return replace(self, scale=scale, min_size=int(round(self.min_size / scale ** 2)))

    def objects(self, probabilities: np.ndarray) -> np.ndarray:
        """Instance labels of every object class of ``(H, W, classes)`` probabilities: ``(H, W)``
        uint16 for a two-class (or three-class, boundary-split) model, else ``(classes - 1, H, W)``
        (class 1 first); see :func:`keras_unet.instances.instances_from_probabilities`."""
        classes = [1] if self.split == "boundary" else range(1, probabilities.shape[-1])  # a three-class model: one kind
        per_class = [instances_from_probabilities(probabilities, object_class=k, threshold=self.threshold,
                                                  min_size=self.min_size, split=self.split) for k in classes]
        return per_class[0] if len(per_class) == 1 else np.stack(per_class)

    def output(self, probabilities: np.ndarray, kind: str) -> np.ndarray:
        """What ``predict --format kind`` makes of one page's probabilities."""
        if kind == "instances":
            return self.objects(probabilities)
        if kind == "probabilities":
            return probabilities
        return labels_from_probabilities(probabilities, self.threshold)

    def described(self, note: str = "") -> str:
        """``argmax, under 36 px dropped, split none (defaults)``: what predict says it uses
        (``note`` added inside the parentheses)."""
        origin = "chosen on the run's validation data" if self.chosen else "defaults"
        threshold = "argmax" if self.threshold is None else f"p >= {self.threshold:g}"
        return f"{threshold}, under {self.min_size} px dropped, split {self.split} ({origin}{note})"

    def in_tf_ops(self) -> str | None:
        """What the exported SavedModel's ``instances`` signature (TF ops only) cannot do of this
        value, in words; None where it makes the same objects."""
        if self.split in ("none", None):
            return None
        return (f"the run splits touching objects by {self.split}, which the instances signature cannot do in TF "
                "ops: its objects differ from predict's where objects touch")

    def as_dict(self) -> dict:
        return asdict(self)


def search(probabilities: list, truths: list, typical_min_size: int = 0, split: str = "none") -> dict:
    """The post-processing chosen on validation data (:func:`choose` over :func:`searched_splits`
    of the run's own ``split``): what a run records and :meth:`PostProcessing.of_record` reads."""
    return choose(probabilities, truths, typical_min_size=typical_min_size, splits=searched_splits(split))
