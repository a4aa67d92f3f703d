"""Weight maps of the paper (eq. 2) and the 2-class targets they go with.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))

``w_c`` balances class frequencies; ``d1``, ``d2`` are the distances (px) to the nearest and the
second-nearest object. The border term is applied to background pixels (including the separation
borders cut between touching objects), which is where the paper's Fig. 3d puts the high weights.

All images are 2-D numpy arrays ``(H, W)``; weights are float32.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from keras_unet.errors import SettingsError


def instances_from_binary(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Label the connected components of a binary mask: ``(H, W)`` bool -> int32 instance image."""
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, _ = ndimage.label(np.asarray(mask) > 0, structure=structure)
    return labels.astype(np.int32)


def touching_borders(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Object pixels within ``width`` px of a *different* object: ``(H, W)`` bool.

    Cutting these out leaves a gap of about ``2 * width`` px between touching objects.
    """
    instances = np.asarray(instances)
    size = 2 * width + 1
    labels = instances.astype(np.int64)
    above_all = labels.max(initial=0) + 1  # stands in for background in the minimum
    highest = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, above_all), size=size, mode="nearest")
    return (instances > 0) & ((highest != instances) | (lowest != instances))


def binary_target(instances: np.ndarray, border_width: int = 1) -> np.ndarray:
    """2-class target ``(H, W)`` uint8: 1 inside objects, 0 on background and separation borders."""
    instances = np.asarray(instances)
    return ((instances > 0) & ~touching_borders(instances, border_width)).astype(np.uint8)


def balanced_class_weights(target: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Per-class weights ``(n_classes,)`` so that every present class sums to the same total.

    ``w_k = N / (K * n_k)`` over the ``K`` classes present; absent classes get 0.
    """
    counts = np.bincount(np.asarray(target).ravel(), minlength=n_classes)[:n_classes].astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def _border_cutoff(w0: float, sigma: float, tolerance: float) -> float:
    """Distance d1 + d2 (px) beyond which the border term is below ``tolerance``."""
    if w0 <= tolerance:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tolerance))


def two_nearest_distances(instances: np.ndarray, cutoff: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (px) to the nearest and second-nearest object: two ``(H, W)`` float32 arrays.

    With ``cutoff``, each object's distance transform is computed only in a window of ``cutoff`` px
    around it (distances beyond are ``inf``): exact for all pairs with ``d1 + d2 <= cutoff``, and
    fast on crowded images because the work per object is local, not the whole image.
    Pixels inside an object have distance 0 to it.
    """
    instances = np.asarray(instances)
    height, width = instances.shape
    d1 = np.full(instances.shape, np.inf, np.float32)
    d2 = np.full(instances.shape, np.inf, np.float32)
    margin = int(math.ceil(cutoff)) + 1 if cutoff is not None else max(height, width)
    for label, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        window = (
            slice(max(box[0].start - margin, 0), min(box[0].stop + margin, height)),
            slice(max(box[1].start - margin, 0), min(box[1].stop + margin, width)),
        )
        dist = ndimage.distance_transform_edt(instances[window] != label).astype(np.float32)
        w1, w2 = d1[window], d2[window]
        d2[window] = np.minimum(w2, np.maximum(w1, dist))
        d1[window] = np.minimum(w1, dist)
    return d1, d2


def weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | np.ndarray | None = "balanced",
    border_width: int = 1,
    tolerance: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's 2-class target and weight map for an instance label image.

    Args:
        instances: ``(H, W)`` int, 0 = background, 1..n = objects (use
            :func:`instances_from_binary` for a binary mask).
        w0: border weight (10 in the paper).
        sigma: border width scale (px, ~5 in the paper).
        class_weights: ``"balanced"`` (w_c of the paper), ``None`` (all 1) or a ``(2,)`` array.
        border_width: separation borders cut between touching objects (px per object).
        tolerance: border-term values below this are dropped (controls the distance window).

    Returns:
        ``(target uint8 (H, W) in {0, 1}, weights float32 (H, W))``.
    """
    instances = np.asarray(instances)
    target = binary_target(instances, border_width)
    if class_weights is None:
        w_c = np.ones(2, np.float32)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise SettingsError(f"class_weights must be 'balanced', None or an array, got {class_weights!r}")
        w_c = balanced_class_weights(target, 2)
    else:
        w_c = np.asarray(class_weights, np.float32)
    weights = w_c[target].astype(np.float32)
    if w0 > 0 and instances.max() > 1:
        d1, d2 = two_nearest_distances(instances, _border_cutoff(w0, sigma, tolerance))
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
        background = target == 0
        weights[background] += border[background].astype(np.float32)
    return target, weights


def boundary_pixels(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Object pixels within ``width`` px (Chebyshev) of any other label, background included:
    each object's inner rim, ``(H, W)`` bool."""
    labels = np.asarray(instances).astype(np.int64)
    size = 2 * width + 1
    highest = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lowest = ndimage.minimum_filter(labels, size=size, mode="nearest")
    return (labels > 0) & ((highest != labels) | (lowest != labels))


def three_class_target(instances: np.ndarray, width: int = 1, class_weights: str | None = "balanced"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The three-class target of Caicedo et al. (2019, Cytometry A: background 0, interior 1,
    boundary 2, each object's inner rim of ``width`` px) and its class-balanced weights:
    ``(target uint8 (H, W), weights float32 (H, W))``. Touching objects are apart by two rims.
    1 px by default: DSB2018's masks survive the round trip (target, then interiors grown back) at
    a DSB score of 0.98 with 1 px rims and 0.84 with 2 px, where small nuclei lose their interior."""
    instances = np.asarray(instances)
    target = np.where(boundary_pixels(instances, width), 2, (instances > 0).astype(np.uint8)).astype(np.uint8)
    weights = class_weight_map(target, 3) if class_weights == "balanced" else np.ones(target.shape, np.float32)
    return target, weights


def class_weight_map(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Class-balancing weights only, for multi-class index targets: ``(H, W)`` float32."""
    return balanced_class_weights(target, n_classes)[np.asarray(target)]


def weight_map_reference(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0, border_width: int = 1):
    """Straightforward reference: one full-image distance transform per object (slow; for tests
    and the benchmark only)."""
    instances = np.asarray(instances)
    target = binary_target(instances, border_width)
    weights = balanced_class_weights(target, 2)[target]
    labels = [i for i in np.unique(instances) if i > 0]
    if len(labels) >= 2:
        dists = np.sort(np.stack([ndimage.distance_transform_edt(instances != i) for i in labels]), axis=0)
        border = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2.0 * sigma**2))
        weights = weights + np.where(target == 0, border, 0.0)
    return target, weights.astype(np.float32)
