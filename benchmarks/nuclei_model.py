"""The recipe of the shipped ``nuclei`` model: train it, score it on images it never saw, and put it
into the package (``keras_unet/models/nuclei/``). Resumable: run the same command again after an
interruption and it continues the run folder.

    python benchmarks/nuclei_model.py --epochs 260 --target borders|three_class [--zoom 1.5] [--runs /tmp/nuclei_model]

Data: ../shared/data/dsb2018-train (531 DSB2018 stage-1 images with fixed instance masks, CC0).
Split (:func:`budget.split`): every fifth image of each kind (fluorescence, brightfield, colour) is
the held-out part, never seen in training, model selection or the post-processing search; its
scores are the model's card. The rest (425) is what ``fit`` gets; it selects the model and chooses
the post-processing on its own 20 % split (seed 0).
Settings: the ``cpu`` preset (16 base filters, tile 348, batch 2, Adam 1e-3 with a cosine decay)
with a fixed number of epochs of 50 steps (no time limit: a slower machine takes longer rather
than cutting the schedule), seed 0; the target that benchmarks/targets.py found best.
coelho2009 is not used: it is where fine-tuning from this model is measured
(benchmarks/finetune.py), so it must stay unseen.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from _common import machine
from budget import kind, split
from errors import error_counts
from keras_unet import data, inference, metrics, runs, settings, train
from keras_unet.predictor import Predictor

PACKAGE = Path(__file__).resolve().parents[1] / "keras_unet" / "models" / "nuclei"


def run_to_end(run_dir: Path, pairs: list, config) -> Path:
    """The run of ``config`` on ``pairs`` (fit selects and chooses its post-processing on its own
    20 %): trained, or resumed, to its end (a finished run, whose post-processing is chosen at its
    very end, as it is)."""
    if "postprocessing" not in runs.record(run_dir):
        datasets = data.load_pairs(pairs, train.weight_params(config)).split(config.val_fraction, config.seed)
        if runs.Run(run_dir).started:
            train.resume(run_dir, verbose=2, datasets=datasets)
        else:
            train.fit(config, run_dir, verbose=2, datasets=datasets)
    return run_dir


def finetuned(run_dir: Path, pairs: list, start: str = "nuclei", **given) -> Path:
    """A run of the ``finetune`` preset from the weights of ``start`` on ``pairs``, seed 0, the
    ``given`` settings (:func:`run_to_end`)."""
    return run_to_end(run_dir, pairs, settings.preset("finetune", **train.inherited_settings(start, dict(seed=0, **given))))


def trained(run_dir: Path, pairs: list, **given) -> Path:
    """A run of the recipe (the ``cpu`` preset, a fixed schedule of ``epochs`` epochs of 50 steps,
    seed 0, the ``given`` settings) on ``pairs`` (:func:`run_to_end`)."""
    return run_to_end(run_dir, pairs, settings.preset("cpu", max_minutes=0.0, fixed_schedule=True, seed=0, **given))


def training_minutes(run_dir: Path) -> float:
    """Minutes of training and validation of a run, over every resumption (its ``log.csv``)."""
    log = np.genfromtxt(runs.run_file(run_dir, runs.LOG), delimiter=",", names=True)
    return float(np.nansum(log["train_seconds"]) + np.nansum(log["val_seconds"])) / 60


def held_out_scores(source, tests: list, by_kind: bool = True, tta: int = 1) -> dict:
    """Mean F1 @ IoU 0.5, DSB score and the share of true objects merged with a neighbour
    (benchmarks/errors.py) per kind and overall, each image predicted as ``predict SOURCE --format
    instances [--tta TTA]`` does (the handle's post-processing; a shipped model's partner for the
    images of its kind unless ``by_kind=False``), TensorFlow float32."""
    predictor = Predictor.of(source, by_kind=by_kind)
    per_kind = {}
    for image_path, mask_path in tests:
        image, truth = data.read_image(image_path), data.read_image(mask_path).astype(np.int64)
        handle = predictor.for_image(image)
        found = handle.postprocessing.objects(inference.predict_probabilities(handle.model, image, tta=tta))
        merged = error_counts(found.astype(np.int64), truth)["merged with a neighbour"]
        per_kind.setdefault(kind(image), []).append({**metrics.evaluate_objects(found, truth), "merged": merged})
    everything = [r for rows in per_kind.values() for r in rows]
    out = {}
    for name, rows in sorted(per_kind.items()) + [("all", everything)]:
        out[name] = {"images": len(rows), "f1_iou50": round(float(np.mean([r["f1"] for r in rows])), 3),
                     "dsb_score": round(float(np.mean([r["dsb_score"] for r in rows])), 3),
                     "merged": round(sum(r["merged"] for r in rows) / max(1, sum(r["objects_true"] for r in rows)), 3)}
    return out



def arm_rows(scores: dict, arms: dict) -> tuple[list, list]:
    """The header and rows of a table of levers: for each arm (name -> a shipped model's name or a
    run folder), its epochs (``-`` for a shipped model) and F1 / DSB per kind of ``scores[name]``
    (:func:`held_out_scores`), the first arm's kinds and image counts in the header."""
    first = next(iter(scores.values()))
    header = ["model", "epochs of 25 steps"] + [f"{k} ({first[k]['images']}): F1 / DSB" for k in first]
    rows = []
    for name, per_kind in scores.items():
        epochs = runs.Run(arms[name]).state().get("epoch") if isinstance(arms[name], Path) else "-"
        rows.append([name, epochs] + [f"{per_kind[k]['f1_iou50']:.3f} / {per_kind[k]['dsb_score']:.3f}" for k in first])
    return header, rows

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=260, help="epochs of 50 steps (260: about an hour here)")
    parser.add_argument("--target", choices=["borders", "three_class"], default="borders")
    parser.add_argument("--zoom", type=float, default=1.0, help="fit's --zoom: scale augmentation (1: off)")
    parser.add_argument("--base", type=int, default=16, help="base filters (the cpu preset's 16; 32 doubles the width)")
    parser.add_argument("--runs", default="/tmp/nuclei_model", help="the run folder (resumed where it exists)")
    parser.add_argument("--no-install", action="store_true", help="do not copy the result into the package")
    args = parser.parse_args()

    train_pairs, test_pairs = split()
    run_dir = Path(args.runs)
    start = time.perf_counter()
    trained(run_dir, train_pairs, epochs=args.epochs, target=args.target, zoom=args.zoom, base_filters=args.base)
    minutes = (time.perf_counter() - start) / 60
    state = runs.Run(run_dir).state()
    wall = training_minutes(run_dir)
    scores = held_out_scores(run_dir, test_pairs)
    print(json.dumps(scores, indent=1), file=sys.stderr)
    card = {
        "name": "nuclei",
        "description": f"Generalist nuclei segmentation (U-Net, {runs.Run(run_dir).settings()['base_filters']} base filters, "
                       + ("3 classes: background / interior / boundary)" if args.target == "three_class"
                          else "2 classes with separation borders)"),
        "training_data": f"DSB2018 stage-1 training images with fixed masks ({len(train_pairs)} of "
                         "dsb2018-train: fluorescence, brightfield, H&E and other stains)",
        "licence": "model: MIT (as keras-unet); training data: CC0 (Broad Institute BBBC038 with the community's mask fixes)",
        "input": "2D nuclei images, gray or RGB (gray is repeated to RGB), any bit depth: normalised per image by "
                 "percentiles inside the model; nuclei of about 10-60 px diameter",
        "recipe": f"python benchmarks/nuclei_model.py --epochs {args.epochs} --target {args.target}"
                  + (f" --zoom {args.zoom:g}" if args.zoom != 1.0 else "")
                  + (f" --base {args.base}" if args.base != 16 else ""),
        "trained": f"{state.get('epoch')} epochs x 50 steps, {wall:.0f} min of training and validation on 2 CPU cores "
                   f"({machine()})",
        "held_out": f"{len(test_pairs)} dsb2018-train images never seen in training (every fifth of each kind)",
        "scores": scores,
    }
    print(f"this call took {minutes:.1f} min", file=sys.stderr)
    if not args.no_install:
        PACKAGE.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs.run_file(run_dir, runs.MODEL), runs.run_file(PACKAGE, runs.MODEL))
        record = runs.record(run_dir)
        for key in ("train_samples", "val_samples"):  # file names, not this machine's paths
            record[key] = [Path(p).name for p in record.get(key, [])]
        runs.write_json(runs.run_file(PACKAGE, runs.CONFIG), record)  # atomically, as every run record
        partners = runs.read_json(runs.run_file(PACKAGE, runs.CARD)).get("partners")
        runs.write_json(runs.run_file(PACKAGE, runs.CARD), {**card, **({"partners": partners} if partners else {})})
        print(f"installed into {PACKAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
