"""keras-unet: the U-Net of Ronneberger, Fischer and Brox (2015) for TensorFlow/Keras 3.

Modules, each importable on its own: ``sizes`` (valid tile sizes, the tile plan), ``model`` (the
network), ``settings`` (training settings and presets), ``errors`` (the user-input error family),
``files`` (atomic writes), ``runs`` (the run folder's record), ``subprocesses`` (fresh processes'
environment), ``synthetic`` (the embedded default data), ``weights`` (weight maps), ``losses``,
``metrics`` (pixel, challenge and object metrics), ``instances`` (objects from probabilities),
``postprocess`` (the post-processing value and its search), ``predictor`` (the one model handle),
``diameter`` (the objects' size estimated), ``kinds`` (an image's kind by its background: which
shipped model takes it), ``data`` (reading datasets), ``normalize`` (input normalisation),
``augment`` (TF-op augmentation), ``pipeline`` (tf.data), ``budget`` (the training schedule
planner), ``tiling`` (overlap-tile prediction), ``engines`` and ``precision`` (what runs the
network, in float32 or bfloat16), ``converted`` (a converted network run without TensorFlow),
``graphs`` (the model's TF graphs), ``onnx_conversion``, ``train``, ``keras_patches``, ``inference``
(prediction and evaluation of files), ``plots``, ``blocks``, ``ngff`` and ``jobs`` (big images and
collections on Dask). :func:`pretrained` loads a model shipped with the package (``nuclei``, with
``nuclei-stained`` for stained tissue); :func:`segment` gives the objects of an image.
"""

__version__ = "0.1.0"


def segment(model, image, **options):
    """Objects of ``image`` as ``keras-unet predict MODEL --format instances`` makes them; see
    :func:`keras_unet.predictor.segment` (the keywords) and :class:`keras_unet.predictor.Predictor`."""
    from keras_unet.predictor import segment as segment_image

    return segment_image(model, image, **options)


def pretrained(name: str = "nuclei"):
    """The shipped model ``name`` as a Keras model, ready for ``keras_unet.inference``
    (for its objects with its run's post-processing: ``keras_unet.predictor.Predictor.of(name)``; its card:
    ``keras_unet.runs.card(name)``; the names: ``keras_unet.runs.shipped_models()``)."""
    from keras_unet import inference, runs

    if name not in runs.shipped_models():
        from keras_unet.errors import ModelFileError

        raise ModelFileError(f"{name}: no shipped model of that name ({', '.join(runs.shipped_models()) or 'none'})")
    return inference.load_model(runs.SHIPPED / name)  # the package's, whatever folders the cwd holds
