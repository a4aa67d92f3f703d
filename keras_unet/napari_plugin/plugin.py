"""The manifest's reader, writer and sample data: thin functions over :mod:`.layers`."""
from __future__ import annotations

from keras_unet.napari_plugin import layers


def get_reader(path):
    """The reader of ``keras-unet predict``'s outputs (``*_instances.tif``, ``*_probabilities.tif``,
    OME-Zarr result stores), or None for any other file (napari then asks its other readers)."""
    if isinstance(path, list):
        if not all(layers.is_output(p) for p in path):
            return None
        return lambda paths: [layer for p in paths for layer in layers.read_output(p)]
    return (lambda p: layers.read_output(p)) if layers.is_output(path) else None


def write_training_pair(path: str, layer_data: list) -> list[str]:
    """File > Save Selected Layers with one image and one Labels layer selected: ``path`` is the
    dataset folder; the pair is saved as ``images/NAME.tif`` + ``masks/NAME.tif`` (NAME: the image layer)."""
    image = next(item for item in layer_data if item[2] == "image")
    labels = next(item for item in layer_data if item[2] == "labels")
    written = layers.write_training_pair(path, image[0], labels[0], name=image[1].get("name", "image"))
    return [str(p) for p in written]


def synthetic_cells():
    """File > Open Sample: one image of the synthetic cells ``keras-unet fit`` trains the demo on,
    with its true objects."""
    from keras_unet import synthetic

    image, instances = synthetic.sample(shape=(256, 256), seed=7)
    return [(image, {"name": "synthetic cells"}, "image"),
            (instances, {"name": "synthetic cells objects (truth)", "visible": False}, "labels")]
