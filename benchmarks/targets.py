"""Touching nuclei: which target and post-processing separate them best. On the DSB2018 split of
benchmarks/budget.py, at one training budget each:

* the paper's two classes with separation borders and weight maps, objects as components;
* the same network, touching objects also split by a distance-transform watershed;
* a three-class target (background / interior / boundary; Caicedo et al. 2019), interiors grown
  over their boundary.

Each variant's threshold and minimum size are chosen on the run's validation images (the DSB
score, :mod:`keras_unet.postprocess`); the scores are on the held-out images (every fifth of each kind).

    python benchmarks/targets.py --minutes 10 [--borders-run RUN] [--three-class-run RUN]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import write_table
from budget import kind, split
from keras_unet import data, inference, metrics, postprocess, runs, settings, tiling, train
from keras_unet.instances import instances_from_probabilities

VALIDATION_IMAGES = 16  # as train.VALIDATION_IMAGES: the choice sees what fit's own choice sees


def trained(target: str, minutes: float, run_dir: Path | None, runs_root: Path, train_pairs) -> Path:
    if run_dir is not None:
        return run_dir
    config = settings.preset("cpu", max_minutes=minutes, target=target)
    params = train.weight_params(config)
    datasets = data.load_pairs(train_pairs, params).split(config.val_fraction, config.seed)
    run_dir = runs_root / f"{target}-{time.strftime('%H%M%S')}"
    train.fit(config, run_dir, verbose=2, datasets=datasets)
    return run_dir


def validation_pairs(run_dir: Path, limit: int = VALIDATION_IMAGES) -> list:
    """The run's own validation images (its record), as (image, true instances)."""
    sources = runs.record(run_dir)["val_samples"]
    picks = [sources[i] for i in np.linspace(0, len(sources) - 1, min(limit, len(sources))).astype(int)]
    masks = Path(picks[0]).parent.parent / "masks"
    return [(data.read_image(p), data.read_image(masks / f"{Path(p).stem}.tif").astype(np.int64)) for p in picks]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs", default="/tmp/target_runs")
    parser.add_argument("--borders-run", type=Path, default=None, help="a cpu-preset run on the same split")
    parser.add_argument("--three-class-run", type=Path, default=None)
    args = parser.parse_args()
    train_pairs, test_pairs = split()
    tests = [(data.read_image(i), data.read_image(m).astype(np.int64)) for i, m in test_pairs]
    variants = {"two classes, borders + weight maps (the paper's)": ("borders", ("none",)),
                "two classes, + watershed split": ("borders", ("watershed",)),
                "three classes: background / interior / boundary": ("three_class", ("boundary",))}
    run_dirs = {"borders": trained("borders", args.minutes, args.borders_run, Path(args.runs), train_pairs),
                "three_class": trained("three_class", args.minutes, args.three_class_run, Path(args.runs), train_pairs)}
    rows = []
    for label, (target, splits) in variants.items():
        run_dir = run_dirs[target]
        model = inference.load_model(run_dir)
        val = validation_pairs(run_dir)
        probabilities = [tiling.predict_tiled(model, image) for image, _ in val]
        chosen = postprocess.choose(probabilities, [t for _, t in val], splits=splits,
                                    typical_min_size=runs.min_object_size(run_dir) or 0)
        per_kind = {}
        for image, truth in tests:
            found = instances_from_probabilities(inference.predict_probabilities(model, image),
                                                 threshold=chosen["threshold"], min_size=chosen["min_size"],
                                                 split=chosen["split"])
            per_kind.setdefault(kind(image), []).append(metrics.evaluate_objects(found, truth))
        state = runs.read_json(run_dir / runs.STATE)
        setting = "argmax" if chosen["threshold"] is None else f"p >= {chosen['threshold']:g}"
        for group, results in sorted(per_kind.items()) + [("all", [r for rs in per_kind.values() for r in rs])]:
            rows.append([group, len(results), label, f"{setting}, min {chosen['min_size']} px",
                         f"{np.mean([r['f1'] for r in results]):.3f}", f"{np.mean([r['dsb_score'] for r in results]):.3f}",
                         f"{chosen['value']:.3f}", f"{state.get('epoch')} epochs"])
        print(*rows[-len(per_kind) - 1:], sep="\n", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r[0] == "all", r[0]))
    write_table("targets", f"Touching nuclei: targets and splitting, cpu preset at {args.minutes:g} min each, "
                "DSB2018 held-out images per kind",
                f"python benchmarks/targets.py --minutes {args.minutes:g}",
                ["kind", "images", "target / objects", "chosen on validation", "F1 @ IoU 0.5", "DSB score",
                 "validation DSB", "training"], rows,
                "Training: the 425 non-held-out images, of which fit validates on 20 % (seed 0); each variant's threshold "
                "and minimum size are chosen on 16 of the run's validation images; test: 106 held-out images, every "
                "fifth of each kind. The two two-class variants are one network.")


if __name__ == "__main__":
    main()
