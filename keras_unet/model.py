"""The U-Net of Ronneberger, Fischer and Brox (2015), built with the Keras functional API.

Paper defaults: depth 5, 64 base filters (64 -> 1024), 1 input channel, 2 classes, unpadded 3x3
convolutions, 23 conv layers, 31,030,658 parameters, 572x572 in -> 388x388 out.

Tensors are channels-last, ``(batch, height, width, channels)``. Spatial dims are ``None`` so one
model takes every valid size (see :mod:`keras_unet.sizes`).

Input normalisation, inside the model so the exported models take raw pixels too, either way:

* per image by percentiles (the default, :mod:`keras_unet.normalize`): the inference
  model is ``raw image -> percentile_normalize -> network`` with the U-Net nested as the layer
  ``unet``; tiled prediction normalises the whole image and then tiles the nested network;
* a fixed raw range (``input_range``, e.g. 0-255 -> [0, 1]): the U-Net's first layer ``normalize``,
  the same for a tile as for the image (and how every run made before per-image normalisation was saved).
"""
from __future__ import annotations

import weakref

from keras_unet import sizes
from keras_unet.converted import ConvertedModel, ConvertedNetwork
from keras_unet.errors import SettingsError

# Keras is imported inside the functions that build or read a Keras model: predicting with a
# converted network (keras_unet.converted) imports no TensorFlow, and importing it takes 3-4 s.

def conv_block(x, filters: int, padding: str, batch_norm: bool, name: str):
    """Two 3x3 convolutions + ReLU: (h, w, c) -> (h-4, w-4, filters) when unpadded."""
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding=padding,
            kernel_initializer="he_normal",  # std sqrt(2/N), N = 9 * input channels (paper, sec. 3)
            use_bias=not batch_norm,
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def up_block(x, skip, filters: int, crop: int, padding: str, batch_norm: bool, level: int):
    """2x2 up-convolution halving the channels, crop the skip map, concatenate, conv block."""
    from keras import layers

    x = layers.Conv2DTranspose(
        filters, 2, strides=2, kernel_initializer="he_normal", name=f"dec{level}_up"
    )(x)
    if crop:
        skip = layers.Cropping2D(crop, name=f"crop{level}")(skip)
    x = layers.Concatenate(name=f"dec{level}_concat")([skip, x])
    return conv_block(x, filters, padding, batch_norm, name=f"dec{level}")


def unet(
    depth: int = 5,
    base_filters: int = 64,
    in_channels: int = 1,
    n_classes: int = 2,
    padding: str = "valid",
    dropout: float = 0.5,
    batch_norm: bool = False,
    input_range: tuple[float, float] | None = (0.0, 255.0),
    name: str = "unet",
) -> keras.Model:
    """Build a U-Net.

    Args:
        depth: number of resolution levels (5 in the paper: 4 poolings).
        base_filters: channels of the first level; level ``i`` has ``base_filters * 2**(i-1)``.
        in_channels: channels of the input image.
        n_classes: output classes; the output is a softmax over them.
        padding: ``"valid"`` (the paper: output smaller than input) or ``"same"``.
        dropout: dropout rate at the end of the contracting path (0 disables it).
        batch_norm: add batch normalisation after every 3x3 convolution (not in the paper).
        input_range: raw pixel range ``(low, high)`` mapped to [0, 1] by the ``normalize`` layer;
            ``None`` takes inputs already normalised.

    Returns:
        A model ``(batch, H, W, in_channels) -> (batch, H', W', n_classes)`` of class
        probabilities (float32 also under mixed precision), with ``H' = sizes.output_size(H)``.
    """
    import keras
    from keras import layers

    if base_filters < 1 or in_channels < 1 or n_classes < 2:
        raise SettingsError(f"base_filters ({base_filters}) and in_channels ({in_channels}) must be >= 1 and "
                            f"n_classes ({n_classes}) >= 2")
    crops = sizes.skip_crops(depth, padding)

    image = keras.Input(shape=(None, None, in_channels), name="image")
    x = image
    if input_range is not None:
        low, high = (float(v) for v in input_range)
        # float32 under every dtype policy: 16-bit raw values do not fit bfloat16's 8-bit mantissa
        x = layers.Rescaling(1.0 / (high - low), offset=-low / (high - low), dtype="float32", name="normalize")(x)

    skips = []
    for level in range(1, depth):
        x = conv_block(x, base_filters * 2 ** (level - 1), padding, batch_norm, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    x = conv_block(x, base_filters * 2 ** (depth - 1), padding, batch_norm, name="bottom")
    if dropout:
        x = layers.Dropout(dropout, name="bottom_dropout")(x)  # end of the contracting path

    for level in range(depth - 1, 0, -1):
        x = up_block(
            x, skips[level - 1], base_filters * 2 ** (level - 1), crops[level - 1], padding, batch_norm, level
        )

    logits = layers.Conv2D(n_classes, 1, kernel_initializer="he_normal", name="logits")(x)
    probabilities = layers.Softmax(axis=-1, dtype="float32", name="probabilities")(logits)
    return keras.Model(image, probabilities, name=name)


def inference_model(model: keras.Model, percentiles=None) -> keras.Model:
    """The same network (shared layers and weights) without loss, metrics or optimizer, taking raw
    pixels: with ``percentiles`` ``(low, high)`` behind per-image percentile normalisation.

    Saved as a run's ``model.keras`` it is built from Keras layers and Keras ops only, so
    ``keras.models.load_model`` opens it where keras_unet is not installed; a compiled model
    would name the project's loss class and carry the optimizer state (3x the weights for Adam).
    """
    import keras

    from keras_unet.normalize import percentile_normalize

    network = keras.Model(model.inputs, model.outputs, name="unet")
    if percentiles is None:
        return network
    image = keras.Input(shape=model.input_shape[1:], name="image")
    probabilities = network(percentile_normalize(image, percentiles))
    return keras.Model(image, probabilities, name="unet_percentile_normalized")


def network_of(model: keras.Model) -> keras.Model:
    """The U-Net itself: ``model``, or the network nested in a percentile-normalising model (a
    :class:`keras_unet.converted.ConvertedModel`'s: its converted network)."""
    if isinstance(model, ConvertedModel):
        return model.network
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if nested else model


def percentiles_of(model: keras.Model) -> tuple[float, float] | None:
    """``(low, high)`` of a model's per-image percentile normalisation, or None (fixed range)."""
    if network_of(model) is model:
        return None
    for entry in model.get_config()["layers"]:
        if entry.get("class_name") == "Quantile":
            q = entry["inbound_nodes"][0]["args"][1]
            return round(float(q[0]) * 100.0, 6), round(float(q[1]) * 100.0, 6)
    raise SettingsError(f"model {model.name!r} nests a network but has no percentile normalisation; "
                        "it was not made by keras_unet")


def exported_forward(model):
    """``raw tiles (B, H, W, C) -> probabilities`` float32 in TF ops, as exported graphs run a
    model: its network behind :func:`percentile_normalize_tf` (per input), or the model itself
    (fixed range, its first layer)."""
    import tensorflow as tf

    from keras_unet.normalize import percentile_normalize_tf

    percentiles, network = percentiles_of(model), network_of(model)
    if percentiles is None:
        return lambda images: tf.cast(model(images, training=False), tf.float32)
    return lambda images: tf.cast(network(percentile_normalize_tf(images, percentiles), training=False), tf.float32)


# unet_config per model object: the architecture of a built model never changes, and reading it
# (the Quantile node in get_config) costs about 10 ms, several times per prediction otherwise.
_CONFIGS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def unet_config(model: keras.Model) -> dict:
    """Recover the :func:`unet` arguments from a built model (for run folders and exporters), plus
    ``percentiles``: the per-image normalisation (or None where ``input_range`` applies).
    Read once per model object (a copy is returned); a converted model's as recorded."""
    if isinstance(model, ConvertedModel):
        return dict(model.config)
    if isinstance(model, ConvertedNetwork):  # the nested network: the model's, without its normalisation
        return {**model.owner.config, "percentiles": None}
    try:
        return dict(_CONFIGS[model])
    except (KeyError, TypeError):
        pass
    found = _read_unet_config(model)
    try:
        _CONFIGS[model] = found
    except TypeError:  # not weakly referable: read each time
        pass
    return dict(found)


def remember_config(model: keras.Model, config: dict) -> None:
    """Give ``model`` its :func:`unet_config` from what its run recorded (``keras_unet.runs``)
    instead of reading it back from its layers."""
    _CONFIGS[model] = dict(config)


def _read_unet_config(model: keras.Model) -> dict:
    percentiles = percentiles_of(model)
    model = network_of(model)
    convs = [layer for layer in model.layers if layer.name.endswith("_conv1")]
    depth = sum(1 for layer in convs if layer.name.startswith("enc")) + 1
    first = model.get_layer("enc1_conv1") if depth > 1 else model.get_layer("bottom_conv1")
    norm = next((layer for layer in model.layers if layer.name == "normalize"), None)
    input_range = None
    if norm is not None:
        scale, offset = float(norm.scale), float(norm.offset)
        low = -offset / scale
        input_range = (low, low + 1.0 / scale)
    return dict(
        depth=depth,
        base_filters=int(first.filters),
        in_channels=int(model.input_shape[-1]),
        n_classes=int(model.output_shape[-1]),
        padding=first.padding,
        batch_norm=any(layer.name.endswith("_bn1") for layer in model.layers),
        input_range=input_range,
        percentiles=percentiles,
    )


def conv_layers(model: keras.Model) -> list:
    """The convolution layers (3x3, 2x2 up and 1x1): 23 in the paper's network."""
    from keras import layers

    return [layer for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))]
