"""The weight map's border term (``w0`` of w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / 2 sigma^2)), a
lever against the nuclei model's largest error: true objects merged with a neighbour
(benchmarks/errors.py: 11 % of the held-out objects, 30 % on brightfield).

    python benchmarks/border_weight.py [--epochs 40] [--w0 30] [--runs /tmp/border_weight]

As benchmarks/zoom.py: both arms start from the shipped model's weights (``--from nuclei``,
trained at the paper's w0 = 10) with the ``finetune`` preset, a fixed schedule of ``--epochs``
epochs of 25 steps, seed 0; the arm at w0 = 10 is the control ("more training" alone), the other
trains the same steps with the borders between touching nuclei weighted ``--w0``. Each model alone
on every held-out image (no partner), its own chosen post-processing. Resumable per arm.
"""
import argparse
from pathlib import Path

from _common import machine, write_table
from budget import split
from nuclei_model import arm_rows, finetuned, held_out_scores


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40, help="epochs of 25 steps for each arm")
    parser.add_argument("--w0", type=float, default=30.0, help="w0 of the second arm (the control: 10)")
    parser.add_argument("--runs", default="/tmp/border_weight")
    args = parser.parse_args()
    train_pairs, tests = split()
    arms = {"shipped nuclei (w0 10)": "nuclei"}
    for w0 in (10.0, args.w0):
        arms[f"+{args.epochs} epochs, w0 {w0:g}"] = finetuned(Path(args.runs) / f"w0-{w0:g}", train_pairs,
                                                              epochs=args.epochs, max_minutes=0.0,
                                                              fixed_schedule=True, w0=w0)
    scores = {name: held_out_scores(source, tests, by_kind=False) for name, source in arms.items()}
    header, rows = arm_rows(scores, arms)
    header.append("true objects merged (all)")
    for row, per_kind in zip(rows, scores.values()):
        row.append(f"{per_kind['all']['merged']:.1%}")
    write_table("border_weight", "The weight map's border term: the nuclei model trained on at w0 10 and higher",
                f"python benchmarks/border_weight.py --epochs {args.epochs} --w0 {args.w0:g}", header, rows,
                "Held-out DSB2018 images of budget.split, each model alone on every image (no partner) with its own "
                f"chosen post-processing, TensorFlow float32 ({machine()}). Both arms start from the shipped model's "
                "weights with the finetune preset, the same seed and number of steps; only w0 differs (sigma 5 px). "
                "Merged: true objects whose found object also holds half of another (benchmarks/errors.py).")


if __name__ == "__main__":
    main()
