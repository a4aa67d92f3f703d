"""Objects from the U-Net's output: one label per cell or nucleus (0 = background, 1..N objects).

The network is trained to leave 1-2 px separation borders between touching objects (the weight
map's purpose, paper Fig. 3), so connected components of its object class are the objects, but
each is short of the border pixels it lost to a neighbour. :func:`instances_from_probabilities`
therefore hands those gap pixels back: a background pixel within ``gap`` px of two or more objects
goes to the nearest one. Objects' outer edges towards real background are left as predicted.
Cells are 4-connected, as in :mod:`keras_unet.metrics`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from keras_unet.errors import DataError, SettingsError
from keras_unet.weights import instances_from_binary

MAX_LABEL = np.iinfo(np.uint16).max  # label images are written as uint16 TIFF


def foreground(probabilities: np.ndarray, object_class: int = 1, threshold: float | None = None) -> np.ndarray:
    """``(H, W)`` bool: pixels of ``object_class`` (argmax, or p >= ``threshold``)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[-1] < 2:
        raise DataError(f"probabilities must be (H, W, classes) with >= 2 classes, got shape {probabilities.shape}")
    if not 1 <= object_class < probabilities.shape[-1]:
        raise SettingsError(f"object class {object_class} is not among classes 1..{probabilities.shape[-1] - 1}")
    if threshold is not None:
        return probabilities[..., object_class] >= threshold
    return np.argmax(probabilities, axis=-1) == object_class


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill each object's holes with its own label (a hole enclosed by several objects stays)."""
    out = labels.copy()
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = ndimage.binary_fill_holes(labels[box] == label)
        region = out[box]
        region[inside & (region == 0)] = label
    return out


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Objects of fewer than ``min_size`` px removed, the rest renumbered 1..N."""
    if min_size < 0:
        raise SettingsError(f"--min-size must be >= 0 px, got {min_size}")
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    new = np.zeros(sizes.size, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1)
    return new[labels]


def give_back_borders(labels: np.ndarray, gap: int = 2) -> np.ndarray:
    """Background pixels within ``gap`` px of two or more objects go to the nearest object, so the
    separation borders the network leaves between touching objects do not erode them."""
    if gap <= 0 or labels.max() == 0:
        return labels
    size = 2 * gap + 1
    highest = ndimage.maximum_filter(labels, size=size, mode="constant")
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, labels.max() + 1), size=size, mode="constant",
                                    cval=labels.max() + 1)
    between = (labels == 0) & (highest > 0) & (lowest <= labels.max()) & (highest != lowest)
    _, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    out = labels.copy()
    out[between] = labels[rows[between], cols[between]]
    return out


def split_touching(labels: np.ndarray, mask: np.ndarray, min_distance: int = 4) -> np.ndarray:
    """Split objects that still touch: watershed of the distance transform, seeded by its peaks
    (at least ``min_distance`` px apart). scikit-image's, a well-kept implementation."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=labels, exclude_border=False)
    markers = np.zeros(labels.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def instances_from_probabilities(probabilities: np.ndarray, object_class: int = 1, threshold: float | None = None,
                                 min_size: int = 0, split: str | None = None, gap: int = 2) -> np.ndarray:
    """Instance labels ``(H, W)`` uint16 (0 = background) of one class from ``(H, W, classes)``.

    Steps: the class's pixels (argmax or p >= ``threshold``), 4-connected components, holes
    filled, objects under ``min_size`` px removed, separation borders given back
    (:func:`give_back_borders`); ``split="watershed"`` also splits objects that still touch.
    """
    if split not in (None, "none", "watershed"):
        raise SettingsError(f"split must be 'none' or 'watershed', got {split!r}")
    mask = foreground(probabilities, object_class, threshold)
    labels = instances_from_binary(mask)
    if split == "watershed":
        labels = split_touching(labels, mask)
    labels = remove_small(fill_holes(labels), min_size)
    labels = give_back_borders(labels, gap)
    return as_uint16(labels)


def as_uint16(labels: np.ndarray, source: str = "label image") -> np.ndarray:
    """``labels`` as uint16, or a :class:`DataError` if it holds more than 65,535 objects."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise DataError(f"{source}: instance labels must be integers, got {labels.dtype}")
    if labels.size and int(labels.max()) > MAX_LABEL:
        raise DataError(f"{source}: {int(labels.max())} objects do not fit a 16-bit label image (at most {MAX_LABEL})")
    return labels.astype(np.uint16)
