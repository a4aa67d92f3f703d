"""Test-time augmentation as a default for ``predict nuclei``? A lever of the nuclei issue: the
outside check found ``--tta 8`` adds 0.015 DSB on unseen DSB2018 images at 5x the time.

    python benchmarks/tta.py [--views 1 2 4 8]

``predict nuclei --format instances --tta N`` (each image to the model of its kind, each model's
chosen post-processing as chosen at one view) on the 106 held-out DSB2018 images of
:func:`budget.split`, TensorFlow float32, per image kind, with the seconds per image beside one
view's. TTA averages the probabilities of the image's flips and 90-degree rotations
(:func:`keras_unet.tiling.predict_tta`).
"""
import argparse
import time

from _common import machine, write_table
from budget import split
from nuclei_model import held_out_scores


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    _, tests = split()
    held_out_scores("nuclei", tests[:2])  # networks loaded and graphs built before the clock
    rows, base = [], None
    for views in args.views:
        start = time.perf_counter()
        scores = held_out_scores("nuclei", tests, tta=views)
        seconds = (time.perf_counter() - start) / len(tests)
        base = base or seconds
        rows.append([str(views)] + [f"{scores[k]['f1_iou50']:.3f} / {scores[k]['dsb_score']:.3f}" for k in scores]
                    + [f"{seconds:.2f} ({seconds / base:.1f}x)"])
    kinds = list(scores)
    write_table("tta", "Test-time augmentation for predict nuclei, per image kind",
                "python benchmarks/tta.py --views " + " ".join(map(str, args.views)),
                ["views"] + [f"{k} ({scores[k]['images']}): F1 / DSB" for k in kinds] + ["s per image"], rows,
                f"Held-out DSB2018 images of budget.split, predict nuclei (light backgrounds to nuclei-stained), "
                f"each model's post-processing as chosen at one view, TensorFlow float32 ({machine()}).")


if __name__ == "__main__":
    main()
