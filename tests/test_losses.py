import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_unet import losses


def test_hand_computed_3x3():
    probs = np.full((1, 3, 3, 2), 0.5, np.float32)
    probs[0, 0, 0] = [0.9, 0.1]
    probs[0, 1, 1] = [0.2, 0.8]
    labels = np.zeros((1, 3, 3), np.float32)
    labels[0, 1, 1] = 1
    labels[0, 2, 2] = 1
    w = np.ones((1, 3, 3), np.float32)
    w[0, 1, 1] = 3.0
    w[0, 0, 0] = 2.0
    y_true = np.stack([labels, w], -1)
    expected = (2 * -np.log(0.9) + 3 * -np.log(0.8) + 7 * -np.log(0.5)) / 9
    got = float(losses.WeightedCrossEntropy()(y_true, probs))
    assert got == pytest.approx(expected, rel=1e-5)
    # one-hot layout gives the same
    one_hot = np.concatenate([np.eye(2, dtype=np.float32)[labels.astype(int)], w[..., None]], -1)
    assert float(losses.WeightedCrossEntropy()(one_hot, probs)) == pytest.approx(expected, rel=1e-5)


def test_unit_weights_equal_keras_categorical_crossentropy(rng):
    logits = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    probs = tf.nn.softmax(logits).numpy()
    labels = rng.integers(0, 3, size=(2, 5, 6)).astype(np.float32)
    y_true = np.stack([labels, np.ones_like(labels)], -1)
    keras_ce = keras.losses.CategoricalCrossentropy()(np.eye(3)[labels.astype(int)], probs)
    assert float(losses.WeightedCrossEntropy()(y_true, probs)) == pytest.approx(float(keras_ce), rel=1e-5)
    from_logits = losses.WeightedCrossEntropy(from_logits=True)(y_true, logits)
    assert float(from_logits) == pytest.approx(float(keras_ce), rel=1e-4)


def test_target_larger_than_prediction_is_center_cropped(rng):
    probs = tf.nn.softmax(rng.normal(size=(1, 4, 4, 2)).astype(np.float32)).numpy()
    labels = rng.integers(0, 2, size=(1, 8, 8)).astype(np.float32)
    y_big = np.stack([labels, np.ones_like(labels)], -1)
    y_small = y_big[:, 2:6, 2:6]
    loss = losses.WeightedCrossEntropy()
    assert float(loss(y_big, probs)) == pytest.approx(float(loss(y_small, probs)))


@pytest.mark.parametrize("from_logits", [True, False])
def test_saturated_predictions_have_finite_loss_and_gradient(from_logits):
    logits = tf.Variable(np.array([[[[80.0, -80.0], [-80.0, 80.0]]]], np.float32))
    y_true = np.array([[[[1.0, 5.0], [0.0, 5.0]]]], np.float32)  # both pixels confidently wrong
    with tf.GradientTape() as tape:
        pred = logits if from_logits else tf.nn.softmax(logits)
        value = losses.WeightedCrossEntropy(from_logits=from_logits)(y_true, pred)
    grad = tape.gradient(value, logits)
    assert np.isfinite(float(value)) and float(value) > 10
    assert np.all(np.isfinite(grad.numpy()))


def test_mixed_precision_prediction():
    probs = tf.cast(tf.constant([[[[0.25, 0.75]]]]), tf.float16)
    y_true = np.array([[[[1.0, 1.0]]]], np.float32)
    assert float(losses.WeightedCrossEntropy()(y_true, probs)) == pytest.approx(-np.log(0.75), rel=1e-3)


def test_dice_perfect_and_combined():
    labels = np.zeros((1, 4, 4), np.float32)
    labels[0, :2] = 1
    y_true = np.stack([labels, np.ones_like(labels)], -1)
    perfect = np.eye(2, dtype=np.float32)[labels.astype(int)]
    assert float(losses.SoftDice()(y_true, perfect)) == pytest.approx(0.0, abs=1e-6)
    wrong = 1.0 - perfect
    assert float(losses.SoftDice()(y_true, wrong)) > 0.9
    combined = losses.WeightedCrossEntropyDice(dice_weight=1.0)
    assert float(combined(y_true, wrong)) > float(losses.WeightedCrossEntropy()(y_true, wrong))
    assert set(losses.LOSSES) == {"wce", "dice", "wce+dice"}
