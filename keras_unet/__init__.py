"""keras-unet: the U-Net of Ronneberger, Fischer and Brox (2015) for TensorFlow/Keras 3.

Modules, each importable on its own: ``sizes`` (valid tile sizes, the tile plan), ``model`` (the
network), ``settings`` (training settings and presets), ``errors`` (the user-input error family),
``files`` (atomic writes), ``synthetic`` (the embedded default data), ``weights`` (weight maps),
``losses``, ``metrics`` (pixel, challenge and object metrics), ``instances`` (objects from
probabilities), ``data`` (reading datasets), ``augment`` (TF-op augmentation), ``pipeline``
(tf.data), ``tiling`` (overlap-tile prediction), ``engines`` and ``precision`` (what runs the
network, in float32 or bfloat16), ``train``, ``keras_patches`` and ``inference``.
:func:`pretrained` loads a model shipped with the package (``nuclei``).
"""

__version__ = "0.1.0"


def pretrained(name: str = "nuclei"):
    """The shipped model ``name`` as a Keras model, ready for ``keras_unet.inference``
    (its run's post-processing: ``keras_unet.runs.postprocessing(name)``; its card:
    ``keras_unet.runs.card(name)``; the names: ``keras_unet.runs.shipped_models()``)."""
    from keras_unet import inference, runs

    if name not in runs.shipped_models():
        from keras_unet.errors import ModelFileError

        raise ModelFileError(f"{name}: no shipped model of that name ({', '.join(runs.shipped_models()) or 'none'})")
    return inference.load_model(runs.SHIPPED / name)  # the package's, whatever folders the cwd holds
