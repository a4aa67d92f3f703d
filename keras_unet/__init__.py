"""keras-unet: the U-Net of Ronneberger, Fischer and Brox (2015) for TensorFlow/Keras 3.

Modules, each importable on its own: ``sizes`` (valid tile sizes), ``model`` (the network),
``synthetic`` (the embedded default data), ``weights`` (weight maps), ``losses``, ``metrics``,
``data`` (reading datasets), ``augment`` (TF-op augmentation), ``pipeline`` (tf.data),
``tiling`` (overlap-tile prediction) and ``train``.
"""

__version__ = "0.1.0"
