"""Overlap-tile prediction (paper, Fig. 2) of images of any size.

The image is mirror-padded (numpy ``"reflect"``), cut into input tiles whose outputs tile the image,
the tiles go through the model in batches, and the outputs are stitched. Tile origins step by a
multiple of ``2**(depth-1)`` px so that every max-pool sees the same pixel pairs as in one
whole-image pass: with valid padding the stitched result equals :func:`predict_whole`.
(Consecutive outputs overlap by ``output mod 2**(depth-1)`` px, 4 px for the paper's network.)

With same padding the tiles keep a context margin and only their centres are used; the result is
then close to, not equal to, the whole-image prediction.
"""
from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from keras_unet import sizes
from keras_unet.converted import keras_of
from keras_unet.errors import SettingsError
from keras_unet.model import network_of, unet_config


def _padded(image: np.ndarray, plan: sizes.TilePlan, rows: int, cols: int) -> np.ndarray:
    """Mirror-pad ``image`` (H, W, C) so tiles with origins up to (rows, cols) fit."""
    height, width = image.shape[:2]
    bottom = rows + plan.input_size - plan.margin - height
    right = cols + plan.input_size - plan.margin - width
    return np.pad(image, ((plan.margin, max(bottom, 0)), (plan.margin, max(right, 0)), (0, 0)), mode="reflect")


_XLA_FORWARD = weakref.WeakKeyDictionary()


def forward_function(model, jit_compile: bool = False, engine: str = "tensorflow", precision: str = "float32"):
    """``tiles (B, S, S, C) -> probabilities`` as numpy through ``engine`` at ``precision``
    (resolved, :mod:`keras_unet.engines`); with ``jit_compile`` through XLA in float32 (compiled
    once per model and tile shape)."""
    if not jit_compile:
        from keras_unet.engines import forward_function as engine_forward

        return engine_forward(model, engine, precision)
    model = keras_of(model)
    if model not in _XLA_FORWARD:
        import tensorflow as tf

        _XLA_FORWARD[model] = tf.function(lambda tiles: model(tiles, training=False), jit_compile=True)
    compiled = _XLA_FORWARD[model]
    return lambda tiles: compiled(tiles).numpy()


def prediction_network(model):
    """What sees the tiles: a percentile-normalising model's nested network (the image is
    normalised whole before tiling), else the model itself; a converted model's converted
    network (:func:`keras_unet.model.network_of` knows each)."""
    return network_of(model)


def resolve_engine(model, image_shape, engine: str = "auto", tile: int | None = None, batch_size: int = 1,
                   memory_mb: int = 4096, tiles: int | None = None, precision: str = "float32") -> tuple[str, str]:
    """``(engine, precision)`` that :func:`predict_tiled` would run for an image of
    ``image_shape`` (``tiles``: the job's tiles in all, default this image's), resolved once for
    a job (:func:`keras_unet.engines.resolve`) so a caller can say which ran and pass them on."""
    config = unet_config(model)
    from keras_unet import engines

    size = resolve_tile(model, image_shape, tile, batch_size, memory_mb)
    count = tiles or count_tiles(image_shape, size, config["depth"], config["padding"])
    return engines.resolve(prediction_network(model), engine,
                           (min(batch_size, count), size, size, config["in_channels"]), -(-count // batch_size),
                           precision)


def gray_for_rgb(channels: int, model_channels: int) -> bool:
    """True where a gray image goes to an RGB model: as R = G = B, which is how gray images
    come in RGB training sets (most of DSB2018's), so the model has seen them so."""
    return channels == 1 and model_channels == 3


def normalized_input(model, image: np.ndarray, config: dict):
    """``(image (H, W, C) float32 as the network takes it, network)``: a percentile-normalising
    model's image normalised as a whole and its nested network; else the image and the model."""
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    if gray_for_rgb(image.shape[-1], config["in_channels"]):
        image = np.repeat(image, 3, axis=-1)
    if config["percentiles"] is None:
        return image.astype(np.float32, copy=False), prediction_network(model)
    from keras_unet.normalize import normalize_image

    # in the image's own dtype: an 8- or 16-bit image's percentiles come from its histogram (fast, exact)
    return normalize_image(image, config["percentiles"]), prediction_network(model)


class Prepared(NamedTuple):
    """An image as the network takes it and that network (:func:`normalized_input`), made once:
    a collection's next file is read and normalised in the background while the network runs on
    the one before (:func:`keras_unet.inference.prefetched_jobs`)."""

    image: np.ndarray  # (H, W, C) float32, normalised where the model normalises
    network: object


def prepared(model, image: np.ndarray) -> Prepared:
    """``image`` ``(H, W)`` or ``(H, W, C)`` as :func:`predict_tiled` gives it to the network."""
    return Prepared(*normalized_input(model, image, unet_config(model)))


def _input(model, image, config: dict) -> Prepared:
    return image if isinstance(image, Prepared) else Prepared(*normalized_input(model, image, config))


def predict_tiled(model, image: np.ndarray, tile: int | None = None, batch_size: int = 1,
                  progress=None, memory_mb: int = 4096, jit_compile: bool = False,
                  engine: str = "tensorflow", precision: str = "float32") -> np.ndarray:
    """Class probabilities ``(H, W, n_classes)`` float32 of ``image`` ``(H, W)`` or ``(H, W, C)``
(or :class:`Prepared` already).

    ``tile`` defaults to the largest valid tile within ``memory_mb`` that the image needs: on a
    CPU one large tile beats several small ones (benchmarks/results/inference.md).
    ``progress``, if given, is called with the number of tiles done after each batch.
    A percentile-normalising model has the whole image normalised first, then its nested network
    sees the tiles: the statistics are the image's, whatever the tile. ``engine``: what runs the
    network on the tiles (``tensorflow``, ``onnxruntime``, ``openvino`` or ``auto``) at ``precision``
    (``float32``, ``bfloat16`` or ``auto``): :func:`keras_unet.engines.resolve`.
    """
    config = unet_config(model)
    depth, padding = config["depth"], config["padding"]
    image, model = _input(model, image, config)
    height, width = image.shape[:2]
    plan = sizes.prediction_plan(resolve_tile(model, image.shape, tile, batch_size, memory_mb), depth, padding)
    rows, cols = plan.origins(height), plan.origins(width)
    padded = _padded(image, plan, rows[-1], cols[-1])
    origins = [(r, c) for r in rows for c in cols]
    if (engine, precision) != ("tensorflow", "float32") and not jit_compile:  # checked, auto resolved
        from keras_unet import engines

        batches = -(-len(origins) // batch_size)
        engine, precision = engines.resolve(model, engine, (min(batch_size, len(origins)), plan.input_size,
                                                            plan.input_size, image.shape[-1]), batches, precision)
    forward = forward_function(model, jit_compile, engine, precision)
    return run_tiles(forward, padded, plan, rows, cols, config["n_classes"], batch_size, progress)[:height, :width]


def run_tiles(forward, padded: np.ndarray, plan: sizes.TilePlan, rows: list, cols: list, n_classes: int,
              batch_size: int = 1, progress=None) -> np.ndarray:
    """Overlap-tile prediction of an image already padded for ``plan``: ``(rows[-1] + kept,
    cols[-1] + kept, n_classes)`` float32, tile ``(r, c)`` read from ``padded[r : r + input_size,
    c : c + input_size]`` and its kept output written at ``(r, c)``."""
    keep = slice(plan.keep_from, plan.keep_from + plan.kept)
    result = np.zeros((rows[-1] + plan.kept, cols[-1] + plan.kept, n_classes), np.float32)
    origins = [(r, c) for r in rows for c in cols]
    for start in range(0, len(origins), batch_size):
        batch = origins[start : start + batch_size]
        tiles = np.stack([padded[r : r + plan.input_size, c : c + plan.input_size] for r, c in batch])
        outputs = forward(tiles)
        for (r, c), out in zip(batch, outputs):
            result[r : r + plan.kept, c : c + plan.kept] = out[keep, keep]
        if progress is not None:
            progress(len(batch))
    return result


def resolve_tile(model, image_shape, tile: int | None = None, batch_size: int = 1, memory_mb: int = 4096) -> int:
    """``tile`` if given (checked against the same memory estimate that picks the default), else
    :func:`default_tile` for this model and image."""
    config = unet_config(model)
    if not tile:
        return sizes.default_tile(image_shape, config["depth"], config["padding"], config["base_filters"], batch_size,
                            memory_mb)
    sizes.check_input_size(tile, config["depth"], config["padding"])
    budget = memory_mb * 2**20
    needed = sizes.estimate_tile_bytes(tile, config["base_filters"], batch_size)
    if needed > budget:
        fits = [s for s in sizes.valid_input_sizes(tile, config["depth"], config["padding"])
                if sizes.estimate_tile_bytes(s, config["base_filters"], batch_size) <= budget]
        advice = f"use --tile {fits[-1]} or smaller" if fits else "lower --batch-size"
        raise SettingsError(f"--tile {tile} with --batch-size {batch_size} needs about {needed / 2**30:.1f} GB, "
                            f"over --memory-mb {memory_mb}; {advice} (or raise --memory-mb)")
    return tile


def count_tiles(image_shape, tile: int, depth: int = 5, padding: str = "valid") -> int:
    """Number of tiles :func:`predict_tiled` cuts an image into."""
    plan = sizes.prediction_plan(tile, depth, padding)
    return len(plan.origins(image_shape[0])) * len(plan.origins(image_shape[1]))


def predict_whole(model, image: np.ndarray) -> np.ndarray:
    """Reference: one pass over the whole mirror-padded image, ``(H, W, n_classes)``."""
    config = unet_config(model)
    depth, padding = config["depth"], config["padding"]
    image, model = normalized_input(model, image, config)
    model = keras_of(model)
    height, width = image.shape[:2]
    tall = sizes.input_size_for_output(height, depth, padding)
    wide = sizes.input_size_for_output(width, depth, padding)
    margin = (tall - sizes.output_size(tall, depth, padding)) // 2
    padded = np.pad(image, ((margin, tall - height - margin), (margin, wide - width - margin), (0, 0)), mode="reflect")
    return np.asarray(model.predict_on_batch(padded[None]))[0, :height, :width]


DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def predict_tta(model, image: np.ndarray, n_transforms: int = 8, **kwargs) -> np.ndarray:
    """Average of :func:`predict_tiled` over the first ``n_transforms`` rotations/flips (1-8);
    the paper's ISBI entry averaged rotated predictions."""
    # normalised once: an image's percentiles are those of each of its rotations and flips
    image, network = _input(model, image, unet_config(model))
    total = None
    for k, flip in DIHEDRAL[:n_transforms]:
        view = np.rot90(image[:, ::-1] if flip else image, k)
        probs = np.rot90(predict_tiled(model, Prepared(np.ascontiguousarray(view), network), **kwargs), -k)
        probs = probs[:, ::-1] if flip else probs
        total = probs if total is None else total + probs
    return total / n_transforms
