import numpy as np
import pytest

from keras_unet import synthetic, weights


def touching_squares():
    """Two 10x10 squares side by side, touching along one column boundary."""
    labels = np.zeros((30, 40), np.int32)
    labels[10:20, 8:18] = 1
    labels[10:20, 18:28] = 2
    return labels


def test_separation_border_cut_between_touching_objects():
    target = weights.binary_target(touching_squares(), border_width=1)
    # columns 17 (of object 1) and 18 (of object 2) become background: a 2 px gap
    assert target[15, 16] == 1 and target[15, 19] == 1
    assert target[15, 17] == 0 and target[15, 18] == 0
    assert target.sum() == 2 * 100 - 2 * 10  # only the touching columns are cut


def test_weight_peaks_in_the_gap():
    labels = touching_squares()
    target, w = weights.weight_map(labels, w0=10, sigma=5, class_weights=None)
    # In the gap the pixel is 1 px from each object's remaining border? No: distances are to the
    # original objects, so a gap pixel of object 1 has d1 = 0 (inside 1) and d2 = 1 (next to 2).
    expected_gap = 1.0 + 10.0 * np.exp(-((0.0 + 1.0) ** 2) / (2 * 25.0))
    assert w[15, 17] == pytest.approx(expected_gap, rel=1e-5)
    assert w[15, 17] == w.max()
    # far background: d1 + d2 large -> weight ~ w_c = 1
    assert w[0, 0] == pytest.approx(1.0, abs=1e-3)
    # inside objects: w_c only
    assert w[15, 12] == pytest.approx(1.0)
    # a background pixel between the objects' top edges, 2 px above: d1 = 2, d2 = sqrt(4+1)
    d1, d2 = 2.0, np.hypot(2.0, 1.0)
    assert w[8, 17] == pytest.approx(1.0 + 10 * np.exp(-((d1 + d2) ** 2) / 50.0), rel=1e-5)


def test_class_balancing_equalises_class_totals():
    labels = touching_squares()
    target, w = weights.weight_map(labels, w0=0.0)
    totals = [w[target == k].sum() for k in (0, 1)]
    assert totals[0] == pytest.approx(totals[1], rel=1e-5)
    cw = weights.balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(cw, [4 / 6, 2.0, 0.0])


def test_binary_mask_is_labelled_first():
    mask = np.zeros((20, 20), bool)
    mask[2:8, 2:8] = mask[12:18, 12:18] = True
    instances = weights.instances_from_binary(mask)
    assert instances.max() == 2


def test_windowed_equals_full_reference_on_crowded_image():
    _, labels = synthetic.sample((192, 192), radius=9, seed=2)
    assert labels.max() > 60
    target, fast = weights.weight_map(labels, tolerance=1e-4)
    ref_target, ref = weights.weight_map_reference(labels)
    np.testing.assert_array_equal(target, ref_target)
    np.testing.assert_allclose(fast, ref, atol=2e-4)
    assert (fast - target).max() > 5  # the border term is really there


def test_single_object_has_no_border_term():
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 1
    _, w = weights.weight_map(labels, class_weights=None)
    np.testing.assert_allclose(w, 1.0)
