"""Data augmentation of the paper in TensorFlow ops only (no numpy, no py_function).

Every function is a pure function of its inputs and a stateless seed (a ``(2,)`` int tensor), so a
sample is reproducible and the ops run on a CPU or GPU, in tf.data or inside a SavedModel.

One coordinate map per sample carries every geometric change - shift (the tile position), flips,
rotation and the elastic deformation - and is applied to the image (bilinear), the label map
(nearest) and the weight map (bilinear) alike. Coordinates outside the image are mirrored
(numpy's ``"reflect"``), which is the paper's mirror padding of border tiles.

Elastic deformation (paper, sec. 3.1): displacement vectors on a coarse 3x3 grid drawn from
N(0, 10 px), upsampled to one vector per pixel by bicubic interpolation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from keras_unet.sizes import mirror_index  # the one mirror rule, shared with the export


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings; the defaults follow the paper where it gives a value."""

    elastic_sigma: float = 10.0  # px, std of the coarse-grid displacements (paper)
    elastic_grid: int = 3  # coarse grid points per axis (paper)
    rotation: float = 180.0  # degrees, uniform in [-rotation, rotation]
    flip: bool = True  # random up-down and left-right flips
    shift: float = 0.0  # px, extra uniform jitter of the tile centre (the tile position already shifts)
    # Gray values, in units of the input range (after the model's normalisation): offsets, contrast
    # and gamma as wide as between the images of one real collection (coelho2009's ic100 and gnf
    # differ more: per-image normalisation takes out their scale and offset).
    brightness: float = 0.1  # std of an additive offset
    contrast: float = 0.3  # contrast factor uniform in [1 - c, 1 + c]
    # Intensity scale about the range's low end (the background after percentile normalisation),
    # log-uniform between the factors of scale_range, for a scale_probability of the samples: a few
    # bright pixels above the 99.8th percentile (debris, a mitotic cell) leave an image's nuclei at
    # a fraction of the range (coelho2009 gnf_dna-11, ic100_dna-02: 0.065 instead of ~0.35). A
    # range down to 0.08 on half the samples trained worse in 13 CPU minutes (the last epoch's object
    # F1 on ic100_dna-05 and -10: 0.49 and 0.36, against 0.86 and 0.92 with this one), so the
    # default stays within a factor e.
    scale_range: tuple = (1 / math.e, math.e)
    scale_probability: float = 1.0
    gamma: float = 0.3  # gamma = exp(N(0, gamma))
    noise: float = 0.02  # std of additive Gaussian noise, in units of the input range
    # Stain jitter of colour images (H&E and other stains), off by default (the paper's images are
    # gray): each stain's amount scaled by U(1 - s, 1 + s) and shifted by U(-s, s) optical density
    # (Tellez et al. 2018, "HED jitter"; 0.05 is their light setting). Gray images are left gray.
    stain: float = 0.0
    # Object size: each tile sampled at a scale log-uniform in [1 / zoom, zoom] (source px per tile
    # px), so a model meets nuclei larger and smaller than its training images hold; 1 = off (the
    # paper does not zoom). Labels and weight maps are sampled at the same places, so a 1 px border
    # may thin out under zoom > 1: moderate factors (1.25-1.5).
    zoom: float = 1.0

    @classmethod
    def none(cls) -> "AugmentParams":
        """No augmentation at all (the identity)."""
        return cls(elastic_sigma=0.0, rotation=0.0, flip=False, shift=0.0, brightness=0.0, contrast=0.0,
                   scale_probability=0.0, gamma=0.0, noise=0.0)


def split_seed(seed, n: int):
    """``n`` independent stateless seeds ``(n, 2)`` from one."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n)


def cubic_weights(n_out: int, n_in: int):
    """Bicubic (Keys, a = -0.5) interpolation matrix ``(n_out, n_in)`` float32.

    Grid node 0 sits on output pixel 0 and node ``n_in - 1`` on the last output pixel; nodes
    beyond the grid are clamped to the edge ones. Multiplying a coarse field by it upsamples it.
    """
    n_out = tf.convert_to_tensor(n_out, tf.int32)
    position = tf.cast(tf.range(n_out), tf.float32) * (n_in - 1) / tf.maximum(tf.cast(n_out - 1, tf.float32), 1.0)
    left = tf.floor(position)
    matrix = tf.zeros([n_out, n_in], tf.float32)
    for offset in (-1, 0, 1, 2):
        node = left + offset
        t = tf.abs(position - node)
        w = tf.where(
            t <= 1.0,
            1.5 * t**3 - 2.5 * t**2 + 1.0,
            tf.where(t < 2.0, -0.5 * t**3 + 2.5 * t**2 - 4.0 * t + 2.0, 0.0),
        )
        index = tf.clip_by_value(tf.cast(node, tf.int32), 0, n_in - 1)
        matrix += tf.one_hot(index, n_in) * w[:, None]
    return matrix


def elastic_field(seed, height, width, sigma: float = 10.0, grid: int = 3):
    """Per-pixel displacements ``(height, width, 2)`` float32 (px, (dy, dx)) of the paper.

    The grid's draws are cut at 4 sigma (1 in 16,000 draws), so that a tile's source pixels lie
    within :func:`window_radius` of its centre: what the device-side pipeline relies on.
    """
    coarse = tf.clip_by_value(tf.random.stateless_normal([grid, grid, 2], seed=seed), -4.0, 4.0) * sigma
    rows, cols = cubic_weights(height, grid), cubic_weights(width, grid)
    return tf.einsum("ij,jkc,lk->ilc", rows, coarse, cols)


def tile_coordinates(seed, size, centre, params: AugmentParams):
    """Source coordinates ``(ys, xs)``, each ``(size, size)`` float32, for one augmented tile.

    ``centre`` ``(2,)`` is the source position (px) of the tile centre; pixel centres are at
    integer coordinates. With :meth:`AugmentParams.none` the result is the plain window.
    """
    seeds = split_seed(seed, 4)
    offsets = tf.cast(tf.range(size), tf.float32) - (tf.cast(size, tf.float32) - 1.0) / 2.0
    dy, dx = tf.meshgrid(offsets, offsets, indexing="ij")
    if params.flip:
        flips = tf.where(tf.random.stateless_uniform([2], seeds[0]) < 0.5, -1.0, 1.0)
        dy, dx = dy * flips[0], dx * flips[1]
    if params.rotation:
        angle = tf.random.stateless_uniform([], seeds[1], -params.rotation, params.rotation) * (math.pi / 180.0)
        cos, sin = tf.cos(angle), tf.sin(angle)
        dy, dx = cos * dy - sin * dx, sin * dy + cos * dx
    if params.zoom != 1.0:  # its own stream (fold-in): the other draws stay those of earlier versions
        log_zoom = math.log(params.zoom)
        factor = tf.exp(tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(
            tf.cast(seed, tf.int64), 7), -log_zoom, log_zoom))
        dy, dx = dy * factor, dx * factor
    if params.elastic_sigma:
        field = elastic_field(seeds[2], size, size, params.elastic_sigma, params.elastic_grid)
        dy, dx = dy + field[..., 0], dx + field[..., 1]
    centre = tf.cast(centre, tf.float32)
    if params.shift:
        centre += tf.random.stateless_uniform([2], seeds[3], -params.shift, params.shift)
    return dy + centre[0], dx + centre[1]



def _gather(image, rows, cols, origin=None):
    """``image[rows, cols]`` with mirrored indices; or, with ``origin`` ``(2,)``, from a window
    cut by :func:`cut_window` at that origin (already mirrored, and holding every index asked)."""
    if origin is not None:
        return tf.gather_nd(image, tf.stack([rows - origin[0], cols - origin[1]], axis=-1))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    return tf.gather_nd(image, tf.stack([mirror_index(rows, height), mirror_index(cols, width)], axis=-1))


def sample_bilinear(image, ys, xs, origin=None):
    """Bilinear samples of ``image`` ``(H, W, C)`` at ``(ys, xs)`` ``(h, w)`` -> ``(h, w, C)``;
    ``origin``: ``image`` is a window of the source at that offset (see :func:`_gather`).

    Hand-written with four gathers rather than ``keras.ops.image.map_coordinates``, which would
    also interpolate along the channel axis of a multi-channel image (8 gathers instead of 4). The
    rows and columns are mirrored once each (not once per corner) and gathered from the flat image:
    the same values, 25% less time per training tile.
    """
    image = tf.cast(image, tf.float32)
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if origin is not None:  # a window already mirrored that holds every index asked
        rows, cols = (y0 - origin[0], y0 + 1 - origin[0]), (x0 - origin[1], x0 + 1 - origin[1])
    else:
        rows = (mirror_index(y0, height), mirror_index(y0 + 1, height))
        cols = (mirror_index(x0, width), mirror_index(x0 + 1, width))
    flat = tf.reshape(image, [-1, tf.shape(image)[-1]])
    top, bottom = (tf.gather(flat, row * width + cols[0]) * (1 - wx) + tf.gather(flat, row * width + cols[1]) * wx
                   for row in rows)
    return top * (1 - wy) + bottom * wy


def sample_nearest(image, ys, xs, origin=None):
    """Nearest-neighbour samples (for label maps): values only from ``image``."""
    return _gather(image, tf.cast(tf.round(ys), tf.int32), tf.cast(tf.round(xs), tf.int32), origin)


def gray_values(image, seed, params: AugmentParams, value_range=(0.0, 1.0)):
    """Random contrast, brightness, gamma, scale and noise on ``image`` ``(h, w, C)`` float32.

    Works in units of ``value_range`` (the raw range the model normalises) and returns raw values.
    """
    low, high = value_range
    x = (tf.cast(image, tf.float32) - low) / (high - low)
    seeds = split_seed(seed, 4)
    if params.contrast:
        factor = tf.random.stateless_uniform([], seeds[0], 1.0 - params.contrast, 1.0 + params.contrast)
        mean = tf.reduce_mean(x)
        x = (x - mean) * factor + mean
    if params.brightness:
        x += tf.random.stateless_normal([], seeds[1]) * params.brightness
    if params.gamma:
        # Negative values to 0 (no real power of them); values over 1 (beyond a percentile) are kept.
        # x ** g as exp(g log x) (0 stays 0: g > 0): TF's pow is 4x slower on a training tile.
        gamma = tf.exp(tf.random.stateless_normal([], seeds[2]) * params.gamma)
        x = tf.exp(gamma * tf.math.log(tf.maximum(x, 0.0)))
    if params.scale_probability:  # its own streams (fold-in): the other draws stay those of earlier versions
        scale_seeds = split_seed(tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 5), 2)
        log_low, log_high = (math.log(v) for v in params.scale_range)
        factor = tf.exp(tf.random.stateless_uniform([], scale_seeds[0], log_low, log_high))
        x *= tf.where(tf.random.stateless_uniform([], scale_seeds[1]) < params.scale_probability, factor, 1.0)
    if params.noise:
        # the detector's noise, one draw per pixel for every channel: a gray image (R = G = B, as
        # DSB2018's come) stays gray as it is at prediction, and a third of the draws (2 ms a tile)
        x += tf.random.stateless_normal(tf.shape(x)[:-1], seeds[3])[..., None] * params.noise
    return x * (high - low) + low


# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB; RGB optical densities), the
# colour deconvolution scikit-image's rgb2hed uses; tests hold stain_adjusted to its hed2rgb.
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
OD_FLOOR = 1e-6  # the smallest transmitted fraction (a black pixel's optical density is finite)
COLOUR_SPREAD = 0.02  # a pixel whose channels differ by more than this (of the range) makes an image colour


def stain_adjusted(rgb, alpha, beta):
    """``rgb (..., 3)`` transmitted fractions in [0, 1] with each stain's amount (haematoxylin,
    eosin, DAB; natural-log optical density) scaled by ``alpha (3,)`` and shifted by ``beta (3,)``:
    ``hed2rgb(rgb2hed(rgb) * alpha + beta / -ln(OD_FLOOR))`` of scikit-image, in TF ops."""
    to_rgb = tf.constant(RGB_FROM_HED, tf.float32)
    density = -tf.math.log(tf.maximum(tf.cast(rgb, tf.float32), OD_FLOOR))
    stains = tf.maximum(tf.tensordot(density, tf.linalg.inv(to_rgb), 1), 0.0) * alpha + beta
    return tf.clip_by_value(tf.exp(-tf.tensordot(stains, to_rgb, 1)), 0.0, 1.0)


def stain_jitter(image, seed, strength: float, value_range=(0.0, 255.0)):
    """A colour tile ``(h, w, 3)`` of raw values in ``value_range`` with its stains jittered
    (:func:`stain_adjusted`, alpha ~ U(1 - s, 1 + s), beta ~ U(-s, s) per stain); a gray one
    (R = G = B, as DSB2018's fluorescence images come) is returned as it is."""
    low, high = value_range
    seeds = split_seed(seed, 2)
    alpha = tf.random.stateless_uniform([3], seeds[0], 1.0 - strength, 1.0 + strength)
    beta = tf.random.stateless_uniform([3], seeds[1], -strength, strength)
    x = (tf.cast(image, tf.float32) - low) / (high - low)
    spread = tf.reduce_max(tf.reduce_max(x, axis=-1) - tf.reduce_min(x, axis=-1))
    jittered = stain_adjusted(tf.clip_by_value(x, 0.0, 1.0), alpha, beta) * (high - low) + low
    return tf.where(spread > COLOUR_SPREAD, jittered, tf.cast(image, tf.float32))


def tile_centre(seed, height, width, output_size: int):
    """Random source position ``(2,)`` float32 of a tile centre: the output tile inside the image
    where it fits (mirrored context comes from mirror_index). ``seed``: the sample's own seed."""
    seeds = split_seed(seed, 4)
    top = tf.random.stateless_uniform([], seeds[0], 0, tf.maximum(height - output_size, 0) + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(width - output_size, 0) + 1, dtype=tf.int32)
    return tf.cast(tf.stack([top, left]), tf.float32) + (output_size - 1) / 2.0


def augmented_tile(image, target, weights, seed, input_size: int, output_size: int,
                   params: AugmentParams = AugmentParams(), value_range=(0.0, 255.0)):
    """One training sample: a random, augmented tile of an image and its target.

    Args:
        image: ``(H, W, C)`` raw values; target: ``(H, W)`` class indices; weights: ``(H, W)``.
        seed: ``(2,)`` int stateless seed.
        input_size, output_size: the network's tile sizes (px); the target is the centre part.
    Returns:
        ``image (S, S, C)`` float32 raw values and ``y_true (O, O, 2)`` float32
        ``[class index, weight]`` (the layout of :mod:`keras_unet.losses`).
    """
    centre = tile_centre(seed, tf.shape(target)[0], tf.shape(target)[1], output_size)
    return _augment(image, target, weights, None, centre, seed, input_size, output_size, params, value_range)


def _augment(image, target, weights, origin, centre, seed, input_size, output_size, params, value_range):
    """The tile at ``centre``: from the whole image (``origin`` None) or from a window of it."""
    seeds = split_seed(seed, 4)
    ys, xs = tile_coordinates(seeds[2], input_size, centre, params)
    margin = (input_size - output_size) // 2
    centre_part = slice(margin, margin + output_size)
    ys_out, xs_out = ys[centre_part, centre_part], xs[centre_part, centre_part]
    tile = sample_bilinear(image, ys, xs, origin)
    if params.stain and image.shape[-1] == 3:  # its own stream (fold-in): the other draws stay as they were
        tile = stain_jitter(tile, tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 11), params.stain,
                            value_range)
    tile = gray_values(tile, seeds[3], params, value_range)
    labels = tf.cast(sample_nearest(target, ys_out, xs_out, origin), tf.float32)
    weight = sample_bilinear(weights[..., None], ys_out, xs_out, origin)[..., 0]
    return tile, tf.stack([labels, weight], axis=-1)


# -- Device-side augmentation -------------------------------------------------------------------
# On a GPU the host may not keep up with the training step. Then the host only cuts, per sample, a
# mirrored window around the tile centre large enough for any rotation, flip and deformation, and
# the same ops as above run on the accelerator on a batch of windows. Same seed, same samples:
# the window holds exactly the (mirrored) source pixels the whole-image sampler would read.


def window_radius(input_size: int, params: AugmentParams) -> int:
    """Half-side (px) of a window holding every source pixel of a tile: the rotated tile's corner
    (sqrt 2 x half the tile, x the largest zoom), the deformation (4 sigma cut, x 1.25**2: the
    bicubic kernel's weights sum to at most 1.25 in absolute value per axis), the shift, and 2 px
    for the bilinear neighbours."""
    reach = (input_size - 1) / 2.0 * (math.sqrt(2.0) if params.rotation else 1.0) * max(params.zoom, 1.0)
    return int(math.ceil(reach + 4.0 * 1.25**2 * params.elastic_sigma + params.shift)) + 2


def cut_window(image, centre, radius: int):
    """``(window (2r + 2, 2r + 2, C), origin (2,) int32)``: the mirrored source around ``centre``."""
    origin = tf.cast(tf.floor(centre), tf.int32) - radius
    size = 2 * radius + 2
    rows = mirror_index(origin[0] + tf.range(size), tf.shape(image)[0])
    cols = mirror_index(origin[1] + tf.range(size), tf.shape(image)[1])
    return tf.gather(tf.gather(image, rows), cols, axis=1), origin


def sample_window(image, target, weights, seed, input_size: int, output_size: int, params: AugmentParams):
    """Host side: the sample of ``seed`` as ``(image window, target window, weight window, origin,
    centre)``, for :func:`augment_windows`."""
    centre = tile_centre(seed, tf.shape(target)[0], tf.shape(target)[1], output_size)
    radius = window_radius(input_size, params)
    image_window, origin = cut_window(image, centre, radius)
    target_window, _ = cut_window(target, centre, radius)
    weight_window, _ = cut_window(weights, centre, radius)
    return image_window, target_window, weight_window, origin, centre


def augment_windows(windows, seeds, input_size: int, output_size: int, params: AugmentParams = AugmentParams(),
                    value_range=(0.0, 255.0)):
    """Device side: a batch of :func:`sample_window` outputs (each with a leading batch axis) and
    their seeds ``(B, 2)`` -> ``(tiles (B, S, S, C), y_true (B, O, O, 2))``, equal to
    :func:`augmented_tile` of each sample."""
    image, target, weights, origin, centre = windows

    def one(args):
        return _augment(*args, input_size, output_size, params, value_range)

    channels = image.shape[-1]
    return tf.map_fn(one, (image, target, weights, origin, centre, seeds),
                     fn_output_signature=(tf.TensorSpec([input_size, input_size, channels], tf.float32),
                                          tf.TensorSpec([output_size, output_size, 2], tf.float32)))
