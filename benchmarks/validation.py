"""Validation cost at a small training tile: validation tiles of the training tile's size (the
first wave) against the tile overlap-tile prediction would pick (now), for one 512x512 image.

    python benchmarks/validation.py
"""
import time

import keras

from _common import write_table
from keras_unet import data, pipeline, synthetic, weights
from keras_unet.model import unet


def main():
    image, instances = synthetic.sample((512, 512), seed=0)
    target, w = weights.weight_map(instances)
    dataset = data.Dataset([image[..., None]], [target], [w], ["synthetic"], ["instance"])
    keras.utils.set_random_seed(0)
    model = unet(base_filters=8, dropout=0.0)
    model.compile(loss=keras.losses.MeanSquaredError())  # any loss: the forward passes are what costs
    rows = []
    for label, tile in (("training tile (first wave)", 188),
                        ("prediction tile (now)", pipeline.validation_tile(dataset, 188, base_filters=8))):
        start = time.perf_counter()
        images, targets = pipeline.validation_tiles(dataset, tile)
        outputs = [model.predict_on_batch(images[i : i + 64]) for i in range(0, len(images), 64)]
        seconds = time.perf_counter() - start
        peak = images.nbytes + sum(o.nbytes for o in outputs)
        rows.append([label, tile, len(images), f"{seconds:.1f}", f"{peak / 2**20:.0f}"])
    write_table("validation", "Validation of one 512x512 image with a 188 px training tile (base 8)",
                "python benchmarks/validation.py", ["validation tiles", "tile (px)", "tiles", "seconds", "tile + output arrays (MB)"],
                rows, "The first wave cut validation images into training-size tiles; now validation uses the tile "
                      "overlap-tile prediction would pick for the largest validation image (within 2 GB).")


if __name__ == "__main__":
    main()
