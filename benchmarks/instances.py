"""Objects: U-Net instances against a classical baseline (Otsu threshold + distance-transform
watershed, scikit-image) on real instance data and the synthetic cells, in one run.

    python benchmarks/instances.py --isbi-model RUN_DIR --nuclei-model RUN_DIR --synthetic-model RUN_DIR

ISBI 2012: slices 25-29, true objects = 4-connected cells of the label images. Nuclei
(../shared/data/coelho2009): the first ``--nuclei-images`` images of each collection. Synthetic:
5 fresh samples. A data set whose model is not given is scored for the baseline only.
"""
import argparse
import inspect
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from _common import write_table
from keras_unet import data, inference, metrics, synthetic, weights
from keras_unet.instances import instances_from_probabilities

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def classical(image: np.ndarray, min_size: int, min_distance: int) -> np.ndarray:
    """Otsu threshold, holes filled, small objects dropped, distance-transform watershed."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    image = image[..., 0] if image.ndim == 3 else image
    mask = ndimage.binary_fill_holes(image > threshold_otsu(image))
    # Objects of up to min_size px go: what scikit-image 0.26's deprecated min_size did when the
    # tables were measured (checked: it drops a 5 px object at min_size=5), now its max_size.
    if "max_size" in inspect.signature(remove_small_objects).parameters:
        mask = remove_small_objects(mask, max_size=min_size)
    else:  # before 0.26: min_size drops objects under it
        mask = remove_small_objects(mask, min_size=min_size + 1)
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=weights.instances_from_binary(mask),
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def score(name, method, pairs, segment) -> list:
    results, seconds = [], []
    for image, truth in pairs:
        start = time.perf_counter()
        found = segment(image)
        seconds.append(time.perf_counter() - start)
        results.append(metrics.evaluate_objects(found, truth))
    mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    return [name, method, len(pairs), f"{mean['f1']:.3f}", f"{mean['dsb_score']:.3f}", f"{mean['seg']:.3f}",
            f"{sum(r['objects_found'] for r in results)} / {sum(r['objects_true'] for r in results)}",
            f"{np.mean(seconds):.2f}"]


def unet(model_path, min_size):
    model = inference.load_model(model_path)
    return lambda image: instances_from_probabilities(inference.predict_probabilities(model, image), min_size=min_size)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--isbi-model")
    parser.add_argument("--nuclei-model")
    parser.add_argument("--synthetic-model")
    parser.add_argument("--nuclei-images", type=int, default=8)
    args = parser.parse_args()

    sets = {}
    isbi = [(data.read_image(DATA / "isbi2012" / "train" / "image" / f"{i:02d}.png"),
             weights.instances_from_binary(data.read_image(DATA / "isbi2012" / "train" / "label" / f"{i:02d}.png") > 127))
            for i in range(25, 30)]
    sets["ISBI 2012 slices 25-29"] = (isbi, args.isbi_model, dict(min_size=20, min_distance=10))
    for prefix, line in (("gnf_", "U2OS"), ("ic100_", "NIH3T3")):
        stems = sorted(p.stem for p in (DATA / "coelho2009" / "images").glob(f"{prefix}*.png"))[: args.nuclei_images]
        nuclei = [(data.read_image(DATA / "coelho2009" / "images" / f"{s}.png"),
                   data.read_image(DATA / "coelho2009" / "masks" / f"{s}.png").astype(np.int64)) for s in stems]
        sets[f"nuclei {prefix[:-1]} ({line})"] = (nuclei, args.nuclei_model, dict(min_size=50, min_distance=8))
    samples = [synthetic.sample((256, 256), seed=10_000 + i) for i in range(5)]
    sets["synthetic cells"] = (samples, args.synthetic_model, dict(min_size=20, min_distance=8))

    rows = []
    for name, (pairs, model_path, options) in sets.items():
        rows.append(score(name, "Otsu + distance watershed", pairs,
                          lambda image, o=options: classical(image, o["min_size"], o["min_distance"])))
        if model_path:
            rows.append(score(name, f"U-Net ({Path(model_path).name})", pairs, unet(model_path, options["min_size"])))
    write_table("instances", "Objects: U-Net instances vs a classical baseline", "python benchmarks/instances.py "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
                ["data", "method", "images", "F1 @ IoU 0.5", "DSB score", "SEG", "objects found / true", "s / image"],
                rows, "U-Net instances: argmax, 4-connected components, holes filled, objects under the data set's "
                      "min size dropped, separation borders given back (keras_unet.instances). Baseline: Otsu "
                      "threshold, holes filled, same min size, watershed of the distance transform from its peaks.")


if __name__ == "__main__":
    main()
