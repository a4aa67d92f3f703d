"""Quality at a CPU budget: the ``cpu`` preset trained for a fixed time on each real set, scored
against a classical baseline (Otsu + distance-transform watershed) on held-out images, in one run.

    python benchmarks/quality.py --minutes 30 [--sets nuclei-cross nuclei-split isbi synthetic]

Sets (../shared/data; nothing from them is committed):

* ``nuclei-cross``: train on coelho2009 ``gnf_`` (U2OS), test on every ``ic100_`` (NIH3T3) image:
  another cell line, microscope and intensity range.
* ``nuclei-split``: train on both collections less every fifth index, test on those (per collection).
* ``isbi``: ISBI 2012 slices 0-19 train, 20-24 validate, 25-29 test; objects = cells, plus the
  challenge's metrics (best over thresholds, as the challenge scored).
* ``synthetic``: the embedded synthetic cells, 5 fresh test samples.

Each model is the run's ``model.keras`` (chosen on validation object F1) used as
``keras-unet predict --format instances`` uses it: with the post-processing the run chose on its
validation images (threshold, minimum size, split), and for comparison with argmax and the run's
``min_object_size`` (what predict did before the choice). ``results/quality_before.md`` is the
same benchmark on the version before the budget planner, cheap validation and the choice.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import write_table
from budget import time_shares  # validation's share of the wall time, from log.csv
from instances import classical  # the baseline, shared with benchmarks/instances.py
from keras_unet import data, inference, metrics, runs, settings, synthetic, train, weights
from keras_unet.instances import instances_from_probabilities
from keras_unet.postprocess import PostProcessing

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NUCLEI = DATA / "coelho2009"


def nuclei_pairs(names) -> list:
    return [(NUCLEI / "images" / f"{n}.png", NUCLEI / "masks" / f"{n}.png") for n in names]


def stems(prefix: str) -> list[str]:
    return sorted(p.stem for p in (NUCLEI / "images").glob(f"{prefix}*.png"))


def instance_truth(path) -> np.ndarray:
    return data.read_image(path).astype(np.int64)


def isbi_truth(path) -> np.ndarray:
    return weights.instances_from_binary(data.read_image(path) > 127)


def sets(names) -> dict:
    """name -> (train Dataset, validation Dataset or None, {test name: [(image, true instances)]})."""
    out = {}
    if "nuclei-cross" in names:
        train_set = data.load_pairs(nuclei_pairs(stems("gnf_")))
        tests = {"ic100 (NIH3T3), all 49": [(data.read_image(i), instance_truth(m)) for i, m in nuclei_pairs(stems("ic100_"))]}
        out["nuclei-cross: train gnf (U2OS)"] = (train_set, None, tests)
    if "nuclei-split" in names:
        held = {s for prefix in ("gnf_", "ic100_") for s in stems(prefix) if int(s.split("-")[-1]) % 5 == 0}
        train_set = data.load_pairs(nuclei_pairs([s for s in stems("") if s not in held]))
        tests = {f"{prefix[:-1]} held out (every 5th)": [(data.read_image(i), instance_truth(m))
                                                         for i, m in nuclei_pairs(sorted(s for s in held if s.startswith(prefix)))]
                 for prefix in ("gnf_", "ic100_")}
        out["nuclei-split: train both collections"] = (train_set, None, tests)
    if "isbi" in names:
        pairs = data.find_pairs(DATA / "isbi2012" / "train")
        full = data.load_pairs(pairs)
        tests = {"ISBI 2012 slices 25-29": [(data.read_image(i), isbi_truth(m)) for i, m in pairs[25:30]]}
        out["isbi: slices 0-19"] = (full.subset(range(20)), full.subset(range(20, 25)), tests)
    if "synthetic" in names:
        full = synthetic.as_dataset(10, (256, 256), 0, data.WeightParams())
        tests = {"synthetic cells, 5 fresh": [synthetic.sample((256, 256), seed=10_000 + i) for i in range(5)]}
        out["synthetic: 10 images"] = (full, None, tests)
    return out


def baseline_peak_distance(targets) -> int:
    """The baseline's one size setting, from the training objects as the U-Net gets them: seeds at
    least half the median object radius apart (one seed per round object, fewer splits of big ones)."""
    areas = np.concatenate([np.bincount(weights.instances_from_binary(t == 1).ravel())[1:] for t in targets])
    return max(3, int(0.5 * np.sqrt(np.median(areas) / np.pi)))


def scores(found: np.ndarray, truth: np.ndarray) -> dict:
    row = metrics.evaluate_objects(found, truth)
    row["pixel_iou"] = float(metrics.iou(found > 0, truth > 0)[1])
    return row


def table_row(name, test, method, results, seconds, extra="") -> list:
    mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    return [name, test, method, f"{mean['f1']:.3f}", f"{mean['dsb_score']:.3f}", f"{mean['seg']:.3f}",
            f"{mean['pixel_iou']:.3f}", f"{sum(r['objects_found'] for r in results)} / "
            f"{sum(r['objects_true'] for r in results)}", f"{np.mean(seconds):.2f}", extra]


def challenge(probabilities: list, truths: list) -> str:
    """ISBI 2012 metrics, best over thresholds (the challenge's protocol), averaged over slices."""
    rows = [metrics.challenge_sweep(p[..., 1], t > 0) for p, t in zip(probabilities, truths)]
    names = [("swept_warping_error", "warping"), ("swept_isbi2012_rand_error", "Rand"), ("swept_pixel_error", "pixel")]
    return ", ".join(f"{label} {np.mean([r[k] for r in rows]):.4f}" for k, label in names if k in rows[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per set (the cpu preset's 30)")
    parser.add_argument("--sets", nargs="+", default=["nuclei-cross", "nuclei-split", "isbi", "synthetic"])
    parser.add_argument("--runs", default="/tmp/quality_runs", help="run folders go here")
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()

    rows = []
    for name, (train_set, val_set, tests) in sets(args.sets).items():
        config = settings.preset(args.preset, max_minutes=args.minutes)
        if val_set is None:
            train_set, val_set = train_set.split(config.val_fraction, config.seed)
        run_dir = Path(args.runs) / f"{name.split(':')[0]}-{time.strftime('%H%M%S')}"
        start = time.perf_counter()
        state = train.fit(config, run_dir, verbose=0, datasets=(train_set, val_set))
        trained = (f"{(time.perf_counter() - start) / 60:.0f} min, {state['epoch']} epochs x {config.steps_per_epoch} "
                   f"steps; best {state['selected_on']} {state.get('best_value', float('nan')):.3f} "
                   f"(epoch {state.get('best_epoch')})")
        print(name, trained, file=sys.stderr, flush=True)
        model = inference.load_model(run_dir)
        min_size = runs.min_object_size(run_dir)  # what predict --format instances used before the choice
        chosen = PostProcessing.of_record(runs.record(run_dir)).as_dict()
        how = "argmax" if chosen["threshold"] is None else f"p >= {chosen['threshold']:g}"
        how = f"{how}, min {chosen['min_size']} px, split {chosen['split']}"
        shares = time_shares(run_dir)
        min_distance = baseline_peak_distance(train_set.targets)
        for test, pairs in tests.items():
            base, base_s, plain, net, net_s, probabilities = [], [], [], [], [], []
            for image, truth in pairs:
                t = time.perf_counter()
                base.append(scores(classical(image, min_size, min_distance), truth))
                base_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                probabilities.append(inference.predict_probabilities(model, image))
                net.append(scores(instances_from_probabilities(probabilities[-1], threshold=chosen["threshold"],
                                                               min_size=chosen["min_size"], split=chosen["split"]),
                                  truth))
                net_s.append(time.perf_counter() - t)
                plain.append(scores(instances_from_probabilities(probabilities[-1], min_size=min_size), truth))
            rows.append(table_row(name, test, f"Otsu + distance watershed (min size {min_size} px, seeds "
                                              f"{min_distance} px apart)", base, base_s))
            extra = challenge(probabilities, [t for _, t in pairs]) if name.startswith("isbi") else ""
            rows.append(table_row(name, test, f"U-Net, {args.preset} preset, argmax, min {min_size} px ({trained})",
                                  plain, net_s, f"validation {shares}"))
            rows.append(table_row(name, test, f"U-Net, {args.preset} preset, chosen on validation: {how}", net, net_s,
                                  "; ".join(x for x in (f"validation {shares}", extra) if x)))
            print(*rows[-3:], sep="\n", file=sys.stderr, flush=True)
    write_table("quality", f"Quality at a CPU budget: the {args.preset} preset, {args.minutes:g} min per set, vs a classical baseline",
                "python benchmarks/quality.py " + f"--minutes {args.minutes:g} --sets {' '.join(args.sets)}",
                ["training set", "test", "method", "F1 @ IoU 0.5", "DSB score", "SEG", "pixel IoU",
                 "objects found / true", "s / image", "validation's share; ISBI challenge metrics"],
                rows, "U-Net instances: the run's chosen threshold (or argmax), 4-connected components, holes filled, "
                      "objects under the chosen minimum size dropped, the chosen split, separation borders given back "
                      "(keras_unet.instances); the argmax row uses the run's min_object_size (a quarter of the 5th "
                      "percentile of its training objects' areas), as predict did before the choice. Per-image "
                      "percentile normalisation (1, 99.8). Baseline: Otsu threshold, holes filled, the run's "
                      "min_object_size, watershed of the distance transform from its peaks. Means over the test "
                      "images. Before: results/quality_before.md (2026-11-26, the same sets and budget).")


if __name__ == "__main__":
    main()
