"""Per-image intensity normalisation by percentiles, in Keras ops (so TF graphs, TFLite and ONNX
carry it) and one function for training, prediction and every export.

``x' = (x - p_low) / (p_high - p_low)`` per image and channel, with the percentiles over the
image's pixels (numpy's default linear interpolation). The percentiles (1 and 99.8 by default, as
CSBDeep/StarDist) make it robust to saturated and hot pixels; a dimmed or brightened copy of an
image normalises to the same values; a constant channel becomes 0. The network then sees the same
contrast in a dim and a bright image, which a fixed dtype range (0-255 -> 0-1) does not give.

Statistics belong to the whole image, not a tile: overlap-tile prediction normalises the image
once and tiles the result, so tiling does not change the answer (:mod:`keras_unet.tiling`).
"""
from __future__ import annotations

import numpy as np

DEFAULT_PERCENTILES = (1.0, 99.8)
# Smallest p_high - p_low divided by: a (near-)constant channel maps to ~0 instead of dividing by 0.
# Absolute, not relative, so a dimmed copy (x 0.15) of any image with some contrast normalises alike.
EPSILON = 1e-6


def check_percentiles(percentiles) -> tuple[float, float]:
    """``(low, high)`` as floats with ``0 <= low < high <= 100``, else ValueError saying so."""
    low, high = (float(p) for p in percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low:g} and {high:g} (e.g. 1 99.8)")
    return low, high


def percentile_normalize(images, percentiles=DEFAULT_PERCENTILES):
    """``(batch, H, W, C)`` -> float32 of the same shape, each image and channel scaled by its own
    percentiles. Works on Keras symbolic tensors (a model's layer) and on arrays (eager)."""
    from keras import ops

    low, high = check_percentiles(percentiles)
    x = ops.cast(images, "float32")
    q = ops.quantile(x, [low / 100.0, high / 100.0], axis=(1, 2), keepdims=True)  # (2, batch, 1, 1, C)
    return ops.divide(ops.subtract(x, q[0]), ops.maximum(ops.subtract(q[1], q[0]), EPSILON))


def normalize_image(image: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> np.ndarray:
    """One image ``(H, W)`` or ``(H, W, C)`` -> float32 ``(H, W, C)``: :func:`percentile_normalize`
    in numpy, with the exact percentiles of :func:`percentile_values` (from the histogram of an
    8- or 16-bit image): 3x faster than the Keras op on DSB2018 images, and the same function the
    blocks of a big image are normalised with (the two agree to float32 rounding, 1e-4)."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    return normalize_with(image, *percentile_values(image, percentiles))


def percentile_normalize_tf(images, percentiles=DEFAULT_PERCENTILES):
    """:func:`percentile_normalize` in float32 TensorFlow ops, for exported graphs.

    Keras' ``quantile`` computes its indices in float64, which TFLite has no kernels for, and its
    result loses the static channel count the converter needs; this one sorts each image's
    channel, interpolates linearly between neighbours (numpy's default) and keeps every static
    dim. The tests hold the two equal.
    """
    import tensorflow as tf

    low, high = check_percentiles(percentiles)
    x = tf.cast(images, tf.float32)
    shape = tf.shape(x)
    ordered = tf.sort(tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [shape[0], shape[3], -1]), axis=-1)  # (B, C, N)
    n = tf.shape(ordered)[-1]

    def at(q: float):  # (B, 1, 1, C)
        position = q * tf.cast(n - 1, tf.float32)
        below = tf.floor(position)
        i = tf.cast(below, tf.int32)
        value = ordered[:, :, i] + (ordered[:, :, tf.minimum(i + 1, n - 1)] - ordered[:, :, i]) * (position - below)
        return value[:, None, None, :]

    p_low = at(low / 100.0)
    return (x - p_low) / tf.maximum(at(high / 100.0) - p_low, EPSILON)



# -- Out of core: an image's percentiles read band by band, then any window normalised alike ------

BAND_ROWS = 1024  # rows read at a time: a 32,768 px wide uint16 band is 64 MB per channel
EXACT_FLOAT_VALUES = 2**28  # float images up to this many values get numpy's own percentiles


def percentile_values(image, percentiles=DEFAULT_PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``, each ``(C,)`` float64: the percentiles of each channel of an ``(H, W, C)``
    array-like (numpy, zarr, dask) as ``np.percentile`` gives them (linear interpolation), read in
    bands of :data:`BAND_ROWS` rows so an image larger than memory is never whole.

    8- and 16-bit integer images: exact, from their histograms (the order statistics numpy
    interpolates between are read off the cumulative counts). Float images: numpy's percentiles
    where they have at most :data:`EXACT_FLOAT_VALUES` values, else those of every 4th pixel of
    every 4th row (a 1/16 sample; said here because it is the one approximation).
    """
    low_q, high_q = check_percentiles(percentiles)
    height, channels = image.shape[0], image.shape[-1]
    dtype = np.dtype(image.dtype)
    bands = [slice(r, min(r + BAND_ROWS, height)) for r in range(0, height, BAND_ROWS)]
    if dtype.kind in "ui" and dtype.itemsize <= 2 or dtype.kind == "b":
        offset = int(np.iinfo(dtype).min) if dtype.kind == "i" else 0
        bins = 2 if dtype.kind == "b" else int(np.iinfo(dtype).max) - offset + 1
        counts = np.zeros((channels, bins), np.int64)
        for band in bands:
            values = np.asarray(image[band]).reshape(-1, channels).astype(np.int64) - offset
            for c in range(channels):
                counts[c] += np.bincount(values[:, c], minlength=bins)
        return tuple(np.array([_histogram_percentile(counts[c], q) + offset for c in range(channels)])
                     for q in (low_q, high_q))
    if image.shape[0] * image.shape[1] * channels <= EXACT_FLOAT_VALUES:
        whole = np.asarray(image[:]).reshape(-1, channels).astype(np.float64)
    else:
        whole = np.concatenate([np.asarray(image[band])[::4, ::4].reshape(-1, channels) for band in bands])
    q = np.percentile(whole.astype(np.float64), [low_q, high_q], axis=0)
    return q[0], q[1]


def _histogram_percentile(counts: np.ndarray, q: float) -> float:
    """numpy's linear-interpolation percentile ``q`` of the values whose histogram (value ->
    count, values 0..len-1) is ``counts``."""
    cumulative = np.cumsum(counts)
    position = q / 100.0 * (cumulative[-1] - 1)
    below = int(np.floor(position))
    value = lambda k: int(np.searchsorted(cumulative, k, side="right"))  # noqa: E731 (the k-th smallest)
    low = value(below)
    return float(low + (position - below) * (value(min(below + 1, cumulative[-1] - 1)) - low))


def normalize_with(image, low, high) -> np.ndarray:
    """``(H, W, C)`` float32: ``image`` scaled by given per-channel percentile values, as
    :func:`percentile_normalize` scales by the image's own (a window of a big image, by the
    whole image's :func:`percentile_values`)."""
    image = np.asarray(image, np.float32)
    image = image[..., None] if image.ndim == 2 else image
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return (image - low) / np.maximum(high - low, np.float32(EPSILON))
