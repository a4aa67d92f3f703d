"""A wider network (base 32 against the shipped model's 16), a lever of the nuclei issue, at about
the same CPU hour: what twice the width buys where bfloat16 pays for it.

    python benchmarks/width.py [--epochs 140] [--base 32] [--runs /tmp/width]

The wide arm is the shipped model's recipe (benchmarks/nuclei_model.py: the ``cpu`` preset, a fixed
schedule of epochs of 50 steps, seed 0, ``--precision auto``, the same 425 training images and
fit's own 20 % for selection and post-processing) with ``--base`` filters and ``--epochs`` chosen
so that it trains about as long as the shipped model did (260 epochs, 63 min in float32 on an
AMD Zen 4): a base-32 step costs about 3.6x a base-16 one in float32, and bfloat16 gives back
about 1.8x of it where the CPU has it (train.training_step_seconds). Both models alone on every
held-out image (no partner), each with its own chosen post-processing, TensorFlow float32; the
seconds per image are that loop's (network and post-processing) for each model in this run.
Resumable: the wide arm's run folder under ``--runs``.
"""
import argparse
import time
from pathlib import Path

from _common import machine, write_table
from budget import split
from keras_unet import inference, runs
from nuclei_model import arm_rows, held_out_scores, trained, training_minutes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=140, help="epochs of 50 steps of the wide arm")
    parser.add_argument("--base", type=int, default=32, help="base filters of the wide arm")
    parser.add_argument("--runs", default="/tmp/width")
    args = parser.parse_args()
    train_pairs, tests = split()
    wide = trained(Path(args.runs) / f"base-{args.base}", train_pairs, epochs=args.epochs, base_filters=args.base)
    arms = {"shipped nuclei (base 16)": "nuclei", f"base {args.base}": wide}
    scores, seconds = {}, {}
    for name, source in arms.items():
        start = time.perf_counter()
        scores[name] = held_out_scores(source, tests, by_kind=False)
        seconds[name] = (time.perf_counter() - start) / len(tests)
    header, rows = arm_rows(scores, arms)
    header = ["model", "epochs of 50 steps"] + header[2:] + [
        "true objects merged (all)", "trained in", "training (min)", "s / image", "model file (MB)"]
    for row, (name, source) in zip(rows, arms.items()):
        model_file = inference.resolve_model_path(source)
        record = runs.record(model_file)
        # the shipped model's training time is its card's (63 min in float32 on an AMD Zen 4, 2026-11-28)
        minutes = f"{training_minutes(source):.0f}" if isinstance(source, Path) else "63"
        row[1] = runs.Run(source).state().get("epoch") if isinstance(source, Path) else record["config"]["epochs"]
        row += [f"{scores[name]['all']['merged']:.1%}", record["config"].get("precision", "float32"), minutes,
                f"{seconds[name]:.2f}", f"{model_file.stat().st_size / 1e6:.1f}"]
    write_table("width", f"A wider network: base {args.base} against the shipped base 16 at about one CPU hour",
                f"python benchmarks/width.py --epochs {args.epochs} --base {args.base}", header, rows,
                "Held-out DSB2018 images of budget.split, each model alone on every image (no partner) with its own "
                f"chosen post-processing, TensorFlow float32 ({machine()}). The wide arm: the shipped model's recipe "
                "(cpu preset, Adam 1e-3 with a cosine decay over its epochs, seed 0) at twice the width, trained from "
                "scratch in the precision auto chose; s / image: the scoring loop of this run (network and "
                "post-processing, one model after the other). Merged: true objects whose found object also holds half "
                "of another (benchmarks/errors.py).")


if __name__ == "__main__":
    main()
