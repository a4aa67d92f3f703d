"""The objects' diameter in an image, estimated for ``--diameter auto``: a search over scales
with a consistency measure, as Cellpose estimates it before it resizes (there with a regression
on the network's style vector; here with the model itself, so no second model is trained).

At each scale ``s`` of :data:`SCALES` the network sees (a window of) the image resized by ``s``;
its objects, measured back in the image's pixels, have a median diameter ``d(s)``. At the right
scale the network sees objects of the size it learned, ``D``, so ``s * d(s) = D``; far from it,
objects are lost (too small) or cut into pieces (too large) and the network is unsure. Each
scale scores its consistency ``|log(s d(s) / D)|`` plus its uncertainty (the share of object
pixels with ``0.25 < p < 0.75``); the best scale's ``d(s)`` is the estimate, refined once at
``D / d(s)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALES = tuple(2.0 ** (k / 2) for k in range(-6, 3))  # 1/8 .. 2, a factor sqrt(2) apart
WINDOW = 320  # px: the side the network sees at each scale (a central crop of larger images)
MIN_OBJECTS = 3  # a scale that finds fewer is not scored


@dataclass(frozen=True)
class Trial:
    """One scale tried: its ``scale``, the ``diameter`` (px, in the image) and ``count`` of the
    objects found, their ``uncertainty`` and the ``score`` (lower is better; inf: not scored)."""

    scale: float
    diameter: float
    count: int
    uncertainty: float
    score: float


@dataclass(frozen=True)
class Estimate:
    """The objects' median ``diameter`` in the image (px; None where no scale found objects) and
    every :class:`Trial`."""

    diameter: float | None
    trials: tuple


def median_diameter(labels: np.ndarray) -> tuple[float, int]:
    """``(median equivalent diameter sqrt(4 area / pi) in px, object count)`` of instance labels."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return (float(np.median(np.sqrt(4 * areas / np.pi))), int(areas.size)) if areas.size else (0.0, 0)


def window(image: np.ndarray, scale: float) -> np.ndarray:
    """The central part of ``image`` that is :data:`WINDOW` px a side once resized by ``scale``
    (all of it where smaller): the cost of a trial is bounded whatever the image's size."""
    side = int(np.ceil(WINDOW / scale))
    rows, cols = image.shape[:2]
    top, left = max(0, (rows - side) // 2), max(0, (cols - side) // 2)
    return image[top : top + side, left : left + side]


def trial(predictor, image: np.ndarray, scale: float, learned: float, options) -> Trial:
    """The objects of ``image`` at ``scale`` (see the module's docstring), with the model's own
    post-processing at that scale."""
    from keras_unet.inference import PredictionJob

    part = window(image, scale)
    if min(part.shape[:2]) * scale < 16:  # nothing to see
        return Trial(scale, 0.0, 0, 1.0, float("inf"))
    job = PredictionJob(predictor.model, "image", pages=[part], scale=scale, **options.job_keywords())
    probabilities = next(job.probabilities())
    chosen = predictor.postprocessing.at_diameter(learned / scale, learned)
    labels = chosen.objects(probabilities)
    diameter, count = median_diameter(labels)
    if count < MIN_OBJECTS:
        return Trial(scale, diameter, count, 1.0, float("inf"))
    p = probabilities[..., 1:].sum(-1)
    near = p > 0.25
    uncertainty = float(np.mean((p[near] < 0.75))) if near.any() else 1.0
    consistency = abs(np.log(scale * diameter / learned))
    return Trial(scale, diameter, count, uncertainty, consistency + uncertainty)


def estimate(predictor, image: np.ndarray, options=None, scales=SCALES) -> Estimate:
    """The median diameter (px) of the objects in ``image`` ``(H, W[, C])`` for ``predictor``
    (:class:`keras_unet.predictor.Predictor`, whose model records the diameter it learned)."""
    from keras_unet.errors import SettingsError
    from keras_unet.predictor import Options

    options = options or Options(engine="tensorflow", precision="float32")
    learned = predictor.object_diameter
    if not learned:
        raise SettingsError(f"{predictor.path}: the model records no object diameter, so --diameter auto cannot "
                            "size the images for it; give the diameter in px")
    trials = [trial(predictor, image, s, learned, options) for s in scales]
    best = min(trials, key=lambda t: t.score)
    if not np.isfinite(best.score):
        return Estimate(None, tuple(trials))
    refined = trial(predictor, image, float(learned / best.diameter), learned, options)
    trials.append(refined)
    final = min((best, refined), key=lambda t: t.score)
    return Estimate(round(final.diameter, 1), tuple(trials))
