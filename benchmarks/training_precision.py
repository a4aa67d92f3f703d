"""Training speed in float32 against bfloat16 (and what ``--precision auto`` picks) on this CPU, real
``fit`` runs of a fixed schedule: the ``cpu`` preset's network, tile and batch on DSB2018 nuclei, or
the ``paper`` preset's (base 64, tile 572, batch 1, SGD) on the embedded synthetic cells (what
``keras-unet fit`` trains by default).

    python benchmarks/training_precision.py [--preset cpu|paper] [--steps 40] [--epochs 3] [--name NAME]

Each precision trains ``--epochs`` epochs of ``--steps`` steps from the same seed (no time limit,
validation on the usual split); the speed is the training steps of the epochs after the first (the
first builds the graph), from each epoch's ``train_seconds`` in ``log.csv``. Tiles/s = batch x steps / s.
The two presets show where the host's work (reading, cutting, augmenting tiles on the same cores as
the step) weighs: much at base 16, little at base 64, whose step is about 12x dearer per tile.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import write_table
from budget import DSB
from keras_unet import runs, settings, train
from keras_unet.precision import bfloat16_flags


# what each preset trains on: DSB2018 nuclei for cpu, the embedded synthetic cells (fit's default,
# drawn at 512 px: the 572 px tile's 388 px output must fit in an image) for paper
DATA = {"cpu": dict(data=str(DSB)), "paper": dict(data=None, synthetic_size=512)}


def steps_per_second(preset: str, precision: str, steps: int, epochs: int,
                     augment_on: str = "host") -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        config = settings.preset(preset, **DATA[preset], epochs=epochs, steps_per_epoch=steps, max_minutes=0.0,
                                 fixed_schedule=True, precision=precision, augment_on=augment_on)
        state = train.fit(config, Path(folder) / "run", verbose=0)
        log = np.genfromtxt(runs.run_file(Path(folder) / "run", runs.LOG), delimiter=",", names=True)
        seconds = float(np.sum(log["train_seconds"][1:]))
        return steps * (epochs - 1) / seconds, state["config"].precision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(DATA), default="cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--name", help="the table's name under results/ [training_precision, _paper for paper]")
    parser.add_argument("--augment-on", nargs="+", default=["host"], choices=["host", "device"],
                        help="where the augmentation runs (fit --augment-on); several: a row of each, float32 "
                             "on the host the reference")
    args = parser.parse_args()
    config = settings.preset(args.preset)
    rows, speeds = [], {}
    for place in args.augment_on:
        for precision in ("float32", "bfloat16", "auto"):
            key = (place, precision)
            speeds[key], used = steps_per_second(args.preset, precision, args.steps, args.epochs, place)
            reference = speeds.get(("host", "float32"), speeds[(args.augment_on[0], "float32")])
            rows.append([precision, place, used, f"{1 / speeds[key]:.3f}", f"{config.batch_size * speeds[key]:.1f}",
                         f"{speeds[key] / reference:.2f}x"])
    name = args.name or "training_precision" + ("" if args.preset == "cpu" else f"_{args.preset}")
    data = "DSB2018 nuclei" if DATA[args.preset]["data"] else "The embedded synthetic cells (512 px)"
    write_table(name, f"Training steps in float32 and bfloat16 ({args.preset} preset: base {config.base_filters}, "
                f"tile {config.tile}, batch {config.batch_size}, {config.optimizer})",
                f"python benchmarks/training_precision.py --preset {args.preset} --steps {args.steps} --epochs {args.epochs}"
                + (f" --augment-on {' '.join(args.augment_on)}" if args.augment_on != ["host"] else "")
                + (f" --name {args.name}" if args.name else ""),
                ["--precision", "augmentation on", "trained in", "s / step", "tiles / s", "vs float32"], rows,
                f"bfloat16 flags of this CPU: {bfloat16_flags()}. {data}, augmented on the host (tf.data, "
                "beside the training step) or on the device (the batch of windows augmented in the graph after "
                f"the copy: on a CPU, the same cores one after the other), {args.epochs} epochs of {args.steps} steps each, the first (graph building) left out. "
                "auto measured a few steps of each precision once (cached) and trained in the faster.")


if __name__ == "__main__":
    main()
