"""The TF graphs of a trained model, as a ``tf.Module`` with three signatures, and its TF Serving
warm-up: what the SavedModel export writes (:mod:`keras_unet.export.savedmodel`) and what the ONNX
conversion starts from (:mod:`keras_unet.onnx_conversion`, for the export and the engines alike),
so neither reaches into the other.

* ``serving_default``: ``image`` float32 ``(batch, H, W, C)`` raw pixel values, H and W any valid
  tile size -> ``probabilities`` float32 ``(batch, H', W', classes)`` and ``labels`` int32
  ``(batch, H', W')``, with ``H' = H - 184`` for the paper's network.
* ``segment``: ``image`` float32 ``(H, W, C)``, **any** size -> ``probabilities`` ``(H, W, classes)``
  and ``labels`` ``(H, W)``: overlap-tile prediction (mirror padding, tiling, stitching) in TF ops.
* ``instances``: ``image`` as for ``segment`` -> ``instances`` int32 ``(H, W)`` (``(classes - 1,
  H, W)`` for more than two classes): objects 1..N, 0 background, as ``keras-unet predict --format
  instances`` makes them (argmax, components, holes filled, borders given back; the exporting run's
  ``min_object_size``, or the threshold and minimum size it chose on validation data), in
  TF ops (:func:`keras_unet.instances.instances_tf`), so a client needs no post-processing code.

The input normalisation of training is inside the graph, so clients send raw pixels. A
percentile-normalising model (:mod:`keras_unet.normalize`) normalises what it gets: each tile of
``serving_default`` by its own percentiles (exact when the tile is the whole image), the whole
image of ``segment`` before it is tiled (equal to ``keras-unet predict``).
The module is saved with ``tf.saved_model.save`` (not ``model.export``, which stores every weight
twice, keras#23553); it loads with plain TensorFlow, no keras_unet code.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_unet import sizes
from keras_unet.instances import instances_tf
from keras_unet.model import network_of, unet_config
from keras_unet.model import exported_forward
from keras_unet.normalize import percentile_normalize_tf
from keras_unet.sizes import mirror_index, prediction_plan

SIGNATURES = ("serving_default", "segment", "instances")



class UNetServing(tf.Module):
    """The Keras model's inference functions as a plain ``tf.Module``."""

    def __init__(self, model, tile: int, labels: bool = True, min_size: int = 0, threshold: float | None = None):
        super().__init__(name="unet_serving")
        self.min_size = int(min_size)
        self.threshold = None if threshold is None else float(threshold)
        config = unet_config(model)
        # Track the underlying tf.Variables once, and reach the model through a closure only:
        # tracking the Keras model too would save every weight twice (keras#23553), and its
        # variable wrappers are not what the TF1 `serve` loader (TF Serving) restores.
        self.weights = [variable.value for variable in model.weights]
        self._call = exported_forward(model)  # raw tiles, normalised per tile
        network = network_of(model)
        self._network = lambda tiles: network(tiles, training=False)
        self.percentiles = config["percentiles"]
        self.plan = prediction_plan(tile, config["depth"], config["padding"])
        self.channels = config["in_channels"]
        self.smallest = sizes.smallest_valid_input(config["depth"], config["padding"])
        self.size_step = sizes.size_step(config["depth"])
        self.n_classes = config["n_classes"]
        self.labels = labels
        spec_batch = tf.TensorSpec([None, None, None, self.channels], tf.float32, name="image")
        spec_image = tf.TensorSpec([None, None, self.channels], tf.float32, name="image")
        self.serve = tf.function(self._serve, input_signature=[spec_batch])
        self.segment = tf.function(self._segment, input_signature=[spec_image])
        self.instances = tf.function(self._instances, input_signature=[spec_image])

    def _checked(self, image, batched: bool):
        """``image`` behind run-time checks of rank, channels and (for tiles) size.

        TF Serving does not hold requests to the SignatureDef's shape, and a tensor of the wrong
        rank reaching the convolutions aborts the whole server process (a CHECK failure in the
        oneDNN kernel). These checks answer INVALID_ARGUMENT with a readable message instead.
        ``tf.ensure_shape`` guards rank and channels: an assert on ``tf.rank`` would be folded
        away, since the graph believes the signature's rank.
        """
        spec = [None, None, None, self.channels] if batched else [None, None, self.channels]
        image = tf.ensure_shape(image, spec)  # "Shape of tensor image [..] is not compatible with expected shape [..]"
        hw = tf.shape(image)[1:3] if batched else tf.shape(image)[:2]
        if batched:
            low, step = self.smallest, self.size_step
            valid = (hw >= low) & (tf.math.floormod(hw - low, step) == 0)
            message = (f"image height and width must be valid tile sizes, {low} + {step}k px (e.g. "
                       f"{self.plan.input_size}); use the 'segment' signature for images of any size; got")
        else:
            valid, message = hw >= 1, "image height and width must be at least 1 px; got"
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(valid), [message, hw])]):
            return tf.identity(image)

    def _serve(self, image):
        image = self._checked(image, batched=True)
        probabilities = tf.cast(self._call(image), tf.float32)
        if not self.labels:  # bioimage.io: its tools map outputs by position, so one output only
            return {"probabilities": probabilities}
        return {"probabilities": probabilities, "labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    def _count(self, length):
        """Tiles along an axis of ``length`` px: ``len(TilePlan.origins(length))`` as a tensor."""
        plan = self.plan
        return tf.where(length <= plan.kept, 1, (length - plan.kept + plan.step - 1) // plan.step + 1)

    def _segment(self, image):
        image = self._checked(image, batched=False)
        plan, keep, kept, step = self.plan, self.plan.keep_from, self.plan.kept, self.plan.step
        if self.percentiles is not None:  # the whole image's statistics, as predict_tiled
            image = percentile_normalize_tf(image[None], self.percentiles)[0]
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        rows, cols = self._count(height), self._count(width)  # the origins of predict_tiled: k * step
        # Mirror-padded tile windows as gathers of mirrored indices (tf.pad's REFLECT cannot pad
        # more than the image size, which small images need).
        tile_range = tf.range(plan.input_size) - plan.margin
        row_index = mirror_index(tf.range(rows)[:, None] * plan.step + tile_range[None, :], height)
        col_index = mirror_index(tf.range(cols)[:, None] * plan.step + tile_range[None, :], width)
        tiles = tf.gather(tf.gather(image, row_index), col_index, axis=2)  # (rows, S, cols, S, C)
        tiles = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3, 4]), [-1, plan.input_size, plan.input_size, self.channels])

        def one_tile(tile):
            out = self._network(tile[None])[0]
            return tf.cast(out[keep : keep + kept, keep : keep + kept], tf.float32)

        n = self.n_classes
        outputs = tf.map_fn(one_tile, tiles, fn_output_signature=tf.TensorSpec([kept, kept, n], tf.float32))
        outputs = tf.reshape(outputs, [rows, cols, kept, kept, n])
        # Stitch as predict_tiled overwrites: every tile gives its first `step` px, the last its whole output.
        head = tf.reshape(tf.transpose(outputs[:-1, :, :step], [1, 0, 2, 3, 4]), [cols, (rows - 1) * step, kept, n])
        columns = tf.concat([head, outputs[-1]], axis=1)  # (cols, H', kept, n)
        head = tf.reshape(tf.transpose(columns[:-1, :, :step], [1, 0, 2, 3]), [tf.shape(columns)[1], (cols - 1) * step, n])
        stitched = tf.concat([head, columns[-1]], axis=1)  # (H', W', n)
        probabilities = stitched[:height, :width]
        return {"probabilities": probabilities, "labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    def _instances(self, image):
        probabilities = self.segment(image)["probabilities"]
        threshold = self.threshold if self.n_classes == 2 else None  # a threshold is of two-class models
        per_class = [instances_tf(probabilities, object_class=k, min_size=self.min_size, threshold=threshold)
                     for k in range(1, self.n_classes)]
        return {"instances": per_class[0] if len(per_class) == 1 else tf.stack(per_class)}


# -- TF Serving warm-up ---------------------------------------------------------------------------
# TF Serving replays assets.extra/tf_serving_warmup_requests (a TFRecord file of PredictionLog
# protos) when it loads a version, so the first client does not pay for graph set-up. The protos
# are written by hand in protobuf's wire format: tensorflow-serving-api pins the full tensorflow
# wheel and cannot sit beside tensorflow-cpu. Field numbers from tensorflow_serving/apis:
# PredictionLog.predict_log = 6, PredictLog.request = 1, PredictRequest.model_spec = 1 and
# .inputs = 2 (map entry: key 1, value 2), ModelSpec.name = 1 and .signature_name = 3.
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes and sub-messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def warmup_record(model_name: str, signature: str, image) -> bytes:
    """One serialised ``PredictionLog`` holding a ``PredictRequest`` of ``image`` (float32)."""
    spec = _field(1, model_name.encode()) + _field(3, signature.encode())
    tensor = tf.make_tensor_proto(image, dtype=tf.float32).SerializeToString()
    request = _field(1, spec) + _field(2, _field(1, b"image") + _field(2, tensor))
    return _field(6, _field(1, request))


def warmup_images(module: "UNetServing") -> dict:
    """One request per signature, of the shapes a client sends: a batch of one export tile for
    ``serving_default`` and a 1.5-tile image (several tiles, mirrored edges) for ``segment``."""
    import numpy as np

    tile, side = module.plan.input_size, module.plan.step + module.plan.step // 2
    rng = np.random.default_rng(0)
    return {"serving_default": rng.uniform(0, 255, (1, tile, tile, module.channels)).astype(np.float32),
            "segment": rng.uniform(0, 255, (side, side, module.channels)).astype(np.float32),
            "instances": rng.uniform(0, 255, (side, side, module.channels)).astype(np.float32)}


def write_warmup(directory, module: "UNetServing", model_name: str, signatures=SIGNATURES) -> Path:
    """``directory/assets.extra/tf_serving_warmup_requests`` for each of ``signatures``."""
    path = Path(directory) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, image in warmup_images(module).items():
            if signature in signatures:
                writer.write(warmup_record(model_name, signature, image))
    return path


def default_export_tile(model) -> int:
    """Whole-image signature tile: the paper's 572 px (or the nearest valid size) for the model."""
    config = unet_config(model)
    target = 572
    valid = sizes.valid_input_sizes(target + sizes.size_step(config["depth"]), config["depth"], config["padding"])
    return min(valid, key=lambda s: abs(s - target))


def save_module(model, directory, tile: int | None = None, signatures=SIGNATURES, model_name: str = "unet",
                labels: bool = True, min_size: int = 0, threshold: float | None = None) -> Path:
    """``tf.saved_model.save`` of :class:`UNetServing` into ``directory`` (must not exist), with
    TF Serving's warm-up requests. ``labels=False``: probabilities only (bioimage.io)."""
    module = UNetServing(model, tile or default_export_tile(model), labels=labels, min_size=min_size,
                         threshold=threshold)
    functions = {"serving_default": module.serve, "segment": module.segment, "instances": module.instances}
    tf.saved_model.save(module, str(directory), signatures={k: functions[k].get_concrete_function() for k in signatures})
    write_warmup(directory, module, model_name, signatures)
    return Path(directory)
