"""tf.data pipelines: augmented random training tiles and fixed validation tiles.

Elements are ``(image (B, S, S, C) float32 raw values, y_true (B, O, O, 2) float32)`` with ``S``
the input tile, ``O`` its output size, and ``y_true = [class index, weight]`` per pixel.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_unet import augment, sizes
from keras_unet.data import Dataset


def network_input(dataset: Dataset, percentiles=None) -> Dataset:
    """``dataset`` with its images as the network takes them: each image normalised whole by its
    ``percentiles`` (:func:`keras_unet.normalize.normalize_image`, the function prediction uses),
    or unchanged (``None``: the fixed-range network normalises its tiles itself)."""
    if percentiles is None:
        return dataset
    from dataclasses import replace

    from keras_unet.normalize import normalize_image

    return replace(dataset, images=[normalize_image(image, percentiles) for image in dataset.images])


STREAM_DTYPES = (np.uint8, np.uint16)  # image dtypes handed to tf.data as they are (exact in float32)


def stream_dtype(images) -> np.dtype:
    """The dtype the images travel to tf.data in: their own where they all share uint8 or uint16,
    else float32. Each sample's whole image is copied from Python into tf.data: a uint8 image is a
    quarter of its float32 copy (measured on DSB2018, benchmarks/host_pipeline.py: 4.9 -> 2.4 ms
    CPU a sample), and the stream no longer holds a float32 copy of every image; the sampler
    converts to float32 as before (the same values)."""
    dtypes = {np.dtype(image.dtype) for image in images}
    if len(dtypes) == 1 and dtypes <= set(map(np.dtype, STREAM_DTYPES)):
        return dtypes.pop()
    return np.dtype(np.float32)


def samples(dataset: Dataset, seed: int) -> tf.data.Dataset:
    """Endless ``(image (H, W, C) raw values in :func:`stream_dtype`, target (H, W) uint8, weights
    (H, W) float32)`` of ``dataset`` in a seeded random order, as tf.data elements."""
    signature = (
        tf.TensorSpec((None, None, dataset.channels), tf.as_dtype(stream_dtype(dataset.images))),
        tf.TensorSpec((None, None), tf.uint8),
        tf.TensorSpec((None, None), tf.float32),
    )
    return tf.data.Dataset.from_generator(lambda: _sample_stream(dataset, seed), output_signature=signature)


def _sample_stream(dataset: Dataset, seed: int):
    """Endless generator of ``(image, target, weights)`` in a seeded random order."""
    rng = np.random.default_rng(seed)
    dtype = stream_dtype(dataset.images)
    images = [im.astype(dtype, copy=False) for im in dataset.images]
    while True:
        for i in rng.permutation(len(dataset)):
            yield images[i], dataset.targets[i], dataset.weights[i]


def training_dataset(
    dataset: Dataset,
    tile: int,
    batch_size: int = 1,
    depth: int = 5,
    padding: str = "valid",
    params: augment.AugmentParams = augment.AugmentParams(),
    value_range=(0.0, 255.0),
    seed: int = 0,
    on_device: bool = False,
) -> tf.data.Dataset:
    """Endless, reproducible dataset of augmented training tiles (see module docstring).

    ``on_device``: the host only cuts a mirrored window per sample (:func:`augment.sample_window`)
    and the augmentation runs on a batch of windows after the copy to the GPU, where there is one
    (:func:`augment.augment_windows`); the same seed gives the same batches either way.
    """
    geometry = sizes.tile_plan(tile, depth, padding)
    channels = dataset.channels

    def make_tile(index, sample):
        image, target, weights = sample
        tile_image, y_true = augment.augmented_tile(
            image, target, weights, tf.stack([tf.cast(seed, tf.int64), index]),
            geometry.input_size, geometry.output_size, params, value_range,
        )
        tile_image = tf.ensure_shape(tile_image, (geometry.input_size, geometry.input_size, channels))
        return tile_image, tf.ensure_shape(y_true, (geometry.output_size, geometry.output_size, 2))

    if not on_device:
        return (
            samples(dataset, seed).enumerate()
            .map(make_tile, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def make_window(index, sample):
        sample_seed = tf.stack([tf.cast(seed, tf.int64), index])
        return augment.sample_window(*sample, sample_seed, geometry.input_size, geometry.output_size, params), sample_seed

    def augment_batch(windows, seeds):
        tiles, y_true = augment.augment_windows(windows, seeds, geometry.input_size, geometry.output_size, params,
                                                value_range)
        return (tf.ensure_shape(tiles, (batch_size, geometry.input_size, geometry.input_size, channels)),
                tf.ensure_shape(y_true, (batch_size, geometry.output_size, geometry.output_size, 2)))

    windows = samples(dataset, seed).enumerate().map(make_window, num_parallel_calls=tf.data.AUTOTUNE,
                                                     deterministic=True)
    windows = windows.batch(batch_size, drop_remainder=True)
    if tf.config.list_logical_devices("GPU"):  # what follows runs on the GPU
        windows = windows.apply(tf.data.experimental.copy_to_device("/gpu:0"))
    return windows.map(augment_batch).prefetch(tf.data.AUTOTUNE)


def validation_tiles(dataset: Dataset, tile: int, depth: int = 5, padding: str = "valid", max_tiles: int | None = None,
                     seed: int = 0):
    """Fixed tiles of the validation images: ``(images (N, S, S, C), y_true (N, O, O, 2))``.

    Every image is covered by whole network outputs side by side (the last flush with its end);
    ``max_tiles`` keeps that many of them, drawn once with ``seed`` from all images alike, so the
    validation loss is measured on a small, fixed, representative set whatever the data's size.
    """
    geometry = sizes.tile_plan(tile, depth, padding)
    size, out = geometry.input_size, geometry.output_size
    margin = geometry.trim  # the network's own trim (0 for same padding), not the prediction context
    places = [(i, top, left) for i, target in enumerate(dataset.targets)
              for top in geometry.origins(target.shape[0], flush_end=True)
              for left in geometry.origins(target.shape[1], flush_end=True)]
    if max_tiles is not None and len(places) > max_tiles:
        picks = np.random.default_rng(seed).choice(len(places), max_tiles, replace=False)
        places = [places[k] for k in sorted(picks)]
    images, targets, padded_index = [], [], None
    for i, top, left in places:  # image by image (places are sorted): each one mirror-padded once
        if i != padded_index:
            image, target, weights = dataset.images[i], dataset.targets[i], dataset.weights[i]
            height, width = target.shape
            pad_h, pad_w = max(out - height, 0), max(out - width, 0)
            padded = np.pad(image.astype(np.float32), ((margin, margin + pad_h), (margin, margin + pad_w), (0, 0)),
                            "reflect")
            y_true = np.pad(np.stack([target.astype(np.float32), weights], -1), ((0, pad_h), (0, pad_w), (0, 0)),
                            "reflect")
            padded_index = i
        images.append(padded[top : top + size, left : left + size])
        targets.append(y_true[top : top + out, left : left + out])
    return np.stack(images), np.stack(targets)


def validation_tile(dataset: Dataset, tile: int, depth: int = 5, padding: str = "valid", base_filters: int = 64,
                    batch_size: int = 1, memory_mb: int = 2048) -> int:
    """Tile for validation: the one overlap-tile prediction would pick for the largest validation
    image within ``memory_mb`` (never smaller than the training ``tile``), so validation costs about
    what predicting those images costs, whatever the training tile (a 188 px training tile would
    cut one 512x512 image into 16,384 tiles of 4x4 outputs)."""
    from keras_unet.sizes import default_tile

    if not len(dataset):
        return tile
    largest = max(max(t.shape) for t in dataset.targets)
    return max(tile, default_tile((largest, largest), depth, padding, base_filters, batch_size, memory_mb))


def spread_picks(count: int, most: int) -> list[int]:
    """At most ``most`` indices of ``range(count)``, evenly spread (files come sorted: the first
    few could all be of one collection)."""
    return [int(i) for i in np.unique(np.linspace(0, count - 1, min(most, count)).round().astype(int))] if count else []
