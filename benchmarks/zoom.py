"""Scale augmentation (``fit --zoom``), a lever of the nuclei issue: the shipped ``nuclei`` model
trained on for the same number of steps with and without it, scored per image kind on the held-out
DSB2018 images beside the shipped model itself.

    python benchmarks/zoom.py [--epochs 40] [--zoom 1.5] [--runs /tmp/zoom]

Data and split: as :mod:`nuclei_model` (the 425 training images of :func:`budget.split`; fit
selects and chooses its post-processing on its own 20 %; the 106 held-out images score). Both arms
start from the shipped model's weights (``--from nuclei``) with the ``finetune`` preset (Adam 3e-4,
cosine decay), a fixed schedule of ``--epochs`` epochs of 25 steps (not a wall budget: a zoomed
step reads a larger window and costs a little more), same seed, ``--precision auto``: the arm
without zoom is the control for "more training" itself. Resumable per arm (its run folder under
``--runs``).
"""
import argparse
from pathlib import Path

from _common import machine, write_table
from budget import split
from nuclei_model import arm_rows, finetuned, held_out_scores


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40, help="epochs of 25 steps for each arm")
    parser.add_argument("--zoom", type=float, default=1.5, help="--zoom of the zoomed arm")
    parser.add_argument("--runs", default="/tmp/zoom")
    args = parser.parse_args()
    train_pairs, tests = split()
    arms = {"shipped nuclei": "nuclei"}
    for zoom in (1.0, args.zoom):
        name = f"+{args.epochs} epochs, " + ("no zoom" if zoom == 1.0 else f"zoom {zoom:g}")
        arms[name] = finetuned(Path(args.runs) / f"zoom-{zoom:g}", train_pairs, epochs=args.epochs, max_minutes=0.0,
                               fixed_schedule=True, zoom=zoom)
    scores = {name: held_out_scores(source, tests, by_kind=False) for name, source in arms.items()}
    header, rows = arm_rows(scores, arms)
    write_table("zoom", "Scale augmentation: the nuclei model trained on with and without --zoom, per image kind",
                f"python benchmarks/zoom.py --epochs {args.epochs} --zoom {args.zoom:g}", header, rows,
                "Held-out DSB2018 images of budget.split, each model alone on every image (no partner) with its own "
                "chosen post-processing, TensorFlow float32 "
                f"({machine()}). Both arms start from the shipped model's weights with the finetune preset, the same "
                "seed and number of steps; zoom: each training tile sampled at a scale log-uniform in [1/Z, Z] "
                "(augment.AugmentParams.zoom), its labels and weight map at the same places.")


if __name__ == "__main__":
    main()
