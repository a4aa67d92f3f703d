"""Augmentation pipeline throughput at 572x572 vs scipy and vs the training step it feeds.

    python benchmarks/augmentation.py [--bases 16,32,64]

(a) the tf.data pipeline (keras_unet.pipeline, TF ops, parallel map) in samples/s, host-side
    (each sample augmented in the map) and device-side (windows cut on the host, augmented in
    batches of 4 where the device is: here the same CPU);
(b) the same deformation done with scipy.ndimage.map_coordinates in numpy, one sample at a time;
(c) training steps of the paper's network (batch 1, tile 572) at several base widths.
The goal is augmentation throughput >= 5x training throughput at base 32.
"""
import argparse
import itertools
import time

import numpy as np
from scipy import ndimage

from _common import best_of, write_table
from keras_unet import pipeline, sizes, synthetic

TILE = 572


def pipeline_rate(dataset, n=60, batch=1, on_device=False):
    iterator = iter(pipeline.training_dataset(dataset, TILE, batch_size=batch, on_device=on_device))
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(n // batch):
        next(iterator)
    return (n // batch) * batch / (time.perf_counter() - start)


def scipy_sample(image, target, weights, rng):
    """The same work as keras_unet.augment.augmented_tile, in numpy/scipy."""
    out = sizes.output_size(TILE)
    margin = (TILE - out) // 2
    top, left = rng.integers(0, image.shape[0] - out + 1), rng.integers(0, image.shape[1] - out + 1)
    offsets = np.arange(TILE) - (TILE - 1) / 2
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    angle = rng.uniform(-np.pi, np.pi)
    dy, dx = np.cos(angle) * dy - np.sin(angle) * dx, np.sin(angle) * dy + np.cos(angle) * dx
    coarse = rng.normal(0, 10, (2, 3, 3))
    field = np.stack([ndimage.zoom(c, TILE / 3, order=3, mode="nearest", grid_mode=True) for c in coarse])
    ys = dy + field[0] + top + (out - 1) / 2
    xs = dx + field[1] + left + (out - 1) / 2
    tile = ndimage.map_coordinates(image[..., 0], [ys, xs], order=1, mode="mirror")
    centre = (slice(margin, margin + out),) * 2
    labels = ndimage.map_coordinates(target, [ys[centre], xs[centre]], order=0, mode="mirror")
    weight = ndimage.map_coordinates(weights, [ys[centre], xs[centre]], order=1, mode="mirror")
    tile = tile * rng.uniform(0.8, 1.2) + rng.normal(0, 0.1) + rng.normal(0, 0.02, tile.shape)
    return tile, labels, weight


def scipy_rate(dataset, n=20):
    rng = np.random.default_rng(0)
    samples = itertools.cycle(zip(dataset.images, dataset.targets, dataset.weights))
    start = time.perf_counter()
    for _ in range(n):
        scipy_sample(*next(samples), rng)
    return n / (time.perf_counter() - start)


def train_step_rate(base):
    import keras

    from keras_unet import losses
    from keras_unet.model import unet

    model = unet(base_filters=base)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.99), loss=losses.WeightedCrossEntropy())
    x = np.random.default_rng(0).uniform(0, 255, (1, TILE, TILE, 1)).astype(np.float32)
    y = np.ones((1, sizes.output_size(TILE), sizes.output_size(TILE), 2), np.float32)
    model.train_on_batch(x, y)
    return 1.0 / best_of(lambda: model.train_on_batch(x, y), repeat=3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bases", default="16,32,64")
    args = parser.parse_args()
    dataset = synthetic.as_dataset(4, (768, 768))
    aug = pipeline_rate(dataset)
    host4 = pipeline_rate(dataset, batch=4)
    device4 = pipeline_rate(dataset, batch=4, on_device=True)
    ref = scipy_rate(dataset)
    rows = [["tf.data pipeline (keras_unet), host-side, batch 1", f"{aug:.1f}", "-", ""],
            ["tf.data pipeline, host-side, batch 4", f"{host4:.1f}", "-", ""],
            ["tf.data pipeline, device-side on this CPU (windows, batch 4)", f"{device4:.1f}", "-",
             f"device / host = {device4 / host4:.2f}x (the same cores: no gain expected on a CPU)"],
            ["scipy.ndimage map_coordinates, 1 thread", f"{ref:.1f}", "-", f"pipeline / scipy = {aug / ref:.1f}x"]]
    for base in (int(b) for b in args.bases.split(",")):
        rate = train_step_rate(base)
        rows.append([f"training step, base {base}, batch 1", f"{rate:.3f}", f"{1 / rate:.2f}",
                     f"augmentation / training = {aug / rate:.0f}x"])
    write_table("augmentation", "Augmentation throughput at 572x572 vs training", "python benchmarks/augmentation.py",
                ["what", "samples/s", "s/sample", "ratio"], rows,
                "Full pipeline: random tile position, flips, rotation, 3x3 elastic field (sigma 10 px, bicubic), "
                "bilinear image + weight map, nearest labels, gray-value changes, batching and prefetch.")


if __name__ == "__main__":
    main()
