"""Predicting enlarged images against merged nuclei: ``predict nuclei --diameter`` given so that
every image is enlarged by a fixed factor before the network (and its probabilities brought back
to the image), F1 @ IoU 0.5 / DSB score and the share of true objects merged with a neighbour,
per image kind.

Merged neighbours are the largest error of ``predict nuclei`` (benchmarks/errors.py: 11 % of
true objects, with no valley in the probabilities across the join). Enlarged, the gap between
two touching nuclei is wider in the network's pixels, which may let it draw the border it was
trained to draw; it also moves the objects away from the sizes it learned.

    python benchmarks/upscale.py [--factors 1 1.5 2] [--set held-out|validation] [--limit N]

Sets: the 106 held-out images of the shipped model's card (budget.split), or the shipped
model's own validation samples (fit's val_samples: what a default is chosen on).
"""
from __future__ import annotations

import argparse
import sys
import time
import numpy as np

from _common import write_table
from budget import kind, split
from errors import error_counts
from keras_unet import data, metrics
from keras_unet.predictor import Options, Predictor


def validation_pairs() -> list:
    """The shipped ``nuclei`` model's validation samples as ``(image, mask)`` pairs."""
    names = set(Predictor.of("nuclei").record["val_samples"])  # file names (nuclei_model.py)
    return [pair for pair in split()[0] if pair[0].name in names]


def scores(predictor: Predictor, pairs: list, options: Options) -> tuple[dict, float]:
    """``({kind: {f1, dsb, merged, images}}, seconds per image)`` of ``predictor`` on ``pairs``."""
    per_kind, seconds = {}, []
    for image_path, mask_path in pairs:
        image, truth = data.read_image(image_path), data.read_image(mask_path).astype(np.int64)
        start = time.perf_counter()
        found = predictor.segment(image, options, name=str(image_path)).astype(np.int64)
        seconds.append(time.perf_counter() - start)
        row = metrics.evaluate_objects(found, truth)
        row["merged"] = error_counts(found, truth)["merged with a neighbour"]
        per_kind.setdefault(kind(image), []).append(row)
    everything = [r for rows in per_kind.values() for r in rows]
    out = {}
    for name, rows in sorted(per_kind.items()) + [("all", everything)]:
        out[name] = {"images": len(rows), "f1": float(np.mean([r["f1"] for r in rows])),
                     "dsb": float(np.mean([r["dsb_score"] for r in rows])),
                     "merged": sum(r["merged"] for r in rows) / max(1, sum(r["objects_true"] for r in rows))}
    return out, float(np.mean(seconds))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--set", choices=["held-out", "validation"], default="held-out")
    parser.add_argument("--limit", type=int, default=0, help="images (0: all)")
    parser.add_argument("--name", default="upscale")
    args = parser.parse_args()
    pairs = split()[1] if args.set == "held-out" else validation_pairs()
    pairs = pairs[: args.limit] if args.limit else pairs
    options = Options(engine="tensorflow", precision="float32")
    learned = Predictor.of("nuclei").object_diameter
    rows, header = [], None
    for factor in args.factors:
        # --diameter d resizes by learned / d: the factor asked for
        predictor = Predictor.of("nuclei", diameter=None if factor == 1 else learned / factor)
        per_kind, seconds = scores(predictor, pairs, options)
        header = header or (["enlarged by"] + [f"{k} ({v['images']}): F1 / DSB" for k, v in per_kind.items()]
                            + ["true objects merged (all)", "s / image"])
        rows.append([f"{factor:g}x"] + [f"{v['f1']:.3f} / {v['dsb']:.3f}" for v in per_kind.values()]
                    + [f"{per_kind['all']['merged']:.1%}", f"{seconds:.2f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    what = "the 106 held-out images of budget.split" if args.set == "held-out" else \
        "the shipped nuclei model's validation samples (fit's val_samples)"
    notes = (f"DSB2018 {what}; predict nuclei (light backgrounds to nuclei-stained, which gets the same "
             "--diameter), each model's own post-processing with its minimum size in the image's pixels, "
             "TensorFlow float32. Enlarged by f: --diameter learned / f (the shipped model learned "
             f"{learned:.1f} px), the probabilities resized back to the image before the objects are drawn. "
             "Merged: true objects whose found object also holds half of another (benchmarks/errors.py).")
    path = write_table(args.name, "Enlarged images against merged nuclei: predict nuclei with the images enlarged",
                       " ".join(["python benchmarks/upscale.py"] + sys.argv[1:]), header, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
