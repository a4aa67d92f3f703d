import numpy as np
import pytest

from keras_unet import metrics


def blobs(shape=(40, 40)):
    truth = np.zeros(shape, np.uint8)
    truth[5:18, 5:18] = 1
    truth[22:35, 5:18] = 1
    truth[5:35, 22:35] = 1
    return truth


def test_perfect_prediction_has_zero_errors():
    truth = blobs()
    result = metrics.evaluate_binary(truth, truth)
    assert result["pixel_error"] == 0 and result["rand_error"] == 0 and result["warping_error"] == 0
    assert result["iou"] == 1 and result["dice"] == 1 and result["seg"] == 1


def test_pixel_error_is_a_direct_count(rng):
    a, b = rng.integers(0, 2, (30, 30)), rng.integers(0, 2, (30, 30))
    assert metrics.pixel_error(a, b) == pytest.approx(np.sum(a != b) / 900)


def test_rand_error_agrees_with_scikit_image(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    for _ in range(5):
        truth = rng.integers(0, 6, (40, 50))
        pred = rng.integers(0, 5, (40, 50))
        pred[:20] = truth[:20]
        expected = skimage_metrics.adapted_rand_error(truth, pred)
        np.testing.assert_allclose(metrics.rand_scores(pred, truth), expected, rtol=1e-10)


def test_rand_error_sees_merges_and_splits():
    truth = blobs()
    merged = truth.copy()
    merged[17:23, 8:12] = 1  # bridge two blobs
    assert metrics.rand_error(merged, truth) > 0.1
    assert metrics.pixel_error(merged, truth) < 0.02


def test_warping_error_zero_for_topology_preserving_deformation():
    truth = blobs()
    deformed = truth.copy()
    deformed[5:18, 18] = 1  # one blob grows by a column: same topology
    deformed[34, 22:35] = 0  # another shrinks by a row
    assert metrics.pixel_error(deformed, truth) > 0
    assert metrics.warping_error(deformed, truth) == 0


def test_warping_error_positive_for_merge_and_split():
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
    error = metrics.PixelError()
    error.update_state(y_true, probs)
    assert float(error.result()) == pytest.approx(1 / 16)
    iou = metrics.ForegroundIoU()
    iou.update_state(y_true, probs)
    assert float(iou.result()) == pytest.approx(7 / 8)
