"""keras-unet: the U-Net of Ronneberger, Fischer and Brox (2015) for TensorFlow/Keras 3.

Modules, each importable on its own: ``sizes`` (valid tile sizes, the tile plan), ``model`` (the
network), ``settings`` (training settings and presets), ``errors`` (the user-input error family),
``files`` (atomic writes), ``synthetic`` (the embedded default data), ``weights`` (weight maps),
``losses``, ``metrics`` (pixel, challenge and object metrics), ``instances`` (objects from
probabilities), ``data`` (reading datasets), ``augment`` (TF-op augmentation), ``pipeline``
(tf.data), ``tiling`` (overlap-tile prediction), ``train``, ``keras_patches`` and ``inference``.
"""

__version__ = "0.1.0"
