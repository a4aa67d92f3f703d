"""What the host spends on each training tile: CPU milliseconds per tile of the ``fit`` input
pipeline (keras_unet.pipeline.training_dataset) at the ``cpu`` preset's tile and batch on DSB2018
nuclei, alone (no training step), whole and in parts.

On a 2-core CPU this work shares the cores with the training step, so what it costs weighs more
the faster the step is: on the AMX Xeon the bfloat16 step alone ran 1.96x float32's, ``fit`` with
the host beside it 1.61x (the bfloat16 issue's goal: 1.8x). CPU time (user + system of the
process, every thread) rather than wall time, since that is what the step loses.

    python benchmarks/host_pipeline.py [--batches 100] [--images 80] [--name host_pipeline]

Rows: the whole pipeline with the default augmentation and with none; the samples stream alone
(the images handed from Python to tf.data); one tile's bilinear sampling of the image.
"""
import argparse
import gc
import json
import resource
import subprocess
import sys
import time

import numpy as np

from _common import write_table
from budget import split


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_item(make, n: int, warm: int = 10) -> tuple[float, float]:
    """``(CPU ms, wall ms)`` per item of the iterator ``make()`` over ``n`` items after ``warm``;
    the iterator is then dropped and its background threads given time to stop (a tf.data
    iterator left alive goes on filling its buffers into the next measurement)."""
    iterator = make()
    for _ in range(warm):
        next(iterator)
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(n):
        next(iterator)
    out = 1000 * (cpu_seconds() - cpu) / n, 1000 * (time.perf_counter() - wall) / n
    del iterator
    gc.collect()
    time.sleep(2)
    return out


ROWS = ("whole pipeline, default augmentation", "whole pipeline, no augmentation",
        "samples stream alone (per sample)", "bilinear sampling of one tile (3 channels)")


def measure_row(row: str, batches: int, images: int) -> tuple[float, float]:
    """``(CPU ms, wall ms)`` per tile of one row, in this process (fresh: a tf.data iterator's
    threads outlive it and would bill the next row)."""
    import tensorflow as tf

    from keras_unet import augment, data, pipeline, settings

    preset = settings.preset("cpu")
    tile, batch = preset.tile, preset.batch_size
    if row == ROWS[3]:
        rng = np.random.default_rng(0)
        image = tf.constant(rng.integers(0, 256, (512, 640, 3)).astype(np.float32))
        ys, xs = augment.tile_coordinates(tf.constant([0, 1], tf.int64), tile, tf.constant([256.0, 320.0]),
                                          augment.AugmentParams())
        bilinear = tf.function(lambda: augment.sample_bilinear(image, ys, xs))
        return per_item(lambda: iter(bilinear, None), 300)
    dataset = data.load_pairs(split()[0][:images])
    if row == ROWS[2]:
        return per_item(lambda: iter(pipeline.samples(dataset, seed=0)), batches * batch)
    params = augment.AugmentParams() if row == ROWS[0] else augment.AugmentParams.none()
    d = pipeline.training_dataset(dataset, tile, batch_size=batch, depth=5, params=params, seed=0)
    cpu, wall = per_item(lambda: iter(d), batches)
    return cpu / batch, wall / batch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--images", type=int, default=80, help="training images loaded (the first by name)")
    parser.add_argument("--repeat", type=int, default=3, help="each row measured this often, the median kept")
    parser.add_argument("--name", default="host_pipeline")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one row, in a process of its own
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure_row(args.row, args.batches, args.images)))
        return
    from keras_unet import settings

    preset = settings.preset("cpu")
    rows = []
    for name in ROWS:
        results = []
        for _ in range(args.repeat):
            done = subprocess.run([sys.executable, __file__, "--row", name, "--batches", str(args.batches),
                                   "--images", str(args.images)], check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        cpu = float(np.median([r[0] for r in results]))
        wall = float(np.median([r[1] for r in results]))
        rows.append([name, f"{cpu:.1f}", f"{wall:.1f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    write_table(args.name, "The host's work per training tile (fit's input pipeline, cpu preset)",
                " ".join(["python benchmarks/host_pipeline.py"] + sys.argv[1:]),
                ["part", "CPU ms per tile", "wall ms per tile"], rows,
                f"DSB2018 nuclei, the first {args.images} training images of budget.split (uint8 RGB), tile "
                f"{preset.tile}, batch {preset.batch_size}, {args.batches} batches after 10, median of "
                f"{args.repeat} runs, each row in a fresh process; CPU: user + system time of every thread of "
                "the process. The bilinear row: one 3-channel tile sampled from a 640x512 image, per call.")


if __name__ == "__main__":
    main()
