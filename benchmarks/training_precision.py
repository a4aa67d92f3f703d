"""Training speed in float32 against bfloat16 (and what ``--precision auto`` picks) on this CPU: the
``cpu`` preset's network, tile and batch on DSB2018 nuclei, real ``fit`` runs of a fixed schedule.

    python benchmarks/training_precision.py [--steps 40] [--epochs 3]

Each precision trains ``--epochs`` epochs of ``--steps`` steps from the same seed (no time limit,
validation on the usual split); the speed is the training steps of the epochs after the first (the
first builds the graph), from each epoch's ``train_seconds`` in ``log.csv``. Tiles/s = batch x steps / s.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import write_table
from budget import DSB
from keras_unet import runs, settings, train
from keras_unet.precision import bfloat16_flags


def steps_per_second(precision: str, steps: int, epochs: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        config = settings.preset("cpu", data=str(DSB), epochs=epochs, steps_per_epoch=steps, max_minutes=0.0,
                                 fixed_schedule=True, precision=precision)
        state = train.fit(config, Path(folder) / "run", verbose=0)
        log = np.genfromtxt(runs.run_file(Path(folder) / "run", runs.LOG), delimiter=",", names=True)
        seconds = float(np.sum(log["train_seconds"][1:]))
        return steps * (epochs - 1) / seconds, state["config"].precision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    batch = settings.PRESETS["cpu"]["batch_size"]
    rows, speeds = [], {}
    for precision in ("float32", "bfloat16", "auto"):
        speeds[precision], used = steps_per_second(precision, args.steps, args.epochs)
        rows.append([precision, used, f"{1 / speeds[precision]:.3f}", f"{batch * speeds[precision]:.1f}",
                     f"{speeds[precision] / speeds['float32']:.2f}x"])
    write_table("training_precision", "Training steps in float32 and bfloat16 (cpu preset: base 16, tile 348, batch 2)",
                f"python benchmarks/training_precision.py --steps {args.steps} --epochs {args.epochs}",
                ["--precision", "trained in", "s / step", "tiles / s", "vs float32"], rows,
                f"bfloat16 flags of this CPU: {bfloat16_flags()}. DSB2018 nuclei with augmentation on the host "
                f"(tf.data), {args.epochs} epochs of {args.steps} steps each, the first (graph building) left out. "
                "auto measured a few steps of each precision once (cached) and trained in the faster.")


if __name__ == "__main__":
    main()
