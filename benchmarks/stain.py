"""Stain jitter (``fit --stain-jitter``), a lever of the nuclei issue for stained tissue: the
shipped ``nuclei`` model trained on for the same wall-clock budget with and without it, scored per
image kind on the held-out DSB2018 images beside the shipped model itself.

    python benchmarks/stain.py [--minutes 18] [--jitter 0.1] [--runs /tmp/stain]

Data and split: as :mod:`nuclei_model` (the 425 training images of :func:`budget.split`; fit
selects and chooses its post-processing on its own 20 %; the 106 held-out images score). Both arms
start from the shipped model's weights (``--from nuclei``) with the ``finetune`` preset (Adam 3e-4,
cosine decay) and ``--max-minutes``, same seed, ``--precision auto``: the arm without jitter is the
control for "more training" itself. Resumable per arm (its run folder under ``--runs``).
"""
import argparse
from pathlib import Path

from _common import write_table
from budget import split
from nuclei_model import arm_rows, finetuned, held_out_scores


def trained(run_dir: Path, minutes: float, jitter: float, train_pairs: list) -> Path:
    """The run of one arm, trained (or resumed) to its end."""
    return finetuned(run_dir, train_pairs, max_minutes=minutes, stain_jitter=jitter)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=18.0, help="training budget of each arm")
    parser.add_argument("--jitter", type=float, default=0.1, help="--stain-jitter of the jittered arm")
    parser.add_argument("--runs", default="/tmp/stain")
    args = parser.parse_args()
    train_pairs, tests = split()
    arms = {"shipped nuclei": "nuclei"}
    for name, jitter in ((f"+{args.minutes:g} min, no jitter", 0.0), (f"+{args.minutes:g} min, jitter {args.jitter:g}",
                                                                       args.jitter)):
        arms[name] = trained(Path(args.runs) / f"jitter-{jitter:g}", args.minutes, jitter, train_pairs)
    scores = {name: held_out_scores(source, tests) for name, source in arms.items()}
    header, rows = arm_rows(scores, arms)
    write_table("stain", "Stain jitter: the nuclei model trained on with and without it, per image kind",
                f"python benchmarks/stain.py --minutes {args.minutes:g} --jitter {args.jitter:g}",
                header, rows,
                "Held-out DSB2018 images of budget.split, each model with its own chosen post-processing. Both "
                "arms start from the shipped model's weights with the finetune preset, the same seed and wall "
                "budget; jitter: colour images' haematoxylin, eosin and DAB amounts scaled by U(1 - s, 1 + s) and "
                "shifted by U(-s, s) optical density (augment.stain_jitter), gray images untouched.")


if __name__ == "__main__":
    main()
