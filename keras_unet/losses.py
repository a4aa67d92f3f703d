"""Losses: the paper's weighted pixel-wise cross-entropy, soft Dice, and their sum; and the Keras
metrics training watches (pixel error, foreground IoU).

Target layout (``y_true``, float32, ``(batch, H, W, K)``), the weight map riding as the last channel:

* ``K == 2``: ``[..., 0]`` sparse class index, ``[..., 1]`` weight map;
* ``K == C + 1``: ``[..., :C]`` one-hot classes, ``[..., C]`` weight map.

``y_pred`` is ``(batch, h, w, C)`` of probabilities (or logits with ``from_logits=True``). When the
target is larger than the prediction (valid padding: the target covers the input tile) its centre
``h x w`` is used, so a target cut at the input size works as well as one cut at the output size.
"""
from __future__ import annotations

import keras
from keras import ops

from keras_unet.errors import SettingsError


def center_crop_to(tensor, reference):
    """Crop ``tensor`` ``(B, H, W, K)`` to the spatial size of ``reference`` ``(B, h, w, C)``."""
    height, width = ops.shape(tensor)[1], ops.shape(tensor)[2]
    h, w = ops.shape(reference)[1], ops.shape(reference)[2]
    top, left = (height - h) // 2, (width - w) // 2
    return tensor[:, top : top + h, left : left + w, :]


def split_target(y_true, n_classes: int):
    """``(one_hot (B, H, W, C), weights (B, H, W))`` from a target in the documented layout."""
    y_true = ops.cast(y_true, "float32")
    weights = y_true[..., -1]
    if y_true.shape[-1] == 2:
        labels = ops.cast(ops.round(y_true[..., 0]), "int32")
        one_hot = ops.one_hot(labels, n_classes, dtype="float32")
    else:
        one_hot = y_true[..., :-1]
    return one_hot, weights


def log_probabilities(y_pred, from_logits: bool):
    """Stable log-probabilities ``(B, h, w, C)`` in float32 (works under mixed precision)."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    # Probabilities from a softmax: clip so saturated outputs give a finite loss and gradient.
    return ops.log(ops.clip(y_pred, 1e-7, 1.0))


@keras.saving.register_keras_serializable(package="keras_unet")
class WeightedCrossEntropy(keras.losses.Loss):
    """Pixel-wise cross-entropy weighted by the target's weight channel (paper, eq. 1).

    Per pixel ``-w(x) * log p_l(x)(x)``; reduced as the mean over pixels and batch, so with all
    weights 1 it equals ``keras.losses.CategoricalCrossentropy``.
    """

    def __init__(self, from_logits: bool = False, name: str = "weighted_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_true = center_crop_to(y_true, y_pred)
        one_hot, weights = split_target(y_true, y_pred.shape[-1])
        log_p = log_probabilities(y_pred, self.from_logits)
        return -weights * ops.sum(one_hot * log_p, axis=-1)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


def soft_dice_loss(y_true, y_pred, from_logits: bool = False, include_background: bool = False, smooth: float = 1.0):
    """1 - mean soft Dice over classes, per sample: ``(B,)``. Ignores the weight channel."""
    y_true = center_crop_to(y_true, y_pred)
    n_classes = y_pred.shape[-1]
    one_hot, _ = split_target(y_true, n_classes)
    probs = ops.cast(y_pred, "float32")
    if from_logits:
        probs = ops.softmax(probs, axis=-1)
    if not include_background:
        one_hot, probs = one_hot[..., 1:], probs[..., 1:]
    intersection = ops.sum(one_hot * probs, axis=(1, 2))
    total = ops.sum(one_hot, axis=(1, 2)) + ops.sum(probs, axis=(1, 2))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package="keras_unet")
class SoftDice(keras.losses.Loss):
    """Soft Dice loss over the foreground classes (for strong class imbalance)."""

    def __init__(self, from_logits: bool = False, include_background: bool = False, name: str = "soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits
        self.include_background = include_background

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred, self.from_logits, self.include_background)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "include_background": self.include_background}


@keras.saving.register_keras_serializable(package="keras_unet")
class WeightedCrossEntropyDice(keras.losses.Loss):
    """``weighted cross-entropy + dice_weight * soft Dice``."""

    def __init__(self, dice_weight: float = 1.0, from_logits: bool = False, name: str = "weighted_ce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.from_logits = from_logits
        self._ce = WeightedCrossEntropy(from_logits=from_logits)

    def call(self, y_true, y_pred):
        ce = ops.mean(self._ce.call(y_true, y_pred), axis=(1, 2))
        return ce + self.dice_weight * soft_dice_loss(y_true, y_pred, self.from_logits)

    def get_config(self):
        return {**super().get_config(), "dice_weight": self.dice_weight, "from_logits": self.from_logits}


LOSSES = {"wce": WeightedCrossEntropy, "dice": SoftDice, "wce+dice": WeightedCrossEntropyDice}


def get_loss(name: str) -> keras.losses.Loss:
    """A loss by its CLI name: ``wce`` (the paper's), ``dice`` or ``wce+dice``."""
    if name not in LOSSES:
        raise SettingsError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]()


# -- Keras metrics for training, on the same target layout. -------------------------------------


def _labels_and_predictions(y_true, y_pred):
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
