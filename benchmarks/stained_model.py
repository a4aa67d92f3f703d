"""A second nuclei model for stained tissue and brightfield (dark nuclei on a light background), a
lever of the nuclei issue: StarDist ships ``2D_versatile_fluo`` and ``2D_versatile_he`` for the
same reason. The shipped ``nuclei`` model is fine-tuned on the stained and brightfield images of its
own training set only, and scored per image kind on the held-out DSB2018 images beside the shipped
model and the general model fine-tuned for a budget of its own (benchmarks/stain.py's control).

    python benchmarks/stained_model.py [--minutes 35] [--runs /tmp/stained] [--install]

Data and split: as :mod:`nuclei_model` (:func:`budget.split`); the training images of kinds colour
and brightfield (fit selects and chooses its post-processing on its own 20 % of them); the 106
held-out images score. The ``finetune`` preset from the shipped weights (``--from nuclei``),
``--max-minutes``, seed 0, ``--precision auto``. Resumable (its run folder under ``--runs``).
``--install`` copies the result into keras_unet/models/nuclei-stained/.
"""
import argparse
import shutil
from pathlib import Path

import numpy as np

from _common import machine, write_table
from budget import kind, split
from keras_unet import data, runs
from nuclei_model import finetuned, held_out_scores

PACKAGE = Path(__file__).resolve().parents[1] / "keras_unet" / "models" / "nuclei-stained"
STAINED = ("colour", "brightfield")


def install(run_dir: Path, scores: dict, recipe: str, images: int) -> None:
    """The run into keras_unet/models/nuclei-stained/ with its card, and ``nuclei``'s card naming it
    as its partner for light-background images (:func:`keras_unet.runs.partners`)."""
    # a run that went on from the shipped nuclei-stained: its card's training goes before this one's
    previous = runs.card("nuclei-stained") if runs.Run(run_dir).settings().get("init_from") == "nuclei-stained" else {}
    PACKAGE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(runs.run_file(run_dir, runs.MODEL), runs.run_file(PACKAGE, runs.MODEL))
    record = runs.record(run_dir)
    for key in ("train_samples", "val_samples"):  # file names, not this machine's paths
        record[key] = [Path(p).name for p in record.get(key, [])]
    runs.write_json(runs.run_file(PACKAGE, runs.CONFIG), record)
    log = np.genfromtxt(runs.run_file(run_dir, runs.LOG), delimiter=",", names=True)
    wall = (np.nansum(log["train_seconds"]) + np.nansum(log["val_seconds"])) / 60
    runs.write_json(runs.run_file(PACKAGE, runs.CARD), {
        "name": "nuclei-stained",
        "description": "Nuclei in stained tissue (H&E and other stains) and brightfield: dark nuclei on a light "
                       "background (U-Net, 16 base filters, 2 classes with separation borders); nuclei hands it "
                       "such images by itself",
        "training_data": f"the {images} stained and brightfield images among nuclei's DSB2018 training images "
                         "(dsb2018-train, fixed masks)",
        "licence": runs.card("nuclei")["licence"],
        "input": "2D RGB or gray images of dark nuclei on a light background, any bit depth; nuclei of about "
                 f"10-60 px diameter (median {record.get('object_diameter')} px in training)",
        "recipe": recipe,
        "trained": f"fine-tuned from {runs.Run(run_dir).settings().get('init_from')}: "
                   f"{runs.Run(run_dir).state().get('epoch')} epochs x 25 steps, {wall:.0f} min on 2 CPU cores "
                   f"({machine()})" + (f"; before that: {previous['trained']}" if previous else ""),
        "held_out": "the stained (colour) and brightfield images among nuclei's 106 held-out dsb2018-train images",
        "scores": {k: v for k, v in scores.items() if k in STAINED},
    })
    card = runs.card("nuclei")
    card["partners"] = {"light": "nuclei-stained"}
    runs.write_json(runs.run_file(runs.SHIPPED / "nuclei", runs.CARD), card)
    print(f"installed into {PACKAGE}; nuclei hands it light-background images")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=35.0, help="training budget")
    parser.add_argument("--runs", default="/tmp/stained")
    parser.add_argument("--control", default="/tmp/stain/jitter-0",
                        help="the general model trained on from the shipped one (benchmarks/stain.py), if there")
    parser.add_argument("--start", choices=["nuclei", "nuclei-stained"], default="nuclei",
                        help="the weights it starts from: nuclei-stained goes on from the shipped one (a longer budget)")
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args()
    train_pairs, tests = split()
    stained = [pair for pair in train_pairs if kind(data.read_image(pair[0])) in STAINED]
    recipe = f"python benchmarks/stained_model.py --minutes {args.minutes:g} --start {args.start} --install"
    if args.start == "nuclei-stained":
        recipe = f"{runs.card('nuclei-stained')['recipe']}, then {recipe}"
    run_dir = finetuned(Path(args.runs) / "stained", stained, args.start, max_minutes=args.minutes)
    arms = {"nuclei alone, every image": ("nuclei", False)}
    if args.start == "nuclei-stained":
        arms["nuclei-stained as shipped before"] = ("nuclei-stained", False)
    this = f"stained model alone (+{args.minutes:g} min from {args.start} on {len(stained)} images)"
    arms[this] = (run_dir, False)
    if "postprocessing" in runs.record(Path(args.control)):
        arms["general model +18 min (stain.py control)"] = (Path(args.control), False)
    scores = {name: held_out_scores(source, tests, by_kind=by_kind) for name, (source, by_kind) in arms.items()}
    if args.install:
        install(run_dir, scores[this], recipe, len(stained))
        scores["predict nuclei: light backgrounds to nuclei-stained"] = held_out_scores("nuclei", tests)
        card = runs.card("nuclei")
        card["scores_alone"] = scores["nuclei alone, every image"]
        card["scores"] = scores["predict nuclei: light backgrounds to nuclei-stained"]
        runs.write_json(runs.run_file(runs.SHIPPED / "nuclei", runs.CARD), card)
    kinds = list(scores["nuclei alone, every image"])
    rows = [[name] + [f"{per_kind[k]['f1_iou50']:.3f} / {per_kind[k]['dsb_score']:.3f}" for k in kinds]
            for name, per_kind in scores.items()]
    write_table("stained_model", "A model for stained and brightfield nuclei beside the general one, per image kind",
                f"python benchmarks/stained_model.py --minutes {args.minutes:g}"
                + f" --start {args.start}" * (args.start != "nuclei") + " --install" * args.install,
                ["model"] + [f"{k} ({scores['nuclei alone, every image'][k]['images']}): F1 / DSB" for k in kinds],
                rows,
                f"Held-out DSB2018 images of budget.split, each model with its own chosen post-processing, TensorFlow "
                f"float32 ({machine()}). The stained model starts from the shipped model's weights with the finetune "
                "preset and sees only the training images of kind colour or brightfield; its fluorescence column "
                "is what it would give if it were used there (it is not). The last row is what predict nuclei "
                "does: each image to the model of its background (keras_unet.kinds).")


if __name__ == "__main__":
    main()
