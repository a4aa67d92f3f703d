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
# How touching objects are split: the one place the names are defined (the CLI, the widget, the
# search and the block-by-block path take them from here)
SPLITS = ("none", "watershed", "boundary")


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


FOUR_NEIGHBOURS = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def _footprint(offsets) -> np.ndarray:
    """The window of ``offsets`` ``(dy, dx)`` as a boolean footprint, its centre included."""
    gap = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    footprint = np.zeros((2 * gap + 1, 2 * gap + 1), bool)
    footprint[gap, gap] = True
    for dy, dx in offsets:
        footprint[gap + dy, gap + dx] = True
    return footprint


def _neighbour_extremes(labels: np.ndarray, offsets):
    """``(highest, lowest, above)``: per pixel, the highest label and the lowest nonzero one
    (``above`` = max + 1 where none) at ``offsets`` ``(dy, dx)`` (0 beyond the image).

    The pixel itself is in the window too: every caller asks only about background pixels (0),
    where it changes neither extreme. scipy's rank filters, not one shifted copy of the image per
    offset (24 for a 2 px gap): 4-5x faster on DSB2018 images. :func:`_neighbour_extremes_tf` is
    its twin."""
    footprint = _footprint(offsets)
    # a full square window (the borders' gap) as its separable size: two 1-D passes, not 25 taps
    window = {"size": footprint.shape} if footprint.all() else {"footprint": footprint}
    above = int(labels.max()) + 1
    highest = ndimage.maximum_filter(labels, mode="constant", cval=0, **window)
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, above), mode="constant", cval=above, **window)
    return highest, lowest, above


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """A hole - a 4-connected background region off the image border whose neighbours all belong
    to one object - gets that object's label; a region enclosed by several objects stays.

    Per region, not per object, so :func:`instances_tf` can do the same in tensor ops.
    """
    background, n = ndimage.label(labels == 0)
    if n == 0:
        return labels
    highest, lowest, above = _neighbour_extremes(labels, FOUR_NEIGHBOURS)
    # A region's extremes come from its pixels next to an object; the others (highest 0, lowest
    # ``above``) change neither, so only those few pixels are reduced.
    touching = (background > 0) & (highest > 0)
    regions = background[touching]
    region_high = np.zeros(n + 1, np.int64)
    np.maximum.at(region_high, regions, highest[touching])
    region_low = np.full(n + 1, above, np.int64)
    np.minimum.at(region_low, regions, lowest[touching])
    edge = np.zeros(n + 1, bool)
    edge[np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))] = True
    fill = np.zeros(n + 1, labels.dtype)
    enclosed = (region_high == region_low) & (region_high > 0) & ~edge
    fill[enclosed] = region_high[enclosed]
    return np.where(background > 0, fill[background], labels)


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


def object_areas(targets, object_class: int = 1) -> list[int]:
    """Areas (px) of the class ``object_class`` components of the targets, all images together."""
    areas = []
    for target in targets:
        labels = instances_from_binary(np.asarray(target) == object_class)
        areas.extend(np.bincount(labels.ravel())[1:].tolist())
    return areas


def typical_min_size(targets, object_class: int = 1, areas: list | None = None) -> int:
    """A data-driven ``min_size`` (px): a quarter of the 5th percentile of the true objects' areas
    (class ``object_class`` components of the training targets, or their ``areas`` already
    counted by :func:`object_areas`), so specks of noise are dropped and the smallest real objects,
    partial ones at image edges included, are kept; 0 without objects."""
    areas = object_areas(targets, object_class) if areas is None else areas
    return int(0.25 * np.percentile(areas, 5)) if areas else 0


def typical_diameter(targets, object_class: int = 1, areas: list | None = None) -> float | None:
    """The median equivalent diameter (px, ``sqrt(4 area / pi)``) of the training objects (or of
    ``areas`` already counted): the object size a model learned, which ``predict --diameter``
    rescales other images to. None without objects."""
    areas = object_areas(targets, object_class) if areas is None else areas
    return round(float(np.median(np.sqrt(4 * np.asarray(areas) / np.pi))), 1) if areas else None


def window_offsets(gap: int) -> list[tuple[int, int]]:
    """``(dy, dx)`` within ``gap`` px (Chebyshev), nearest first; ties in a fixed order (up, then left)."""
    return sorted(((dy, dx) for dy in range(-gap, gap + 1) for dx in range(-gap, gap + 1) if dy or dx),
                  key=lambda o: (o[0] ** 2 + o[1] ** 2, o[0], o[1]))


def give_back_borders(labels: np.ndarray, gap: int = 2, into: np.ndarray | None = None) -> np.ndarray:
    """Background pixels within ``gap`` px of two or more objects go to the nearest object (ties:
    :func:`window_offsets`' order), so the separation borders the network leaves between touching
    objects do not erode them. Objects' edges towards real background stay as predicted.
    With ``into`` ``(H, W)`` bool: every pixel of ``into`` within ``gap`` px of an object goes to
    the nearest (a three-class model's boundary rims, grown back onto their interiors)."""
    if gap <= 0 or labels.max() == 0:
        return labels
    offsets = window_offsets(gap)
    highest, lowest, above = _neighbour_extremes(labels, offsets)
    if into is not None:
        between = (labels == 0) & (highest > 0) & into
    else:
        between = (labels == 0) & (highest > 0) & (lowest < above) & (highest != lowest)
    # the nearest object of each such pixel, offsets nearest first (only these pixels: a few % of the image)
    rows, cols = np.nonzero(between)
    padded = np.pad(labels, gap)
    nearest = np.zeros(rows.size, labels.dtype)
    for dy, dx in reversed(offsets):  # the nearest offset written last wins
        view = padded[rows + gap + dy, cols + gap + dx]
        nearest = np.where(view > 0, view, nearest)
    out = labels.copy()
    out[rows, cols] = nearest
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
                                 min_size: int = 0, split: str | None = None, gap: int = 2,
                                 dtype=np.uint16) -> np.ndarray:
    """Instance labels ``(H, W)`` (0 = background) of one class from ``(H, W, classes)``: uint16
    for a label image to write (a :class:`DataError` past 65,535 objects), or ``dtype=np.int32``
    where they are only scored (a half-trained model's noise can make 90,000 specks, which must
    score 0, not stop the run).

    Steps: the class's pixels (argmax or p >= ``threshold``), 4-connected components, holes
    filled, objects under ``min_size`` px removed, separation borders given back
    (:func:`give_back_borders`); ``split="watershed"`` also splits objects that still touch.
    ``split="boundary"`` is for a three-class model (background, interior, boundary): the
    interiors are the objects, each grown over the non-background pixels within ``gap`` px.
    """
    if split not in (None, *SPLITS):
        raise SettingsError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "boundary" and np.shape(probabilities)[-1] != 3:
        raise SettingsError(f"split 'boundary' is for a three-class model (background, interior, boundary); this "
                            f"one has {np.shape(probabilities)[-1]} classes: use none or watershed")
    mask = foreground(probabilities, object_class, threshold)
    labels = instances_from_binary(mask)
    if split == "watershed":
        labels = split_touching(labels, mask)
    labels = remove_small(fill_holes(labels), min_size)
    if split == "boundary":
        labels = give_back_borders(labels, gap, into=np.argmax(probabilities, axis=-1) != 0)
    else:
        labels = give_back_borders(labels, gap)
    return as_uint16(labels) if np.dtype(dtype) == np.uint16 else labels.astype(dtype)


def as_uint16(labels: np.ndarray, source: str = "label image") -> np.ndarray:
    """``labels`` as uint16, or a :class:`DataError` if it holds more than 65,535 objects."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise DataError(f"{source}: instance labels must be integers, got {labels.dtype}")
    if labels.size and int(labels.max()) > MAX_LABEL:
        raise DataError(f"{source}: {int(labels.max())} objects do not fit a 16-bit label image (at most {MAX_LABEL})")
    return labels.astype(np.uint16)


# -- The same in TensorFlow ops, for the SavedModel's ``instances`` signature ---------------------
# A TF Serving client gets objects without post-processing code. Each step mirrors its numpy twin
# above rule for rule (tests hold the two equal); labels are pixel indices until the renumbering.


def _components_tf(mask):
    """4-connected components of ``mask`` ``(H, W)`` bool: each pixel holds 1 + the raster index of
    its component's first pixel (0 outside). Min-label propagation with pointer jumping (each step
    also takes the label of the pixel a label points to), to a fixed point in a ``tf.while_loop``."""
    import tensorflow as tf

    height, width = tf.shape(mask)[0], tf.shape(mask)[1]
    outside = height * width + 1
    start = tf.where(mask, tf.reshape(tf.range(1, height * width + 1), [height, width]), outside)

    def step(labels):
        padded = tf.pad(labels, [[1, 1], [1, 1]], constant_values=outside)
        neighbours = tf.minimum(tf.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
                                tf.minimum(padded[1:-1, :-2], padded[1:-1, 2:]))
        flat = tf.reshape(tf.where(mask, tf.minimum(labels, neighbours), outside), [-1])
        jumped = tf.gather(tf.concat([flat, [outside]], 0), tf.minimum(flat, outside) - 1)
        return tf.reshape(tf.minimum(flat, jumped), [height, width])

    def changing(labels, previous):
        return tf.reduce_any(tf.not_equal(labels, previous))

    labels, _ = tf.while_loop(changing, lambda labels, previous: (step(labels), labels), (step(start), start))
    return tf.where(mask, labels, 0)


def _neighbour_extremes_tf(labels, offsets):
    """Per pixel, the highest and the lowest nonzero label at ``offsets`` (``above`` where none)."""
    import tensorflow as tf

    gap = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    height, width = tf.shape(labels)[0], tf.shape(labels)[1]
    padded = tf.pad(labels, [[gap, gap], [gap, gap]])
    views = [padded[gap + dy : gap + dy + height, gap + dx : gap + dx + width] for dy, dx in offsets]
    above = tf.reduce_max(labels) + 1
    highest = tf.reduce_max(tf.stack(views), axis=0)
    lowest = tf.reduce_min(tf.stack([tf.where(v > 0, v, above) for v in views]), axis=0)
    return views, highest, lowest, above


def _fill_holes_tf(labels):
    import tensorflow as tf

    background = _components_tf(tf.equal(labels, 0))
    _, highest, lowest, above = _neighbour_extremes_tf(labels, FOUR_NEIGHBOURS)
    segments = tf.size(labels) + 2
    region_high = tf.math.unsorted_segment_max(tf.reshape(highest, [-1]), tf.reshape(background, [-1]), segments)
    region_low = tf.math.unsorted_segment_min(tf.reshape(lowest, [-1]), tf.reshape(background, [-1]), segments)
    edges = tf.concat([background[0], background[-1], background[:, 0], background[:, -1]], 0)
    on_edge = tf.math.unsorted_segment_max(tf.ones_like(edges), edges, segments) > 0
    enclosed = tf.equal(region_high, region_low) & (region_high > 0) & ~on_edge
    fill = tf.where(enclosed, region_high, 0)
    return tf.where(background > 0, tf.gather(fill, background), labels)


def _remove_small_tf(labels, min_size: int):
    """Objects under ``min_size`` px dropped; the rest numbered 1..N in raster order of their first pixel."""
    import tensorflow as tf

    segments = tf.size(labels) + 2
    flat = tf.reshape(labels, [-1])
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, segments)
    keep = (sizes >= max(min_size, 1)) & (tf.range(segments) > 0)
    number = tf.where(keep, tf.cumsum(tf.cast(keep, tf.int32)), 0)
    return tf.gather(number, labels)


def _give_back_borders_tf(labels, gap: int):
    import tensorflow as tf

    if gap <= 0:
        return labels
    views, highest, lowest, above = _neighbour_extremes_tf(labels, window_offsets(gap))
    nearest = tf.zeros_like(labels)
    for view in reversed(views):
        nearest = tf.where(view > 0, view, nearest)
    between = tf.equal(labels, 0) & (highest > 0) & (lowest < above) & tf.not_equal(highest, lowest)
    return tf.where(between, nearest, labels)


def instances_tf(probabilities, object_class: int = 1, min_size: int = 0, gap: int = 2, threshold: float | None = None):
    """:func:`instances_from_probabilities` (argmax or p >= ``threshold``, no split) in TF ops:
    ``(H, W, classes)`` -> ``(H, W)`` int32 labels, equal to the numpy result."""
    import tensorflow as tf

    if threshold is not None:
        mask = probabilities[..., object_class] >= threshold
    else:
        mask = tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), object_class)
    labels = _remove_small_tf(_fill_holes_tf(_components_tf(mask)), min_size)
    return _give_back_borders_tf(labels, gap)
