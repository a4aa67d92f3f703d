"""The objects' diameter in an image, estimated for ``--diameter auto``: a search over scales
with a consistency measure, as Cellpose estimates it before it resizes (there with a regression
on the network's style vector; here with the model itself, so no second model is trained).

At each scale ``s`` of :data:`SCALES` the network sees (a window of) the image resized by ``s``;
its objects, measured back in the image's pixels, have a median diameter ``d(s)``. At the right
scale the network sees objects of the size it learned, ``D``, so ``s * d(s) = D``; far from it,
objects are lost (too small) or cut into pieces (too large) and the network is unsure. Each
scale scores its consistency ``|log(s d(s) / D)|``, its uncertainty (the share of object pixels
with ``0.25 < p < 0.75``) and its stability (``|log d(s') / d(s)|`` at the neighbouring scales
``s'``, averaged): pieces of a large object can be consistent by chance at one scale, but their
size changes with the scale where whole objects keep theirs. The best scale's ``d(s)`` is the
estimate, refined once at ``D / d(s)``.

A model is not sensitive to sizes near the one it learned (it saw a range of them), so images
whose objects are within :data:`DEAD_ZONE` of it are predicted as they are.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

SCALES = tuple(2.0 ** (k / 2) for k in range(-6, 3))  # 1/8 .. 2, a factor sqrt(2) apart
WINDOW = 320  # px: the side the network sees at each scale (a central crop of larger images)
MIN_OBJECTS = 3  # a scale that finds fewer is not scored
UNSTABLE = 1.0  # the stability term of a scale whose neighbour found no objects
DEAD_ZONE = 2.0  # objects within this factor of the learned diameter: the image is not resized


@dataclass(frozen=True)
class Trial:
    """One scale tried: its ``scale``, the ``diameter`` (px, in the image) and ``count`` of the
    objects found, their ``consistency`` with the learned size and ``uncertainty``, and the
    ``score`` (lower is better; inf: not scored) with the ``stability`` across scales."""

    scale: float
    diameter: float
    count: int
    consistency: float
    uncertainty: float
    stability: float = 0.0

    @property
    def score(self) -> float:
        return self.consistency + self.uncertainty + self.stability


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
        return Trial(scale, 0.0, 0, float("inf"), 1.0)
    job = PredictionJob(predictor.model, "image", pages=[part], scale=scale, **options.job_keywords())
    probabilities = next(job.probabilities())
    chosen = predictor.postprocessing.at_diameter(learned / scale, learned)
    labels = chosen.objects(probabilities)
    diameter, count = median_diameter(labels)
    if count < MIN_OBJECTS:
        return Trial(scale, diameter, count, float("inf"), 1.0)
    p = probabilities[..., 1:].sum(-1)
    near = p > 0.25
    uncertainty = float(np.mean((p[near] < 0.75))) if near.any() else 1.0
    return Trial(scale, diameter, count, float(abs(np.log(scale * diameter / learned))), uncertainty)


def _change(a: Trial, b: Trial) -> float:
    """How much the objects' diameter changes from trial ``a`` to ``b`` (log ratio)."""
    if not (np.isfinite(a.consistency) and np.isfinite(b.consistency)):
        return UNSTABLE
    return float(abs(np.log(b.diameter / a.diameter)))


def with_stability(trials: list) -> list:
    """``trials`` (in scale order) with each one's stability: the mean change to its neighbours."""
    out = []
    for i, t in enumerate(trials):
        neighbours = [trials[j] for j in (i - 1, i + 1) if 0 <= j < len(trials)]
        out.append(dataclasses.replace(t, stability=float(np.mean([_change(t, n) for n in neighbours]))))
    return out


def estimate(predictor, image: np.ndarray, options, scales=SCALES) -> Estimate:
    """The median diameter (px) of the objects in ``image`` ``(H, W[, C])`` for ``predictor``
    (:class:`keras_unet.predictor.Predictor`, whose model records the diameter it learned);
    ``options``: its :class:`keras_unet.predictor.Options` (how the network runs)."""
    from keras_unet.errors import SettingsError

    learned = predictor.object_diameter
    if not learned:
        raise SettingsError(f"{predictor.path}: the model records no object diameter, so --diameter auto cannot "
                            "size the images for it; give the diameter in px")
    trials = with_stability([trial(predictor, image, s, learned, options) for s in sorted(scales)])
    best = min(trials, key=lambda t: t.score)
    if not np.isfinite(best.score):
        return Estimate(None, tuple(trials))
    refined = trial(predictor, image, float(learned / best.diameter), learned, options)
    refined = dataclasses.replace(refined, stability=_change(best, refined))
    final = min((best, refined), key=lambda t: t.score)
    return Estimate(round(final.diameter, 1), (*trials, refined))
