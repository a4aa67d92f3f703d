"""Command-line interface (installed as ``keras_unet.cli``; command ``keras-unet``)."""
