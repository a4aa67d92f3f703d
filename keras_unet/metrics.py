"""The paper's evaluation metrics (numpy/scipy) and Keras metrics for training.

Evaluation inputs are 2-D arrays ``(H, W)``. Binary segmentations use 1 = object (cell interior)
and 0 = background/membrane, as the ISBI 2012 labels do after mapping 255 -> 1.

* :func:`pixel_error` - fraction of pixels with the wrong class.
* :func:`rand_error` - ISBI 2012 adapted Rand error, ``1 - F`` of Rand split/merge scores,
  background pixels of the truth ignored (as scikit-image's ``adapted_rand_error``).
* :func:`warping_error` - ISBI 2012 warping error (Jain et al. 2010): the truth is warped towards
  the prediction by flipping simple points only; the pixels still differing are topology errors.
* :func:`iou`, :func:`dice` per class; :func:`seg_score` - Cell Tracking Challenge SEG.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops
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
    """Instances from a binary map (components of the 1-pixels), or the labels if already instances."""
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.max(initial=0) <= 1:
        return instances_from_binary(labels)
    return labels.astype(np.int64)


def rand_scores(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """``(adapted Rand error, precision, recall)`` of two segmentations (binary or instance).

    Written with a sparse contingency table (as scikit-image does) so evaluation needs no
    scikit-image; the tests check it against ``skimage.metrics.adapted_rand_error``.
    """
    seg, gt = as_segments(prediction).ravel(), as_segments(truth).ravel()
    _check_same_shape(seg, gt)
    keep = gt > 0  # background of the truth is ignored
    seg, gt = seg[keep], gt[keep]
    n = seg.size
    if n == 0:
        return 0.0, 1.0, 1.0
    table = sparse.coo_matrix((np.ones(n), (gt, seg))).tocsr()
    sum_p_ij2 = float(table.power(2).sum()) - n
    a_i = np.asarray(table.sum(axis=1)).ravel()
    b_i = np.asarray(table.sum(axis=0)).ravel()
    sum_a2 = float(np.sum(a_i**2)) - n
    sum_b2 = float(np.sum(b_i**2)) - n
    # Named as scikit-image names them (precision over the truth's pairs, recall over the prediction's).
    precision = sum_p_ij2 / sum_a2 if sum_a2 else 1.0
    recall = sum_p_ij2 / sum_b2 if sum_b2 else 1.0
    f_score = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 1.0 - f_score, precision, recall


def rand_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """ISBI 2012 adapted Rand error (0 = perfect)."""
    return rand_scores(prediction, truth)[0]


def _simple_point_table() -> np.ndarray:
    """Lookup ``(256,)`` bool: is the centre of a 3x3 configuration a simple point?

    Foreground is 8-connected, background 4-connected. The 8 neighbours are encoded clockwise
    from the top-left as bits 0..7. A pixel is simple when flipping it changes no topology: its
    foreground neighbours form exactly one 8-component and its background 4-neighbours exactly
    one 4-component within the 3x3 window (Yokoi/Rosenfeld criterion, written out because no
    scipy or scikit-image function provides it).
    """
    offsets = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    table = np.zeros(256, bool)
    eight = np.ones((3, 3), int)
    four = ndimage.generate_binary_structure(2, 1)
    for code in range(256):
        window = np.zeros((3, 3), bool)
        for bit, (r, c) in enumerate(offsets):
            window[r, c] = bool(code >> bit & 1)
        fg_labels, _ = ndimage.label(window, structure=eight)
        n_fg = len(set(fg_labels[window].tolist()))  # all neighbours touch the centre in 8-conn.
        background = ~window
        background[1, 1] = False
        bg_labels, _ = ndimage.label(background, structure=four)
        touching = {bg_labels[r, c] for r, c in ((0, 1), (1, 2), (2, 1), (1, 0)) if background[r, c]}
        table[code] = n_fg == 1 and len(touching) == 1
    return table


_SIMPLE = _simple_point_table()
_NEIGHBOUR_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def _neighbour_codes(binary: np.ndarray) -> np.ndarray:
    """Per-pixel 8-bit neighbourhood code (pixels outside the image count as background)."""
    padded = np.pad(binary, 1)
    height, width = binary.shape
    code = np.zeros(binary.shape, np.int32)
    for bit, (dy, dx) in enumerate(_NEIGHBOUR_OFFSETS):
        code |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].astype(np.int32) << bit
    return code


def warp_to(source: np.ndarray, target: np.ndarray, max_passes: int = 10_000) -> np.ndarray:
    """Warp binary ``source`` towards binary ``target`` by flipping simple points only.

    Pixels 3 apart in both axes have disjoint 3x3 neighbourhoods, so each of the 9 sub-lattices
    is flipped at once without two flips interacting. Stops when no simple point differs.
    """
    warped = np.asarray(source, bool).copy()
    target = np.asarray(target, bool)
    for _ in range(max_passes):
        changed = False
        for oy in range(3):
            for ox in range(3):
                differs = warped != target
                sub = np.zeros_like(differs)
                sub[oy::3, ox::3] = differs[oy::3, ox::3]
                if not sub.any():
                    continue
                flip = sub & _SIMPLE[_neighbour_codes(warped)]
                if flip.any():
                    warped[flip] = ~warped[flip]
                    changed = True
        if not changed:
            break
    return warped


def warping_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """ISBI 2012 warping error: fraction of pixels differing after topology-preserving warping
    of the truth towards the prediction (0 = the same topology everywhere)."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    _check_same_shape(prediction, truth)
    warped = warp_to(truth, prediction)
    return float(np.mean(warped != prediction))


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
        "rand_error": rand_error(prediction, truth),
        "warping_error": warping_error(prediction, truth),
        "iou": float(ious[1]),
        "dice": float(dices[1]),
        "mean_iou": float(ious.mean()),
        "seg": seg_score(prediction, truth),
    }


# -- Keras metrics for training; they read the target layout of keras_unet.losses. ---------------


def _labels_and_predictions(y_true, y_pred):
    from keras_unet.losses import center_crop_to

    y_true = center_crop_to(ops.cast(y_true, "float32"), y_pred)
    if y_true.shape[-1] == 2:
        labels = ops.cast(ops.round(y_true[..., 0]), "int32")
    else:
        labels = ops.cast(ops.argmax(y_true[..., :-1], axis=-1), "int32")
    return labels, ops.cast(ops.argmax(y_pred, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="keras_unet")
class PixelError(keras.metrics.Mean):
    """Fraction of wrongly classified pixels of the (cropped) target."""

    def __init__(self, name="pixel_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, predicted = _labels_and_predictions(y_true, y_pred)
        return super().update_state(ops.cast(ops.not_equal(labels, predicted), "float32"))


@keras.saving.register_keras_serializable(package="keras_unet")
class ForegroundIoU(keras.metrics.IoU):
    """IoU of class 1 (the object class) on the (cropped) target."""

    def __init__(self, num_classes=2, target_class_ids=(1,), name="iou", **kwargs):
        super().__init__(num_classes=num_classes, target_class_ids=list(target_class_ids), name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, predicted = _labels_and_predictions(y_true, y_pred)
        return super().update_state(labels, predicted)
