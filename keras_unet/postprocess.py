"""Choosing the post-processing of objects on validation data, as StarDist's
``optimize_thresholds`` does: the object class's probability threshold, the minimum object size
and the splitting of touching objects that score best on labelled images, searched over
probabilities predicted once.

The score is the 2018 Data Science Bowl score (mean over IoU 0.50, 0.55, ..., 0.95 of
TP / (TP + FP + FN)): it rewards exact outlines and touching objects kept apart, where the F1 at
IoU 0.5 (one of its ten terms) forgives an object that is a little too fat or thin, and it is what
held-out nuclei sets are scored with. The class-balanced loss makes objects fat at argmax (p >= 0.5),
so the threshold matters: 0.285 -> 0.43 on held-out DSB2018 images when it was chosen by hand.
"""
from __future__ import annotations

import numpy as np

from keras_unet import metrics
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
                                             min_size=settings["min_size"], split=settings["split"])
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
