"""Fine-tuning the shipped nuclei model on a few images of a new cell line, against training from
scratch, the shipped model as it is, and Otsu + watershed, at the same CPU budget.

    python benchmarks/finetune.py --minutes 10 --sizes 5 10 20 [--lines ic100_ gnf_]

Data: ../shared/data/coelho2009 (not used by the shipped model's training). Per cell line (NIH3T3
``ic100_``, U2OS ``gnf_``): every fifth image is the test set; the training images are the first
N of the others in a fixed random order (seed 0), of which fit validates on one fifth (at least
one). Fine-tuned: ``fit --from nuclei`` (the finetune preset); from scratch: the cpu preset; both
at ``--minutes``. Each run's post-processing is the one it chose on its validation images; the
shipped model's is its own; the baseline's minimum size is the shipped model's. The shipped model
with ``--diameter D`` (``predict --diameter``): D is the median equivalent diameter of the objects
in the first 5 training masks (what a user measures on a few of their images); the baseline is
then sized by D as well (minimum size scaled, seeds D/4 apart). ``--shipped-only`` skips training;
``--merge`` keeps the table's rows for the sizes not run now (the 2-hour grid run in parts).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, write_table
from instances import classical  # the baseline, shared with benchmarks/instances.py
import keras_unet
from keras_unet import data, metrics, runs, settings, train
from keras_unet.predictor import Predictor

NUCLEI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coelho2009"
LINES = {"ic100_": "NIH3T3", "gnf_": "U2OS"}


def pairs_of(prefix: str) -> tuple[list, list]:
    """``(training candidates in a fixed random order, test pairs)`` of one cell line."""
    stems = sorted(p.stem for p in (NUCLEI / "images").glob(f"{prefix}*.png"))
    pairs = [(NUCLEI / "images" / f"{s}.png", NUCLEI / "masks" / f"{s}.png") for s in stems]
    test = pairs[4::5]
    rest = [p for i, p in enumerate(pairs) if i % 5 != 4]
    order = np.random.default_rng(0).permutation(len(rest))
    return [rest[i] for i in order], test


def score(run_dir, tests: list, diameter=None) -> tuple[float, float]:
    """Mean F1 @ IoU 0.5 and DSB score with the run's (or shipped model's) own post-processing,
    as ``predict --format instances [--diameter]`` makes the objects."""
    rows = [metrics.evaluate_objects(keras_unet.segment(run_dir, image, diameter=diameter), truth)
            for image, truth in tests]
    return float(np.mean([r["f1"] for r in rows])), float(np.mean([r["dsb_score"] for r in rows]))


def measured_diameter(pairs) -> float:
    """The median equivalent diameter (px) of the objects in these masks."""
    areas = [a for _, mask in pairs for a in np.bincount(data.read_image(mask).astype(np.int64).ravel())[1:] if a]
    return float(np.median(np.sqrt(4 * np.asarray(areas) / np.pi)))


def trained(config, train_pairs, run_dir: Path) -> str:
    dataset = data.load_pairs(train_pairs, train.weight_params(config))
    fraction = max(config.val_fraction, 1.0 / len(train_pairs))
    start = time.perf_counter()
    state = train.fit(config, run_dir, verbose=0, datasets=dataset.split(fraction, config.seed))
    return f"{state['epoch']} epochs, {(time.perf_counter() - start) / 60:.1f} min"


def earlier_rows(path: Path, sizes: list[int]) -> list[list[str]]:
    """The trained rows of an earlier ``finetune.md`` for training-set sizes other than ``sizes``."""
    if not path.exists():
        return []
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in path.read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| cell line")]
    return [row for row in cells if row[1].isdigit() and int(row[1]) not in sizes]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--lines", nargs="+", default=list(LINES))
    parser.add_argument("--runs", default="/tmp/finetune_runs")
    parser.add_argument("--shipped-only", action="store_true", help="only the rows without training")
    parser.add_argument("--merge", action="store_true", help="keep the table's rows of the other sizes")
    args = parser.parse_args()
    source = runs.SHIPPED / "nuclei"
    rows = []
    for prefix in args.lines:
        candidates, test_pairs = pairs_of(prefix)
        tests = [(data.read_image(i), data.read_image(m).astype(np.int64)) for i, m in test_pairs]
        line = f"{LINES[prefix]} ({prefix}), {len(tests)} test images"
        f1, dsb = score(source, tests)
        rows.append([line, "-", "shipped nuclei model as it is", f"{f1:.3f}", f"{dsb:.3f}", ""])
        min_size = Predictor.of(source).postprocessing.min_size
        base = [metrics.evaluate_objects(classical(image, min_size, 6), truth) for image, truth in tests]
        rows.append([line, "-", "Otsu + distance watershed", f"{np.mean([r['f1'] for r in base]):.3f}",
                     f"{np.mean([r['dsb_score'] for r in base]):.3f}", ""])
        diameter = measured_diameter(candidates[:5])
        f1, dsb = score(source, tests, diameter=diameter)
        rows.append([line, "-", f"shipped nuclei model, --diameter {diameter:.0f}", f"{f1:.3f}", f"{dsb:.3f}", ""])
        sized = Predictor.of(source, diameter=diameter).postprocessing.min_size
        base = [metrics.evaluate_objects(classical(image, sized, max(2, round(diameter / 4))), truth)
                for image, truth in tests]
        rows.append([line, "-", f"Otsu + distance watershed sized by {diameter:.0f} px",
                     f"{np.mean([r['f1'] for r in base]):.3f}", f"{np.mean([r['dsb_score'] for r in base]):.3f}", ""])
        print(*rows[-4:], sep="\n", file=sys.stderr, flush=True)
        for n in ([] if args.shipped_only else args.sizes):
            chosen = candidates[:n]
            stamp = f"{prefix}{n}-{time.strftime('%H%M%S')}"
            variants = {
                "fine-tuned from nuclei": settings.preset("finetune", max_minutes=args.minutes,
                                                          **train.inherited_settings(source)),
                "from scratch (cpu preset)": settings.preset("cpu", max_minutes=args.minutes, epochs=1000),
            }
            for label, config in variants.items():
                run_dir = Path(args.runs) / f"{stamp}-{label.split()[0]}"
                how = trained(config, chosen, run_dir)
                f1, dsb = score(run_dir, tests)
                rows.append([line, n, label, f"{f1:.3f}", f"{dsb:.3f}", how])
                print(rows[-1], file=sys.stderr, flush=True)
    if args.shipped_only:  # its own table: the fine-tuning table stays as its last full run left it
        write_table("finetune_shipped", "The shipped nuclei model on coelho2009, as it is and with --diameter",
                    f"python benchmarks/finetune.py --shipped-only --lines {' '.join(args.lines)}",
                    ["cell line", "training images", "model", "F1 @ IoU 0.5", "DSB score", "training"], rows,
                    "Test: every fifth image of the line. D: the median equivalent diameter of the objects in the "
                    "first 5 training masks. The baseline's seeds are 6 px apart and its minimum size the shipped "
                    "model's, or (sized) D/4 apart and the minimum size scaled as --diameter scales it.")
        return
    name = "finetune" if args.minutes == 10 else f"finetune_{args.minutes:g}min"  # 10 min: the budget
    sizes = args.sizes
    if args.merge:  # rows of one line together, the untrained ones first, then by size (stable)
        kept = earlier_rows(RESULTS / f"{name}.md", args.sizes)
        rows = sorted(rows + kept, key=lambda r: ([*LINES.values()].index(r[0].split()[0]),
                                                  int(r[1]) if r[1] != "-" else -1))
        sizes = sorted({*args.sizes, *(int(r[1]) for r in kept)})
    write_table(name, f"Fine-tuning the shipped nuclei model on coelho2009, {args.minutes:g} min per run",
                f"python benchmarks/finetune.py --minutes {args.minutes:g} --sizes {' '.join(map(str, sizes))}",
                ["cell line", "training images", "model", "F1 @ IoU 0.5", "DSB score", "training"], rows,
                "Test: every fifth image of the line; training: the first N of the others in a fixed random order, "
                "one fifth (at least one) of them validating. Each run's objects use the post-processing it chose "
                "on its validation images. The baseline's seeds are 6 px apart, its minimum size the shipped model's.")


if __name__ == "__main__":
    main()
