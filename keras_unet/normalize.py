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
    """One image ``(H, W)`` or ``(H, W, C)`` -> float32 ``(H, W, C)`` by :func:`percentile_normalize`."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    return np.asarray(percentile_normalize(image[None], percentiles))[0].astype(np.float32, copy=False)


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

