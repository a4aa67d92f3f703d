"""What ``predict nuclei`` gets wrong, and whether the post-processing can mend it (a lever of the
nuclei issue: the DSB score is 0.48 where F1 @ IoU 0.5 is 0.83, so either the outlines or the
objects themselves are off).

    python benchmarks/errors.py

Probabilities of ``predict nuclei`` (each image to the model of its kind, TensorFlow float32) on
the shipped model's 85 validation images (its ``val_samples``; the verdict is read there) and the
106 held-out images of :func:`budget.split`. Table 1, held out: every true object counted once as
matched (IoU > 0.5 with a found object), merged (the found object holding most of it also holds
at least half of another true object), cut in pieces (no found object holds half of it), missed
(under half of it covered) or outline off (the rest); every unmatched found object as on
background (half of it or more), a merged blob (holding half of two or more true objects) or
other. Table 2: the model's own post-processing against changes of the objects' extent (grown
into lower probabilities, dilated, eroded) and against seeds cut at a higher probability, with
the objects grown back to the model's threshold (a split along the probability's valleys).
"""
import numpy as np
from scipy import ndimage
from skimage.segmentation import expand_labels, watershed

from _common import machine, write_table
from budget import kind, split
from keras_unet import data, inference, metrics
from keras_unet.instances import fill_holes, give_back_borders, instances_from_binary, remove_small
from keras_unet.predictor import Predictor

OBJECT_ROWS = ["matched", "merged with a neighbour", "cut in pieces", "missed", "outline off"]
FALSE_ROWS = ["on background", "a merged blob", "other"]


def probabilities(pairs: list) -> list:
    """``(p (H, W) of the object class, true labels, kind, the handle's PostProcessing)`` of each
    pair, as ``predict nuclei`` makes them."""
    predictor, out = Predictor.of("nuclei", by_kind=True), []
    for image_path, mask_path in pairs:
        image = data.read_image(image_path)
        handle = predictor.for_image(image)
        p = inference.predict_probabilities(handle.model, image)[..., 1]
        out.append((p, data.read_image(mask_path).astype(np.int64), kind(image), handle.postprocessing))
    return out


def labels(p, post):
    """The model's own objects: what ``predict`` makes of ``p`` with the handle's PostProcessing."""
    return post.objects(np.stack([1 - p, p], -1)).astype(np.int32)


def grown(p, post, into: float):
    """The objects grown over ``p >= into`` (watershed of -p from them)."""
    found = labels(p, post)
    return watershed(-p, markers=found, mask=(p >= into) | (found > 0)).astype(np.int32)


def eroded(found):
    """Each object less its outermost pixel ring (8-neighbourhood)."""
    low = ndimage.minimum_filter(found, 3, mode="nearest")
    high = ndimage.maximum_filter(found, 3, mode="nearest")
    return np.where((low == found) & (high == found), found, 0)


def seeded(p, post, seed: float, seed_min: int = 8):
    """Seeds where ``p >= seed`` (components of ``seed_min`` px or more), grown by watershed of -p
    over the model's own mask; mask components without a seed stay objects of their own."""
    mask = p >= (0.5 if post.threshold is None else post.threshold)
    found = watershed(-p, markers=remove_small(instances_from_binary(p >= seed), seed_min), mask=mask).astype(np.int32)
    rest = instances_from_binary(mask & (found == 0))
    found = np.where(rest > 0, rest + found.max(), found)
    return give_back_borders(remove_small(fill_holes(found), post.min_size), 2)


VARIANTS = {
    "the model's own (threshold, min size, borders given back)": labels,
    "grown into p >= 0.6": lambda p, post: grown(p, post, 0.6),
    "grown into p >= 0.4": lambda p, post: grown(p, post, 0.4),
    "dilated 1 px": lambda p, post: expand_labels(labels(p, post), 1),
    "eroded 1 px": lambda p, post: eroded(labels(p, post)),
    "seeds p >= 0.8, grown to the threshold": lambda p, post: seeded(p, post, 0.8),
    "seeds p >= 0.95, grown to the threshold": lambda p, post: seeded(p, post, 0.95),
}


def overlaps(found, truth):
    """Pixel counts ``{true id: {found id: n}}`` (0 = background) and each object's area, in one
    pass over the distinct (true, found) pairs (np.unique)."""
    pairs, counts = np.unique(np.stack([truth.ravel(), found.ravel()]), axis=1, return_counts=True)
    by_true, areas_true, areas_found = {}, {}, {}
    for a, b, n in zip(pairs[0].tolist(), pairs[1].tolist(), counts.tolist()):
        by_true.setdefault(a, {})[b] = n
        areas_true[a] = areas_true.get(a, 0) + n
        areas_found[b] = areas_found.get(b, 0) + n
    return by_true, areas_true, areas_found


def error_counts(found, truth) -> dict:
    """The rows of table 1 for one image, counted."""
    by_true, area_t, area_f = overlaps(found, truth)
    matched_t, matched_f = set(), set()
    halves = dict.fromkeys(area_f, 0)  # found id -> true objects it holds half of
    for a, row in by_true.items():
        for b, n in row.items():
            if a and b and n / (area_t[a] + area_f[b] - n) > 0.5:
                matched_t.add(a), matched_f.add(b)
            if a and n >= area_t[a] / 2:
                halves[b] += 1
    counts = dict.fromkeys(OBJECT_ROWS + FALSE_ROWS, 0)
    for a in (a for a in area_t if a):
        inside = {b: n for b, n in by_true[a].items() if b}
        best = max(inside, key=inside.get) if inside else None
        if a in matched_t:
            counts["matched"] += 1
        elif sum(inside.values()) < area_t[a] / 2:
            counts["missed"] += 1
        elif inside[best] < area_t[a] / 2:
            counts["cut in pieces"] += 1
        elif halves[best] >= 2:
            counts["merged with a neighbour"] += 1
        else:
            counts["outline off"] += 1
    for b in (b for b in area_f if b and b not in matched_f):
        if by_true.get(0, {}).get(b, 0) >= area_f[b] / 2:
            counts["on background"] += 1
        elif halves[b] >= 2:
            counts["a merged blob"] += 1
        else:
            counts["other"] += 1
    return counts


def main():
    train_pairs, tests = split()
    val_names = set(Predictor.of("nuclei").record["val_samples"])  # file names (nuclei_model.py)
    sets = {"validation": probabilities([p for p in train_pairs if p[0].name in val_names]),
            "held out": probabilities(tests)}
    kinds = sorted({k for _, _, k, _ in sets["held out"]}) + ["all"]

    per_kind = {k: dict.fromkeys(OBJECT_ROWS + FALSE_ROWS, 0) for k in kinds}
    ious = {k: [] for k in kinds}
    for p, truth, k, post in sets["held out"]:
        found = labels(p, post)
        for name, n in error_counts(found, truth).items():
            per_kind[k][name] += n
            per_kind["all"][name] += n
        matched = metrics.object_ious(found, truth)
        ious[k].extend(matched[matched > 0.5]), ious["all"].extend(matched[matched > 0.5])
    rows = []
    for name in OBJECT_ROWS:
        rows.append([f"true objects: {name}"] + [
            f"{per_kind[k][name]} ({per_kind[k][name] / sum(per_kind[k][r] for r in OBJECT_ROWS):.0%})" for k in kinds])
    for name in FALSE_ROWS:
        rows.append([f"found, unmatched: {name}"] + [str(per_kind[k][name]) for k in kinds])
    rows.append(["mean IoU of the matched objects"] + [f"{np.mean(ious[k]):.3f}" for k in kinds])
    header = ["held-out objects"] + [f"{k} ({sum(1 for _, _, x, _ in sets['held out'] if x == k or k == 'all')} images)"
                                     for k in kinds]

    variant_rows = []
    for name, make in VARIANTS.items():
        cells = []
        for which in ("validation", "held out"):
            scores = [metrics.evaluate_objects(make(p, post), truth) for p, truth, _, post in sets[which]]
            cells.append(f"{np.mean([s['f1'] for s in scores]):.3f} / {np.mean([s['dsb_score'] for s in scores]):.3f}")
        variant_rows.append([name] + cells)

    write_table("errors", "What predict nuclei gets wrong: held-out DSB2018 objects per kind", "python benchmarks/errors.py",
                header, rows,
                f"predict nuclei (each image to the model of its kind, its own post-processing), TensorFlow float32 "
                f"({machine()}). A true object is matched at IoU > 0.5; unmatched, it is merged where the found "
                "object holding most of it also holds half of another true object, cut in pieces where no found object "
                "holds half of it, missed where under half of it is covered. A merged blob is one unmatched found "
                "object holding half of two or more true objects.\n\n"
                "### Post-processing against the errors: F1 @ IoU 0.5 / DSB score\n\n"
                "| post-processing | validation (85) | held out (106) |\n|---|---|---|\n"
                + "\n".join("| " + " | ".join(r) + " |" for r in variant_rows)
                + "\n\nValidation: the shipped model's own val_samples (its stained partner trained on the colour and "
                "brightfield ones, so those columns are kind to it); the held-out images were not used to choose.")


if __name__ == "__main__":
    main()
