"""The kind of a nuclei image by its background: ``dark`` (fluorescence: bright nuclei on black) or
``light`` (stained tissue and brightfield: dark nuclei on a light background), the rule by which a
shipped model hands an image to its partner for the other kind (StarDist ships
``2D_versatile_fluo`` and ``2D_versatile_he`` for the same reason, and leaves the choice to the
user).

The background level is where the image's median lies between its 1st and 99.8th percentiles of
luminance (the percentiles of :mod:`keras_unet.normalize`): where most of an image is background,
the median is a background pixel. Relative, so it holds for any bit depth and exposure. Measured
on the 531 dsb2018-train images: fluorescence 0.00-0.19, H&E and other stains 0.43-0.93,
brightfield 0.82-0.95; coelho2009's 97 fluorescence images are all dark by the rule. Bright cells that cover
half the image (the synthetic demo cells: 0.24-0.32 over 40 samples) lift the median, so between
:data:`UNSURE` and :data:`LIGHT` the tail decides: bright objects pull the mean above the median
(the demo cells: +0.02 to +0.06 of the range), dark ones below it (brightfield: -0.13 to -0.08).
"""
from __future__ import annotations

import numpy as np

from keras_unet.normalize import DEFAULT_PERCENTILES

LIGHT = 0.35  # background level from which an image is light (see the measurements above)
UNSURE = 0.2  # from here to LIGHT, light only where its objects are darker than the median
KINDS = ("dark", "light")
# percentiles of a big image from every n-th pixel: 1 Mpx is plenty for a median and two tails
SAMPLED_PIXELS = 1 << 20


def _levels(image: np.ndarray) -> tuple[float, float]:
    """``(background level, skew)``: (median - p1) / (p99.8 - p1) and (mean - median) / (p99.8 - p1)
    of the luminance (the channels' mean); ``(0, 0)`` for a constant or empty image."""
    image = np.asarray(image)
    luminance = image.mean(axis=-1) if image.ndim == 3 else image
    flat = luminance.ravel()
    flat = flat[:: max(1, flat.size // SAMPLED_PIXELS)].astype(np.float64)
    if flat.size == 0:
        return 0.0, 0.0
    low, median, high = np.percentile(flat, (DEFAULT_PERCENTILES[0], 50.0, DEFAULT_PERCENTILES[1]))
    if high <= low:
        return 0.0, 0.0
    return float((median - low) / (high - low)), float((flat.mean() - median) / (high - low))


# px: a big image's kind is read from a 3 x 3 grid of windows this size spread over it (a few
# chunks of an OME-Zarr store or a TIFF, not the whole image)
WINDOW = 512


def sampled(data, grid: int = 3, window: int = WINDOW) -> np.ndarray:
    """``(h, grid * grid * w, C)``: ``grid`` x ``grid`` windows of ``data`` (``(H, W, C)``, any
    array that reads what is sliced: numpy, dask, zarr) spread evenly over it, side by side, for
    :func:`kind`; the whole of an image no bigger than the windows together."""
    height, width = data.shape[:2]
    if height * width <= grid * grid * window * window:
        return np.asarray(data)
    h, w = min(window, height), min(window, width)
    rows = np.linspace(0, height - h, grid).astype(int)
    cols = np.linspace(0, width - w, grid).astype(int)
    return np.concatenate([np.asarray(data[r:r + h, c:c + w]) for r in rows for c in cols], axis=1)


def background_level(image: np.ndarray) -> float:
    """``(H, W)`` or ``(H, W, C)`` -> 0..1: where the median lies between p1 and p99.8 of the
    luminance (0 for a constant image)."""
    return _levels(image)[0]


def kind(image: np.ndarray) -> str:
    """``light`` (stained, brightfield) or ``dark`` (fluorescence): see the module's measurements."""
    level, skew = _levels(image)
    return "light" if level >= LIGHT or (level >= UNSURE and skew < 0) else "dark"
