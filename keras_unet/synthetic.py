"""The embedded default data: synthetic microscopy-like images of touching cells.

Each sample is an 8-bit grayscale image (bright membranes around textured cells, dark gaps,
uneven illumination, blur and noise) with its instance label image (0 = background, 1..n = cells).
Cells are blobs grown from random seeds; neighbours closer than their radii touch, so the
instance labels have shared borders, as in the paper's cell tracking data. Deterministic per seed.
"""
from __future__ import annotations

from pathlib import Path

from dataclasses import asdict

import numpy as np
from scipy import ndimage

from keras_unet import data
from keras_unet.data import Dataset, WeightParams, target_and_weights


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation. The mean is taken
    off first: a field smoothed over a third of the image is nearly constant, and that constant
    divided by its small spread made the "20 %" illumination black out or saturate whole images."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    field = field - field.mean()
    return field / (field.std() + 1e-12)


def cell_instances(shape=(256, 256), n_cells: int | None = None, radius: float = 18.0, seed: int = 0) -> np.ndarray:
    """Instance label image ``(H, W)`` int32 of irregular, partly touching cells."""
    rng = np.random.default_rng(seed)
    height, width = shape
    if n_cells is None:
        n_cells = max(2, int(0.75 * height * width / (np.pi * radius**2)))
    centres = rng.uniform([0, 0], [height, width], size=(n_cells, 2))
    radii = radius * rng.uniform(0.7, 1.3, size=n_cells)
    # Distance to each seed, relative to its radius, wobbled by a smooth field for irregular outlines.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wobble = 0.18 * _smooth_noise(rng, shape, sigma=radius / 3)
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    # Each cell only within the box where it can reach rel <= 1 (distance <= r (1 - min wobble)):
    # the wobble at a pixel is the same for every cell, so the cells nearest in rel there all lie
    # in it, and a pixel left at rel > 1 is background anyway. The same labels as over the whole
    # image (tested against it), about 40x faster at 512 px, where every cell over every pixel took
    # 1.2 s per image and 14 s at 1024.
    reach = 1.0 - min(float(wobble.min()), 0.0)
    for i, ((cy, cx), r) in enumerate(zip(centres, radii), start=1):
        box = tuple(slice(max(int(np.floor(c - r * reach)), 0), max(int(np.ceil(c + r * reach)) + 1, 0))
                    for c in (cy, cx))
        rel = np.hypot(yy[box] - cy, xx[box] - cx) / r + wobble[box]
        closer = rel < best[box]
        best[box][closer] = rel[closer]
        labels[box][closer] = i
    labels[best > 1.0] = 0
    return largest_pieces(labels, radius)


def largest_pieces(labels: np.ndarray, radius: float) -> np.ndarray:
    """Each cell's largest connected piece of ``labels`` ``(H, W)`` (fragments, and pieces under
    15 % of a disc of ``radius``, dropped), renumbered 1..n."""
    out = np.zeros_like(labels)
    next_id = 1
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pieces, n = ndimage.label(labels[box] == i)
        if n == 0:
            continue
        largest = np.argmax(ndimage.sum(np.ones_like(pieces), pieces, index=range(1, n + 1))) + 1
        if (pieces == largest).sum() < 0.15 * np.pi * radius**2:
            continue
        out[box][pieces == largest] = next_id
        next_id += 1
    return out


def render_image(instances: np.ndarray, seed: int = 0, noise: float = 0.06, blur: float = 1.0) -> np.ndarray:
    """Microscopy-like uint8 image ``(H, W)`` for an instance label image."""
    rng = np.random.default_rng(seed + 7919)
    shape = instances.shape
    grey_max = ndimage.maximum_filter(instances, size=3)
    grey_min = ndimage.minimum_filter(instances, size=3)
    membrane = grey_max != grey_min  # borders between cells and between a cell and the background
    interior_level = rng.uniform(0.28, 0.45, size=instances.max() + 1)
    image = np.where(instances > 0, interior_level[instances], 0.12)
    image = image + 0.05 * _smooth_noise(rng, shape, sigma=2.0) * (instances > 0)  # texture
    image[membrane] = 0.85
    illumination = 1.0 + 0.2 * _smooth_noise(rng, shape, sigma=min(shape) / 3)
    image = ndimage.gaussian_filter(image * illumination, blur)
    image = image + noise * rng.standard_normal(shape)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def sample(shape=(256, 256), radius: float = 18.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image uint8 (H, W), instances int32 (H, W))`` pair, deterministic per seed."""
    instances = cell_instances(shape, radius=radius, seed=seed)
    return render_image(instances, seed=seed), instances


def dataset(n: int = 8, shape=(256, 256), radius: float = 18.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples stacked: images ``(n, H, W)`` uint8, instances ``(n, H, W)`` int32."""
    pairs = [sample(shape, radius, seed=seed * 100_003 + i) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_dataset(directory, n: int = 8, shape=(256, 256), seed: int = 0) -> Path:
    """Write ``images/NN.png`` and ``masks/NN.tif`` (16-bit instance labels) under ``directory``."""
    directory = Path(directory)
    images, instances = dataset(n, shape, seed=seed)
    for i, (image, labels) in enumerate(zip(images, instances)):
        data.write_image(directory / "images" / f"{i:02d}.png", image)
        data.write_image(directory / "masks" / f"{i:02d}.tif", labels.astype(np.uint16))
    return directory


def as_dataset(n: int = 8, shape=(256, 256), seed: int = 0, params: WeightParams = WeightParams()) -> Dataset:
    """The embedded default as a :class:`keras_unet.data.Dataset`: samples with their targets and
    weight maps (instance masks, so touching cells get separation borders)."""
    images, instances = dataset(n, shape, seed=seed)
    out = Dataset(notes=["synthetic cells (keras_unet.synthetic)"])
    for i, (image, labels) in enumerate(zip(images, instances)):
        target, w, kind = target_and_weights(labels, WeightParams(**{**asdict(params), "mask_kind": "instance"}))
        out.images.append(image[..., None])
        out.targets.append(target)
        out.weights.append(w)
        out.sources.append(f"synthetic[{seed}:{i}]")
        out.mask_kinds.append(kind)
    return out


def model_image(shape, config: dict, seed: int = 0) -> np.ndarray:
    """A real-looking ``(H, W, C)`` float32 image in a model's raw input range (``config`` as
    :func:`keras_unet.model.unet_config` gives it): membranes, touching cells and noise, whose
    outputs show export errors that a random input hides."""
    image = sample(tuple(shape), seed=seed)[0].astype(np.float32) / 255.0
    # A percentile-normalising model takes any range: give it 8-bit values, as a camera would.
    low, high = config["input_range"] or ((0.0, 255.0) if config.get("percentiles") else (0.0, 1.0))
    return np.repeat((low + image * (high - low))[..., None], config["in_channels"], axis=-1)
