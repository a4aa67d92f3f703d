"""The paper's and the challenges' evaluation metrics (numpy/scipy; the Keras metrics that training
watches are in :mod:`keras_unet.losses`, so evaluating and predicting need no TensorFlow).

Evaluation inputs are 2-D arrays ``(H, W)``. Binary segmentations use 1 = object (cell interior)
and 0 = background/membrane, as the ISBI 2012 labels do after mapping 255 -> 1.

**One convention throughout**, the ISBI 2012 challenge's (Fiji ``trainableSegmentation.metrics``):
cells (1) are 4-connected and the membrane (0) is 8-connected, so a 1-px diagonal membrane
separates two cells; pixels outside the image count as membrane. Segments of a binary map are
its 4-connected components of 1-pixels (:func:`as_segments`).

* :func:`pixel_error` - fraction of pixels with the wrong class.
* :func:`adapted_rand_error` - scikit-image's ``adapted_rand_error`` (SNEMI3D): background of the
  truth ignored, all predicted-membrane pixels inside true cells form **one** segment.
* :func:`isbi2012_rand_error` - the ISBI 2012 challenge's foreground-restricted Rand error (the
  number in the U-Net paper's Table 1): as above, but each predicted-membrane pixel inside a true
  cell is a segment of its own, so a thick predicted membrane costs little and merges nothing.
* :func:`v_rand`, :func:`v_info` - the challenge's ranking metrics since 2013 (Arganda-Carreras
  et al. 2015, Front. Neuroanat. 9:142): foreground-restricted Rand and information-theoretic
  scores (1 = perfect) after the membranes of both segmentations are thinned to 1 px.
* :func:`warping_error` - the ISBI 2012 warping error (Jain et al. 2010): the truth is warped
  towards the prediction by flipping simple points only; the pixels still differing are merges,
  splits and holes.
* :func:`iou`, :func:`dice` per class; :func:`seg_score` - Cell Tracking Challenge SEG.
* :func:`best_over_thresholds` - the challenge's protocol: the best score over a threshold sweep.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse

from keras_unet.weights import instances_from_binary


def pixel_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose class differs."""
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    _check_same_shape(prediction, truth)
    return float(np.mean(prediction != truth))


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"prediction shape {a.shape} differs from truth shape {b.shape}")


def as_segments(labels: np.ndarray) -> np.ndarray:
    """Segments ``(H, W)`` int64: 4-connected components of a binary map's 1-pixels, or the
    labels themselves if already instances (0 = membrane/background)."""
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.max(initial=0) <= 1:
        return instances_from_binary(labels).astype(np.int64)
    return labels.astype(np.int64)


def _table(seg: np.ndarray, gt: np.ndarray) -> sparse.csr_matrix:
    """Contingency counts ``[truth segment, predicted segment]`` over the truth's foreground."""
    seg, gt = seg.ravel(), gt.ravel()
    keep = gt > 0
    seg, gt = seg[keep], gt[keep]
    shape = (int(gt.max(initial=0)) + 1, int(seg.max(initial=0)) + 1)
    return sparse.coo_matrix((np.ones(seg.size), (gt, seg)), shape=shape).tocsr()


def adapted_rand_scores(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """``(adapted Rand error, precision, recall)`` as scikit-image's ``adapted_rand_error``.

    Written with a sparse contingency table (as scikit-image does) so evaluation needs no
    scikit-image; the tests check it against ``skimage.metrics.adapted_rand_error``.
    """
    seg, gt = as_segments(prediction), as_segments(truth)
    _check_same_shape(seg, gt)
    table = _table(seg, gt)
    n = table.sum()
    if n == 0:
        return 0.0, 1.0, 1.0
    sum_p_ij2 = float(table.power(2).sum()) - n
    sum_a2 = float(np.sum(np.asarray(table.sum(axis=1)).ravel() ** 2)) - n
    sum_b2 = float(np.sum(np.asarray(table.sum(axis=0)).ravel() ** 2)) - n
    # Named as scikit-image names them (precision over the truth's pairs, recall over the prediction's).
    precision = sum_p_ij2 / sum_a2 if sum_a2 else 1.0
    recall = sum_p_ij2 / sum_b2 if sum_b2 else 1.0
    f_score = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 1.0 - f_score, precision, recall


def adapted_rand_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """scikit-image's / SNEMI3D's adapted Rand error (0 = perfect); see the module docstring."""
    return adapted_rand_scores(prediction, truth)[0]


def _foreground_restricted_sums(seg: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """``(sum p_ij^2, sum s_i^2, sum t_j^2)`` (counts^2) of the foreground-restricted Rand index.

    Rows: truth segments (truth background dropped); columns: predicted segments, where each
    predicted-background pixel inside the truth's foreground is a singleton segment (Fiji's
    ``foregroundRestrictedStatsN2``: its ``p_i0`` terms).
    """
    table = _table(seg, gt)
    singletons = float(table[:, 0].sum()) if table.shape[1] else 0.0
    objects = table[:, 1:]
    sum_ab = float(objects.power(2).sum()) + singletons
    sum_a = float(np.sum(np.asarray(table.sum(axis=1)).ravel() ** 2))
    sum_b = float(np.sum(np.asarray(objects.sum(axis=0)).ravel() ** 2)) + singletons
    return sum_ab, sum_a, sum_b


def _rand_f_score(seg: np.ndarray, gt: np.ndarray) -> float:
    """F-score of foreground-restricted Rand precision and recall (1 = perfect).

    ``2 sum p_ij^2 / (sum s_i^2 + sum t_j^2)``, which is also V_Rand with alpha = 0.5.
    """
    sum_ab, sum_a, sum_b = _foreground_restricted_sums(seg, gt)
    return 2.0 * sum_ab / (sum_a + sum_b) if sum_a + sum_b else 1.0


def isbi2012_rand_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """The ISBI 2012 challenge's (foreground-restricted) Rand error, 0 = perfect.

    ``1 - F`` of the foreground-restricted Rand precision and recall over the 4-connected cells of
    both maps; predicted-membrane pixels inside true cells are singletons (see module docstring).
    """
    seg, gt = as_segments(prediction), as_segments(truth)
    _check_same_shape(seg, gt)
    return 1.0 - _rand_f_score(seg, gt)


def thin_membranes(binary: np.ndarray) -> np.ndarray:
    """Segments ``(H, W)`` int64 of a binary map whose membrane (0) is thinned to 1 px.

    The membrane is thinned with scikit-image's topology-preserving ``thin`` and the segments are
    the 4-connected components of the rest, so thinning neither merges nor splits cells: it only
    hands the membrane's width to the cells, as the challenge's "border thinning" does before V_Rand
    and V_Info, which makes them insensitive to how thick a method draws membranes.
    """
    from skimage.morphology import thin  # well-kept topology-preserving thinning; no scipy equivalent

    membrane = np.pad(np.asarray(binary) == 0, 1, constant_values=True)  # outside counts as membrane
    thinned = thin(membrane)[1:-1, 1:-1]
    return instances_from_binary(~thinned).astype(np.int64)


def v_rand(prediction: np.ndarray, truth: np.ndarray) -> float:
    """V_Rand (ISBI 2012 ranking since 2013; 1 = perfect) of binary maps after membrane thinning:
    ``sum p_ij^2 / (0.5 sum s_i^2 + 0.5 sum t_j^2)``, foreground-restricted, with singletons."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    _check_same_shape(prediction, truth)
    return _rand_f_score(thin_membranes(prediction), thin_membranes(truth))


def v_info(prediction: np.ndarray, truth: np.ndarray) -> float:
    """V_Info (ISBI 2012 ranking since 2013; 1 = perfect) of binary maps after membrane thinning:
    ``I(S; T) / (0.5 H(S) + 0.5 H(T))`` with S the prediction and T the truth, over the truth's
    foreground, each predicted-membrane pixel there a singleton segment."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    _check_same_shape(prediction, truth)
    table = _table(thin_membranes(prediction), thin_membranes(truth))
    n = float(table.sum())
    if n == 0:
        return 1.0
    singletons = float(table[:, 0].sum())
    objects = table[:, 1:]

    def plogp_sum(counts) -> float:  # -sum p log p over segments given their pixel counts
        p = np.asarray(counts, np.float64).ravel()
        p = p[p > 0] / n
        return float(-np.sum(p * np.log(p)))

    singleton_entropy = singletons / n * np.log(n)  # each singleton has p = 1/n
    h_truth = plogp_sum(table.sum(axis=1))
    h_prediction = plogp_sum(objects.sum(axis=0)) + singleton_entropy
    h_joint = plogp_sum(objects.data) + singleton_entropy
    mutual = h_truth + h_prediction - h_joint
    denominator = 0.5 * (h_truth + h_prediction)
    return float(mutual / denominator) if denominator > 0 else 1.0


def _simple_point_table() -> np.ndarray:
    """Lookup ``(256,)`` bool: is the centre of a 3x3 configuration a simple point?

    Cells (1) 4-connected, membrane (0) 8-connected, as the challenge. The 8 neighbours are encoded
    clockwise from the top-left as bits 0..7. A pixel is simple when flipping it changes no
    topology: exactly one 4-component of cell neighbours is 4-adjacent to it, and its membrane
    neighbours form exactly one 8-component (topological numbers T4 = T8 = 1, Bertrand 1994),
    written out because neither scipy nor scikit-image exposes the test.
    """
    offsets = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    four_neighbours = ((0, 1), (1, 2), (2, 1), (1, 0))
    table = np.zeros(256, bool)
    four = ndimage.generate_binary_structure(2, 1)
    eight = np.ones((3, 3), int)
    for code in range(256):
        cells = np.zeros((3, 3), bool)
        for bit, (r, c) in enumerate(offsets):
            cells[r, c] = bool(code >> bit & 1)
        cell_labels, _ = ndimage.label(cells, structure=four)
        t4 = len({cell_labels[r, c] for r, c in four_neighbours if cells[r, c]})
        membrane = ~cells
        membrane[1, 1] = False
        _, t8 = ndimage.label(membrane, structure=eight)
        table[code] = t4 == 1 and t8 == 1
    return table


_SIMPLE = _simple_point_table()
_NEIGHBOUR_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def _neighbour_codes(binary: np.ndarray) -> np.ndarray:
    """Per-pixel 8-bit neighbourhood code (pixels outside the image count as membrane)."""
    padded = np.pad(binary, 1)
    height, width = binary.shape
    code = np.zeros(binary.shape, np.int32)
    for bit, (dy, dx) in enumerate(_NEIGHBOUR_OFFSETS):
        code |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].astype(np.int32) << bit
    return code


def warp_to(source: np.ndarray, target: np.ndarray, max_passes: int = 10_000) -> np.ndarray:
    """Warp binary ``source`` towards binary ``target`` by flipping simple points only.

    Flips come in two alternating phases, each run until nothing changes: first the membrane
    grows where the target has membrane, then the cells grow where the target has cells. Flipping
    both kinds at once lets a shifted membrane be cut in places before its new position is
    complete, and the warp then stalls on a pure shift; growing first and shrinking second moves
    any membrane (and, dually, any cell) that overlaps its target position without a stall.
    Within a phase, pixels 3 apart in both axes have disjoint 3x3 neighbourhoods, so each of the
    9 sub-lattices is flipped at once, exactly as one pixel after the other would be.
    """
    warped = np.asarray(source, bool).copy()
    target = np.asarray(target, bool)
    for _ in range(max_passes):
        grew_membrane = _flip_simple(warped, target, to_cell=False, max_passes=max_passes)
        grew_cells = _flip_simple(warped, target, to_cell=True, max_passes=max_passes)
        if not (grew_membrane or grew_cells):
            break
    return warped


def _flip_simple(warped: np.ndarray, target: np.ndarray, to_cell: bool, max_passes: int) -> bool:
    """Flip (in place) simple pixels of ``warped`` that differ from ``target`` in one direction
    (membrane -> cell if ``to_cell``, else cell -> membrane) until none is left; True if any."""
    any_flip = False
    for _ in range(max_passes):
        changed = False
        for oy in range(3):
            for ox in range(3):
                candidates = (target & ~warped) if to_cell else (warped & ~target)
                sub = np.zeros_like(candidates)
                sub[oy::3, ox::3] = candidates[oy::3, ox::3]
                if not sub.any():
                    continue
                flip = sub & _SIMPLE[_neighbour_codes(warped)]
                if flip.any():
                    warped[flip] = to_cell
                    changed = True
        any_flip |= changed
        if not changed:
            return any_flip
    return any_flip


def warping_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """ISBI 2012 warping error: fraction of pixels differing after topology-preserving warping
    of the truth towards the prediction (0 = the same topology everywhere)."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    _check_same_shape(prediction, truth)
    warped = warp_to(truth, prediction)
    return float(np.mean(warped != prediction))


# The challenge's threshold sweep (Fiji's scripts: 0.0 to 1.0 in steps of 0.1, object where p > t).
CHALLENGE_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))
HIGHER_IS_BETTER = {"v_rand", "v_info", "iou", "dice", "mean_iou", "seg"}


def best_over_thresholds(probability: np.ndarray, truth: np.ndarray, metric, thresholds=CHALLENGE_THRESHOLDS,
                         higher_is_better: bool | None = None) -> tuple[float, float]:
    """The challenge's protocol: ``(best value, its threshold)`` of ``metric(p > t, truth)`` over
    ``thresholds``, where ``probability`` ``(H, W)`` is p(cell).

    This picks the threshold on the test labels themselves, so it is an upper bound for what a
    user gets with a threshold chosen beforehand (on validation data); report them apart.
    """
    higher = metric.__name__ in HIGHER_IS_BETTER if higher_is_better is None else higher_is_better
    probability = np.asarray(probability, np.float64)
    scored = [(metric((probability > t).astype(np.uint8), truth), float(t)) for t in thresholds]
    return max(scored, key=lambda s: s[0]) if higher else min(scored, key=lambda s: s[0])


def _per_class(prediction, truth, n_classes, fn):
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    _check_same_shape(prediction, truth)
    scores = []
    for k in range(n_classes):
        p, t = prediction == k, truth == k
        scores.append(fn(np.sum(p & t), np.sum(p), np.sum(t)))
    return np.array(scores, np.float64)


def iou(prediction: np.ndarray, truth: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Jaccard index per class ``(n_classes,)``; 1.0 where a class is absent from both."""
    return _per_class(prediction, truth, n_classes, lambda i, p, t: i / (p + t - i) if p + t - i else 1.0)


def dice(prediction: np.ndarray, truth: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Dice coefficient per class ``(n_classes,)``; 1.0 where a class is absent from both."""
    return _per_class(prediction, truth, n_classes, lambda i, p, t: 2 * i / (p + t) if p + t else 1.0)


def seg_score(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Cell Tracking Challenge SEG: mean IoU over truth objects, matched to the predicted object
    covering more than half of them (IoU 0 when none does). 1.0 when the truth has no objects."""
    seg, gt = as_segments(prediction), as_segments(truth)
    _check_same_shape(seg, gt)
    gt_ids = np.unique(gt)
    gt_ids = gt_ids[gt_ids > 0]
    if gt_ids.size == 0:
        return 1.0
    table = sparse.coo_matrix((np.ones(gt.size), (gt.ravel(), seg.ravel()))).tocsr()
    gt_sizes = np.asarray(table.sum(axis=1)).ravel()
    seg_sizes = np.asarray(table.sum(axis=0)).ravel()
    scores = []
    for g in gt_ids:
        row = table.getrow(g)
        row_seg, overlap = row.indices, row.data
        fg = row_seg > 0
        row_seg, overlap = row_seg[fg], overlap[fg]
        best = np.argmax(overlap) if overlap.size else None
        if best is None or overlap[best] <= 0.5 * gt_sizes[g]:
            scores.append(0.0)
            continue
        s = row_seg[best]
        scores.append(overlap[best] / (gt_sizes[g] + seg_sizes[s] - overlap[best]))
    return float(np.mean(scores))


def evaluate_binary(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """All metrics for one binary segmentation (1 = object) against its truth."""
    prediction, truth = (np.asarray(prediction) > 0).astype(np.uint8), (np.asarray(truth) > 0).astype(np.uint8)
    ious, dices = iou(prediction, truth, 2), dice(prediction, truth, 2)
    return {
        "pixel_error": pixel_error(prediction, truth),
        "adapted_rand_error": adapted_rand_error(prediction, truth),
        "isbi2012_rand_error": isbi2012_rand_error(prediction, truth),
        "v_rand": v_rand(prediction, truth),
        "v_info": v_info(prediction, truth),
        "warping_error": warping_error(prediction, truth),
        "iou": float(ious[1]),
        "dice": float(dices[1]),
        "mean_iou": float(ious.mean()),
    }


# -- object-level metrics --------------------------------------------------------------------------

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # IoU 0.50, 0.55, ..., 0.95


def object_ious(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns), ``(n_true, n_pred)``,
    objects being the labels present (gaps in the numbering are no objects), from the sparse pixel
    contingency table (so 10,000s of objects are fine)."""
    seg, gt = np.asarray(prediction).ravel().astype(np.int64), np.asarray(truth).ravel().astype(np.int64)
    shape = (int(gt.max(initial=0)) + 1, int(seg.max(initial=0)) + 1)
    true_sizes, pred_sizes = np.bincount(gt, minlength=shape[0]), np.bincount(seg, minlength=shape[1])
    overlap = sparse.coo_matrix((np.ones(seg.size), (gt, seg)), shape=shape).tocsr()
    rows, cols = np.flatnonzero(true_sizes[1:]) + 1, np.flatnonzero(pred_sizes[1:]) + 1
    overlap = overlap[rows][:, cols].tocoo()
    union = true_sizes[rows][overlap.row] + pred_sizes[cols][overlap.col] - overlap.data
    ious = np.zeros((rows.size, cols.size))
    ious[overlap.row, overlap.col] = overlap.data / union
    return ious


def match_objects(prediction: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """``(true positives, false positives, false negatives)`` of one-to-one matching at IoU above
    ``iou_threshold`` (>= 0.5). Above 0.5 a match is unique, since two objects cannot both cover
    more than half of a third, so no tie needs breaking; below 0.5 this function refuses."""
    if iou_threshold < 0.5:
        raise ValueError("matching below IoU 0.5 is not unique; use a threshold >= 0.5")
    ious = object_ious(prediction, truth)
    tp = int(np.sum(ious > iou_threshold))
    return tp, ious.shape[1] - tp, ious.shape[0] - tp


def evaluate_objects(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """Object-level scores of instance label images (0 = background): precision, recall and F1
    at IoU 0.5, the 2018 Data Science Bowl score (mean over IoU 0.50:0.05:0.95 of TP/(TP+FP+FN)),
    the Cell Tracking Challenge SEG on the true objects, and the object counts."""
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    _check_same_shape(prediction, truth)
    ious = object_ious(prediction, truth)
    n_true, n_pred = ious.shape
    scores = []
    for t in DSB_THRESHOLDS:
        tp = int(np.sum(ious > t))
        scores.append(tp / (n_true + n_pred - tp) if n_true + n_pred - tp else 1.0)
    tp = int(np.sum(ious > 0.5))
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0,
        "dsb_score": float(np.mean(scores)),
        "seg": seg_score(prediction, truth) if n_true else float(n_pred == 0),
        "objects_true": n_true,
        "objects_found": n_pred,
    }


CHALLENGE_METRICS = ("pixel_error", "isbi2012_rand_error", "warping_error", "v_rand", "v_info")


def challenge_sweep(probability: np.ndarray, truth: np.ndarray) -> dict:
    """The ISBI 2012 protocol for one p(cell) map ``(H, W)``: for each challenge metric its best
    value over :data:`CHALLENGE_THRESHOLDS` and the threshold that gave it, as
    ``{"swept_<metric>": value, "swept_<metric>_threshold": t}``."""
    truth = (np.asarray(truth) > 0).astype(np.uint8)
    row = {}
    for name in CHALLENGE_METRICS:
        value, threshold = best_over_thresholds(probability, truth, globals()[name])
        row[f"swept_{name}"], row[f"swept_{name}_threshold"] = float(value), threshold
    return row
