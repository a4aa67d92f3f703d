"""The napari plugin (``pip install "unet-paper-keras[napari]"``): a segmentation widget, a reader
of ``keras-unet predict``'s outputs, the synthetic cells as sample data and a writer of
training pairs. Its manifest is ``napari.yaml``; the work is done by :mod:`keras_unet.napari_plugin.layers`
(no Qt), the widget only asks for settings and shows progress."""
