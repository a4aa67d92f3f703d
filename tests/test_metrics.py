import math

import numpy as np
import pytest

from keras_unet import losses, metrics

from conftest import shared_data


def blobs(shape=(40, 40)):
    truth = np.zeros(shape, np.uint8)
    truth[5:18, 5:18] = 1
    truth[22:35, 5:18] = 1
    truth[5:35, 22:35] = 1
    return truth


def test_perfect_prediction_has_zero_errors():
    truth = blobs()
    result = metrics.evaluate_binary(truth, truth)
    assert result["pixel_error"] == 0 and result["warping_error"] == 0
    assert result["adapted_rand_error"] == 0 and result["isbi2012_rand_error"] == 0
    assert result["v_rand"] == 1 and result["v_info"] == 1
    assert result["iou"] == 1 and result["dice"] == 1
    objects = metrics.evaluate_objects(metrics.as_segments(truth), metrics.as_segments(truth))
    assert objects["seg"] == 1 and objects["f1"] == 1 and objects["dsb_score"] == 1 and objects["objects_true"] == 3


def test_pixel_error_is_a_direct_count(rng):
    a, b = rng.integers(0, 2, (30, 30)), rng.integers(0, 2, (30, 30))
    assert metrics.pixel_error(a, b) == pytest.approx(np.sum(a != b) / 900)


def test_adapted_rand_error_agrees_with_scikit_image(rng):
    import skimage.metrics as skimage_metrics  # a dependency of the package (V_Rand's thinning)

    for _ in range(5):
        truth = rng.integers(0, 6, (40, 50))
        pred = rng.integers(0, 5, (40, 50))
        pred[:20] = truth[:20]
        expected = skimage_metrics.adapted_rand_error(truth, pred)
        np.testing.assert_allclose(metrics.adapted_rand_scores(pred, truth), expected, rtol=1e-10)


def test_rand_error_sees_merges_and_splits():
    truth = blobs()
    merged = truth.copy()
    merged[17:23, 8:12] = 1  # bridge two blobs
    assert metrics.adapted_rand_error(merged, truth) > 0.1
    assert metrics.isbi2012_rand_error(merged, truth) > 0.1
    assert metrics.v_rand(merged, truth) < 0.9
    assert metrics.pixel_error(merged, truth) < 0.02


def test_warping_error_zero_for_topology_preserving_deformation():
    truth = blobs()
    deformed = truth.copy()
    deformed[5:18, 18] = 1  # one blob grows by a column: same topology
    deformed[34, 22:35] = 0  # another shrinks by a row
    assert metrics.pixel_error(deformed, truth) > 0
    assert metrics.warping_error(deformed, truth) == 0


def test_warping_error_counts_exactly_the_damaged_pixels():
    truth = blobs()
    merged = truth.copy()
    merged[17:23, 10:12] = 1
    split = truth.copy()
    split[5:35, 28] = 0  # cut the tall blob in two
    assert metrics.warping_error(merged, truth) > 0
    assert metrics.warping_error(split, truth) > 0
    hole = truth.copy()
    hole[10, 10] = 0  # a hole is a topology change too
    assert metrics.warping_error(hole, truth) == pytest.approx(1 / 1600)


def test_iou_dice_and_seg():
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1
    pred = np.zeros_like(truth)
    pred[:, :4] = 1
    assert metrics.iou(pred, truth)[1] == pytest.approx(40 / 50)
    assert metrics.dice(pred, truth)[1] == pytest.approx(80 / 90)
    assert metrics.seg_score(pred, truth) == pytest.approx(40 / 50)
    small = np.zeros_like(truth)
    small[:, :2] = 1  # covers less than half of the object: no match
    assert metrics.seg_score(small, truth) == 0.0


def test_keras_metrics_read_the_target_layout():
    labels = np.zeros((1, 6, 6), np.float32)
    labels[0, :, :3] = 1
    y_true = np.stack([labels, np.full_like(labels, 2.0)], -1)
    probs = np.eye(2, dtype=np.float32)[labels.astype(int)][:, 1:5, 1:5]
    probs[0, 0, 0] = [0.0, 1.0] if labels[0, 1, 1] == 0 else [1.0, 0.0]
    error = losses.PixelError()
    error.update_state(y_true, probs)
    assert float(error.result()) == pytest.approx(1 / 16)
    iou = losses.ForegroundIoU()
    iou.update_state(y_true, probs)
    assert float(iou.result()) == pytest.approx(7 / 8)


# -- Rand flavours, V_Rand and V_Info -------------------------------------------------------------


def brute_force_foreground_rand(prediction, truth):
    """1 - F of the challenge's Rand index by counting ordered pixel pairs (self-pairs included,
    Fiji's N^2 normalisation) over the truth's cells, predicted-membrane pixels as singletons."""
    gt = metrics.as_segments(truth).ravel()
    seg = metrics.as_segments(prediction).ravel()
    keep = gt > 0
    gt, seg = gt[keep], seg[keep]
    ids = np.arange(gt.size)
    same_truth = gt[:, None] == gt[None, :]
    same_pred = (seg[:, None] == seg[None, :]) & ((seg[:, None] > 0) | (ids[:, None] == ids[None, :]))
    both = np.sum(same_truth & same_pred)
    return 1.0 - 2.0 * both / (np.sum(same_truth) + np.sum(same_pred))


def test_isbi2012_rand_error_against_pair_counting(rng):
    for _ in range(6):
        truth = (rng.random((14, 13)) < 0.7).astype(np.uint8)
        pred = truth.copy()
        flips = rng.random(truth.shape) < 0.15
        pred[flips] = 1 - pred[flips]
        assert metrics.isbi2012_rand_error(pred, truth) == pytest.approx(brute_force_foreground_rand(pred, truth), abs=1e-12)


def test_thick_predicted_membranes_are_singletons_in_the_challenge_rand_error():
    truth = np.ones((10, 21), np.uint8)
    truth[:, 10] = 0  # two cells of 100 px, 1-px membrane
    pred = truth.copy()
    pred[:, 9:12] = 0  # the same membrane drawn 3 px thick: 20 predicted-membrane px inside cells
    a = b = 100
    k = 10
    sum_ab = (a - k) ** 2 + (b - k) ** 2 + 2 * k
    expected = 1 - 2 * sum_ab / ((a**2 + b**2) + sum_ab)
    assert metrics.isbi2012_rand_error(pred, truth) == pytest.approx(expected)
    # scikit-image's flavour puts the 20 pixels in one segment that spans both cells: a merge.
    assert metrics.adapted_rand_error(pred, truth) > metrics.isbi2012_rand_error(pred, truth)
    # After border thinning the thick membrane is about the thin one (the 1-px line it thins to
    # may wander by a pixel): V_Rand and V_Info stay near 1 where the Rand error of the thick one is 0.1.
    assert metrics.v_rand(pred, truth) > 0.99 and metrics.v_info(pred, truth) > 0.98
    assert 1 - metrics.v_rand(pred, truth) < 0.1 * metrics.isbi2012_rand_error(pred, truth)


def test_v_rand_and_v_info_of_a_merge_by_hand():
    truth = np.ones((9, 19), np.uint8)
    truth[:, 6] = truth[:, 12] = 0  # cells: A 54 px, B 45 px, C 54 px (no junctions: thinning keeps them)
    pred = np.ones_like(truth)
    pred[:, 6] = 0  # B and C merged; within the truth's cells the merged segment holds 99 px
    sum_ab = 54**2 + 45**2 + 54**2
    assert metrics.v_rand(pred, truth) == pytest.approx(2 * sum_ab / (sum_ab + 54**2 + 99**2))
    n = 153

    def entropy(*sizes):
        return -sum(s / n * math.log(s / n) for s in sizes)

    h_truth, h_pred = entropy(54, 45, 54), entropy(54, 99)
    assert metrics.v_info(pred, truth) == pytest.approx(2 * h_pred / (h_pred + h_truth))  # I = H(S): T refines S
    assert metrics.v_info(truth, truth) == pytest.approx(1.0)


def test_v_info_of_a_split_with_singletons_by_hand():
    truth = np.ones((9, 19), np.uint8)
    truth[:, 9] = 0  # A and B, 81 px each
    pred = truth.copy()
    pred[4, 10:] = 0  # B split into 36 + 36 px; its 9 membrane pixels are singletons
    n = 162
    h_truth = math.log(2)
    h_pred = -(81 / n * math.log(81 / n) + 2 * 36 / n * math.log(36 / n)) + 9 / n * math.log(n)
    expected = 2 * h_truth / (h_truth + h_pred)  # S refines T: I = H(T)
    assert metrics.v_info(pred, truth) == pytest.approx(expected)


def test_challenge_rand_error_on_a_real_slice_with_eroded_cells():
    """ISBI slice 00 with every cell eroded by 1 px: the challenge's flavour sees thicker
    membranes (~0.05), scikit-image's a merge through the extra membrane pixels (~0.15)."""
    path = shared_data("isbi2012", "train", "label", "00.png")
    import imageio.v3 as iio
    from scipy import ndimage

    truth = (iio.imread(path) > 127).astype(np.uint8)
    eroded = ndimage.binary_erosion(truth, ndimage.generate_binary_structure(2, 1), border_value=1).astype(np.uint8)
    assert 0.04 < metrics.isbi2012_rand_error(eroded, truth) < 0.06
    assert 0.13 < metrics.adapted_rand_error(eroded, truth) < 0.17
    dilated = ndimage.binary_dilation(truth, ndimage.generate_binary_structure(2, 1)).astype(np.uint8)
    # (they differ only in counting self-pairs: N^2 against N(N-1) normalisation)
    assert metrics.isbi2012_rand_error(dilated, truth) == pytest.approx(metrics.adapted_rand_error(dilated, truth), rel=1e-3)


# -- warping error: the challenge's topology, independent of the order of flips --------------------


def vertical_membrane(width, left, size=32):
    image = np.ones((size, size), np.uint8)
    image[:, left : left + width] = 0
    return image


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_warping_error_is_zero_for_every_shift_of_a_membrane_up_to_its_width(width):
    truth = vertical_membrane(width, 10)
    for shift in range(width + 1):
        shifted = vertical_membrane(width, 10 + shift)
        assert metrics.warping_error(shifted, truth) == 0, shift
        assert metrics.warping_error(truth, shifted) == 0, shift


def test_warping_error_is_zero_for_curved_and_converging_membranes():
    yy, xx = np.mgrid[:64, :64]
    radius = np.hypot(yy - 32, xx - 30)
    for width in (2, 3):
        ring = (~((radius >= 15) & (radius < 15 + width))).astype(np.uint8)
        moved = (~((radius >= 15 + width) & (radius < 15 + 2 * width))).astype(np.uint8)
        assert metrics.warping_error(moved, ring) == 0 and metrics.warping_error(ring, moved) == 0
    truth = np.ones((40, 40), np.uint8)
    truth[:, 8:10] = truth[:, 28:30] = 0
    pred = np.ones_like(truth)
    pred[:, 10:12] = pred[:, 26:28] = 0  # both membranes 2 px towards each other
    assert metrics.warping_error(pred, truth) == 0


def test_warping_error_uses_the_challenge_connectivity():
    """A 1-px diagonal membrane (8-connected) drawn as a staircase is the same topology."""
    truth, pred = np.ones((32, 32), np.uint8), np.ones((32, 32), np.uint8)
    for i in range(32):
        truth[i, i] = pred[i, i] = 0
        pred[i, min(i + 1, 31)] = 0
    assert metrics.warping_error(pred, truth) == 0
    assert metrics.isbi2012_rand_error(truth, truth) == 0 and metrics.as_segments(truth).max() == 2


def test_warping_error_of_real_topology_changes_in_pixels():
    truth = vertical_membrane(2, 15)
    merged = truth.copy()
    merged[10:16, 15:17] = 1  # a 6-px gap through the whole membrane: one merge
    assert metrics.warping_error(merged, truth) * truth.size == 6
    cell = np.ones((32, 32), np.uint8)
    blob = cell.copy()
    blob[10:13, 10:13] = 0  # a 3x3 membrane blob inside a cell: a hole that cannot shrink away
    assert metrics.warping_error(blob, cell) * cell.size == 9
    split = cell.copy()
    split[:, 16] = 0  # a new membrane across the cell: it grows in from the image border (membrane
    assert metrics.warping_error(split, cell) * cell.size == 1  # outside) until one pixel would split


def test_warping_error_on_a_real_slice_is_below_the_pixel_error(rng):
    path = shared_data("isbi2012", "train", "label", "00.png")
    import imageio.v3 as iio

    truth = (iio.imread(path) > 127).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.05, 1 - truth, truth).astype(np.uint8)
    value = metrics.warping_error(noisy, truth)
    assert 0 < value < metrics.pixel_error(noisy, truth)


def test_best_over_thresholds_follows_the_challenge_protocol():
    truth = np.ones((10, 21), np.uint8)
    truth[:, 10] = 0
    probability = np.full(truth.shape, 0.9)
    probability[:, 10] = 0.35  # the membrane is only found with a threshold >= 0.4 (object where p > t)
    value, threshold = metrics.best_over_thresholds(probability, truth, metrics.v_rand)
    assert value == pytest.approx(1.0) and threshold == pytest.approx(0.4)
    error, at = metrics.best_over_thresholds(probability, truth, metrics.isbi2012_rand_error)
    assert error == pytest.approx(0.0) and 0.35 <= at < 0.9
    row = metrics.challenge_sweep(probability, truth)
    assert row["swept_v_rand"] == pytest.approx(1.0) and row["swept_warping_error"] == 0
