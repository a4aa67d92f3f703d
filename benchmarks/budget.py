"""A training budget spent on training: the ``cpu`` preset on DSB2018 nuclei at a fixed budget,
the share of the time spent validating, the post-processing chosen on validation data, and the
objects on held-out images against Otsu + watershed, per image kind.

    python benchmarks/budget.py --minutes 10 [--before RUN_DIR]

Data (../shared/data/dsb2018-train; nothing from it is committed): every fifth image of each kind
(fluorescence, brightfield, colour stains; see :func:`kind`) is held out as the test set; the rest
is what ``fit`` gets, which validates on a split of it (``val_fraction``). ``--before`` scores a run
folder trained on the same split by an earlier version (the same command of that version's
library; its config.json has no post-processing, so it scores as it predicted then).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import write_table
from instances import classical  # the baseline, shared with benchmarks/instances.py
from keras_unet import data, inference, metrics, runs, settings, train, weights
from keras_unet.instances import instances_from_probabilities
from keras_unet.postprocess import PostProcessing

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018-train"


def kind(image: np.ndarray) -> str:
    """``colour`` where the channels differ (H&E and other stains), else ``brightfield`` on a light
    background, ``fluorescence`` on a dark one."""
    if image.ndim == 3 and image.shape[-1] >= 3 and not (np.array_equal(image[..., 0], image[..., 1])
                                                         and np.array_equal(image[..., 1], image[..., 2])):
        return "colour"
    return "brightfield" if float(np.median(image)) > 127 else "fluorescence"


def split() -> tuple[list, list]:
    """``(training pairs, test pairs)``: every fifth image of each kind held out, by file name order."""
    pairs = [(p, DSB / "masks" / f"{p.stem}.tif") for p in sorted((DSB / "images").glob("*.png"))]
    by_kind = {}
    for pair in pairs:
        by_kind.setdefault(kind(data.read_image(pair[0])), []).append(pair)
    train_pairs, test_pairs = [], []
    for members in by_kind.values():
        for i, pair in enumerate(members):
            (test_pairs if i % 5 == 4 else train_pairs).append(pair)
    return sorted(train_pairs), sorted(test_pairs)


def time_shares(run_dir: Path) -> str:
    """Training and validation seconds from ``log.csv`` (runs from before the timing: n/a)."""
    log = np.genfromtxt(runs.run_file(run_dir, runs.LOG), delimiter=",", names=True)
    if "val_seconds" not in (log.dtype.names or ()):
        return "n/a (no timing in log.csv)"
    trained, validated = np.nansum(log["train_seconds"]), np.nansum(log["val_seconds"])
    return f"{validated / (trained + validated):.1%} of {(trained + validated) / 60:.1f} min"


def evaluate(name: str, run_dir: Path, tests: list, min_distance: int, rows: list, baseline: bool) -> None:
    model = inference.load_model(run_dir)
    state = runs.read_json(run_dir / runs.STATE)
    recorded = PostProcessing.of_record(runs.record(run_dir)).as_dict()
    default = {"threshold": None, "min_size": runs.min_object_size(run_dir) or 0, "split": "none"}
    variants = {"argmax, run's min size": default}
    if recorded["chosen"]:
        threshold = "argmax" if recorded["threshold"] is None else f"p >= {recorded['threshold']:g}"
        variants[f"chosen on validation: {threshold}, min {recorded['min_size']} px, split {recorded['split']}"] = recorded
    results = {v: {} for v in variants}
    base, seconds = {}, []
    for image_path, mask_path in tests:
        image, truth = data.read_image(image_path), data.read_image(mask_path).astype(np.int64)
        group = kind(image)
        start = time.perf_counter()
        probabilities = inference.predict_probabilities(model, image)
        seconds.append(time.perf_counter() - start)
        for label, chosen in variants.items():
            found = instances_from_probabilities(probabilities, threshold=chosen["threshold"],
                                                 min_size=chosen["min_size"], split=chosen["split"])
            results[label].setdefault(group, []).append(metrics.evaluate_objects(found, truth))
        if baseline:
            base.setdefault(group, []).append(metrics.evaluate_objects(classical(image, default["min_size"],
                                                                                 min_distance), truth))
    trained = (f"{state.get('epoch')} epochs" + (f" of {state['plan']['epochs']} planned" if "plan" in state else "")
               + f", validation {time_shares(run_dir)}")
    groups = sorted({g for r in results.values() for g in r})
    for group in groups + ["all"]:
        def mean(per_group, key):
            values = [r[key] for g, rs in per_group.items() if group in (g, "all") for r in rs]
            return f"{np.mean(values):.3f}" if values else "-"

        count = sum(len(rs) for g, rs in next(iter(results.values())).items() if group in (g, "all"))
        if baseline:
            rows.append([group, count, "Otsu + distance watershed", mean(base, "f1"), mean(base, "dsb_score"), "", ""])
        for label in variants:
            rows.append([group, count, f"U-Net {name}: {label}", mean(results[label], "f1"),
                         mean(results[label], "dsb_score"), trained, f"{np.mean(seconds):.2f}"])
        print(*rows[-len(variants) - baseline:], sep="\n", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0, help="the training budget (the cpu preset's 30)")
    parser.add_argument("--runs", default="/tmp/budget_runs", help="run folders go here")
    parser.add_argument("--before", default=None, help="a run folder of an earlier version, same split")
    parser.add_argument("--run", default=None, help="score this run folder instead of training one")
    parser.add_argument("--fill-limit", type=int, default=None,
                        help="the planner's fill limit (1: the capped plan of before, never more than the "
                             "configured epochs) [keras_unet.budget.FILL_LIMIT]")
    parser.add_argument("--name", default="budget", help="results/NAME.md")
    args = parser.parse_args()
    if args.fill_limit is not None:
        from keras_unet import budget

        budget.FILL_LIMIT = args.fill_limit

    train_pairs, test_pairs = split()
    dataset = data.load_pairs(train_pairs)
    config = settings.preset("cpu", max_minutes=args.minutes)
    train_set, val_set = dataset.split(config.val_fraction, config.seed)
    run_dir = Path(args.run) if args.run else Path(args.runs) / f"dsb-{time.strftime('%H%M%S')}"
    if not args.run:
        start = time.perf_counter()
        train.fit(config, run_dir, verbose=2, datasets=(train_set, val_set))
        print(f"trained in {(time.perf_counter() - start) / 60:.1f} min -> {run_dir}", file=sys.stderr, flush=True)
    areas = np.concatenate([np.bincount(weights.instances_from_binary(t == 1).ravel())[1:] for t in train_set.targets])
    min_distance = max(3, int(0.5 * np.sqrt(np.median(areas) / np.pi)))  # as benchmarks/quality.py
    rows = []
    if args.before:
        evaluate("before", Path(args.before), test_pairs, min_distance, rows, baseline=False)
    evaluate("now", run_dir, test_pairs, min_distance, rows, baseline=True)
    write_table(args.name, f"DSB2018 nuclei, cpu preset at {args.minutes:g} min: held-out images per kind",
                f"python benchmarks/budget.py --minutes {args.minutes:g}" + (" --before RUN" if args.before else "")
                + (f" --fill-limit {args.fill_limit}" if args.fill_limit is not None else ""),
                ["kind", "test images", "method", "F1 @ IoU 0.5", "DSB score", "training", "s / image"], rows,
                f"Training: {len(train_set)} images, validation {len(val_set)} (a split of the same pairs); test: "
                f"{len(test_pairs)} held-out images, every fifth of each kind. 'before' is the run of the earlier "
                "version on the same split and budget. The baseline's minimum size is the run's; its seeds are half "
                "the median object radius apart.")


if __name__ == "__main__":
    main()
