"""Objects from probabilities, and object-level metrics against brute-force references."""
import itertools

import numpy as np
import pytest

from keras_unet import instances, metrics, synthetic, weights
from keras_unet.errors import DataError, SettingsError
from keras_unet.instances import fill_holes, instances_from_probabilities

from conftest import shared_data


def probabilities_from(binary: np.ndarray) -> np.ndarray:
    p = np.where(binary > 0, 0.9, 0.1).astype(np.float32)
    return np.stack([1 - p, p], -1)


def test_touching_objects_come_back_whole_with_their_borders():
    """The training target of touching synthetic cells (1-px separation borders cut out) turned
    into instances gives back the true objects, borders included, not eroded copies."""
    _, truth = synthetic.sample((128, 128), seed=3)
    target = weights.binary_target(truth)  # what the network is taught to predict
    found = instances.instances_from_probabilities(probabilities_from(target))
    assert found.dtype == np.uint16
    scores = metrics.evaluate_objects(found, truth)
    assert scores["objects_found"] == scores["objects_true"] and scores["f1"] == 1.0
    naive = weights.instances_from_binary(target)  # components only: borders lost
    assert scores["seg"] > metrics.evaluate_objects(naive, truth)["seg"] + 0.02
    assert scores["seg"] > 0.97


def test_holes_small_objects_and_watershed_split():
    mask = np.zeros((60, 60), np.uint8)
    mask[5:25, 5:25] = 1
    mask[12, 12] = 0  # a hole
    mask[40:42, 40:42] = 1  # 4 px speck
    found = instances.instances_from_probabilities(probabilities_from(mask), min_size=10)
    assert found.max() == 1 and found[12, 12] == 1
    yy, xx = np.mgrid[:60, :60]
    two = ((yy - 30) ** 2 + (xx - 20) ** 2 < 144) | ((yy - 30) ** 2 + (xx - 40) ** 2 < 144)  # overlapping discs
    assert instances.instances_from_probabilities(probabilities_from(two)).max() == 1
    assert instances.instances_from_probabilities(probabilities_from(two), split="watershed").max() == 2


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="must be \\(H, W, classes\\)"):
        instances.instances_from_probabilities(np.zeros((10, 10)))
    with pytest.raises(SettingsError, match="--min-size must be >= 0"):
        instances.instances_from_probabilities(np.zeros((10, 10, 2)), min_size=-1)
    with pytest.raises(DataError, match="do not fit a 16-bit label image"):
        instances.as_uint16(np.arange(70_000).reshape(700, 100))
    with pytest.raises(DataError, match="must be integers"):
        instances.as_uint16(np.zeros((4, 4), np.float32))


def brute_force_matches(pred, truth, threshold):
    """TP by looking at every pair of objects' pixel sets (one-to-one by construction above 0.5)."""
    tp = 0
    for t, p in itertools.product(range(1, truth.max() + 1), range(1, pred.max() + 1)):
        a, b = truth == t, pred == p
        union = np.sum(a | b)
        if union and np.sum(a & b) / union > threshold:
            tp += 1
    return tp


def test_matching_and_dsb_score_against_brute_force(rng):
    for seed in range(4):
        _, truth = synthetic.sample((64, 64), radius=9, seed=seed)
        pred = truth.copy()
        pred[rng.random(pred.shape) < 0.3] = 0  # damage: some objects fall below the thresholds
        pred[(pred == 2) | (pred == 3)] = 2  # a merge
        pred[20:30, 20:30] = pred.max() + 1  # a new object
        n_true, n_pred = len(np.unique(truth)) - 1, len(np.unique(pred)) - 1
        expected = []
        for t in metrics.DSB_THRESHOLDS:
            tp = brute_force_matches(pred, truth, t)
            expected.append(tp / (n_true + n_pred - tp))
        got = metrics.evaluate_objects(pred, truth)
        assert got["dsb_score"] == pytest.approx(np.mean(expected))
        tp = brute_force_matches(pred, truth, 0.5)
        assert got["f1"] == pytest.approx(2 * tp / (n_true + n_pred))
        assert metrics.match_objects(pred, truth) == (tp, n_pred - tp, n_true - tp)


def test_object_scores_by_hand():
    truth = np.zeros((10, 10), np.int32)
    truth[:, :5], truth[:, 5:] = 1, 2
    pred = np.zeros_like(truth)
    pred[:, :4] = 1  # IoU 0.8 with object 1; object 2 missed
    scores = metrics.evaluate_objects(pred, truth)
    assert scores["precision"] == 1 and scores["recall"] == 0.5 and scores["f1"] == pytest.approx(2 / 3)
    assert scores["seg"] == pytest.approx(0.4)  # (0.8 + 0) / 2
    # DSB: matched at IoU 0.50..0.75 (0.8 > t), not at 0.80..0.95: 6 of 10 thresholds score 1/2
    assert scores["dsb_score"] == pytest.approx(6 * 0.5 / 10)
    with pytest.raises(ValueError, match="not unique"):
        metrics.match_objects(pred, truth, iou_threshold=0.3)


def _cases():
    """Masks with touching objects, holes (also holes shared by two objects and holes holding an
    object), borders, odd sizes: random smoothed noise, synthetic cells, ISBI 2012 cells."""
    from scipy import ndimage

    from keras_unet import synthetic

    rng = np.random.default_rng(7)
    for trial in range(12):
        h, w = (int(v) for v in rng.integers(3, 90, 2))
        noise = ndimage.gaussian_filter(rng.uniform(0, 1, (h, w)), rng.uniform(0.5, 3))
        yield f"noise {trial}", noise > np.median(noise)
        yield f"synthetic {trial}", synthetic.sample((h + 20, w + 20), seed=trial)[1] == 1
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    ring[13:17, 13:17] = True  # an object inside the hole of another
    yield "nested", ring


def _isbi_cells():
    from keras_unet import data

    return data.read_image(shared_data("isbi2012", "train", "label", "00.png"))[:256, :200] > 127


@pytest.mark.parametrize("min_size", [0, 30])
@pytest.mark.parametrize("cases", ["made here", "isbi cells"])
def test_tf_instances_equal_the_numpy_ones(min_size, cases):
    """The SavedModel's in-graph objects (keras_unet.instances.instances_tf) against the numpy
    pipeline that predict --format instances runs, pixel for pixel."""
    import tensorflow as tf

    from keras_unet.instances import instances_tf

    graph = tf.function(lambda p: instances_tf(p, min_size=min_size),
                        input_signature=[tf.TensorSpec([None, None, 2], tf.float32)])
    for name, mask in (_cases() if cases == "made here" else [("isbi cells", _isbi_cells())]):
        probabilities = np.stack([~mask, mask], -1).astype(np.float32)
        expected = instances_from_probabilities(probabilities, min_size=min_size)
        np.testing.assert_array_equal(graph(probabilities).numpy(), expected, err_msg=name)


def test_fill_holes_rule():
    """A hole of one object is filled; a region enclosed by two objects is not; background at the
    image border is never a hole."""
    labels = np.zeros((9, 12), np.int32)
    labels[1:8, 1:6] = 1
    labels[3:5, 3] = 0  # hole of object 1
    labels[1:8, 6:11] = 2
    labels[4, 5:7] = 0  # a gap shared by objects 1 and 2 -> not a hole
    labels[0, 8] = 0
    filled = fill_holes(labels)
    assert np.all(filled[3:5, 3] == 1) and np.all(filled[4, 5:7] == 0) and np.all(filled[0] == 0)


def test_typical_min_size_is_a_quarter_of_the_small_objects():
    """Against values worked out by hand: a quarter of the 5th percentile (linear interpolation,
    numpy's default) of the object areas."""
    def squares(small: int) -> np.ndarray:  # 20 squares of 10x10 px, `small` specks of 2x2 px
        target = np.zeros((120, 260), np.uint8)
        for i in range(20):
            r, c = 5 + 30 * (i // 8), 5 + 30 * (i % 8)
            target[r : r + 10, c : c + 10] = 1
        for i in range(small):
            target[110:112, 200 + 5 * i : 202 + 5 * i] = 1
        return target

    # 21 areas, sorted [4, 100, ...]: the 5th percentile sits at rank 0.05 * 20 = 1 -> 100 -> 25
    assert instances.typical_min_size([squares(1)]) == 25
    # 23 areas [4, 4, 4, 100, ...]: rank 0.05 * 22 = 1.1 -> 4 -> 1
    assert instances.typical_min_size([squares(3)]) == 1
    # 22 areas [4, 4, 100, ...]: rank 1.05 -> 4 + 0.05 * 96 = 8.8 -> 2.2 -> 2
    assert instances.typical_min_size([squares(2)]) == 2
    assert instances.typical_min_size([np.zeros((5, 5), np.uint8)]) == 0


def test_more_objects_than_a_label_image_holds_are_scored_not_a_crash():
    """A half-trained model's noise: isolated specks (every other pixel of every other row, 4-connected
    apart) make 90,000 objects. Written, that is a clear error; scored (validation during fit, the
    post-processing search, evaluate), it is a score near 0, not a stopped run."""
    from keras_unet import inference, postprocess

    p = np.zeros((600, 600, 2), np.float32)
    p[..., 0] = 1.0
    p[::2, ::2] = (0.0, 1.0)
    with pytest.raises(DataError, match="90000 objects do not fit a 16-bit label image"):
        instances_from_probabilities(p)
    assert instances_from_probabilities(p, dtype=np.int32).max() == 90_000
    truth = np.zeros((600, 600), np.int64)
    truth[100:120, 100:120] = 1
    assert postprocess.score([p], [truth], {"threshold": None, "min_size": 0, "split": "none"}) == 0.0
    page = inference.PredictedPage(name="noise", probabilities=p, truth=(truth > 0).astype(np.int32),
                                   true_instances=truth, mask_source="noise.png")
    row = inference.evaluate_page(page)
    assert row["object_objects_found"] == 90_000 and row["object_f1"] < 0.001
