"""napari layers to and from the project's arrays and files, with no Qt: what the widget runs in
its worker thread, what the reader returns and what the writer writes.

A layer is ``(..., H, W)`` (gray) or ``(..., H, W, C)`` (``rgb``); every leading index is one page,
predicted as ``keras-unet predict`` predicts a page of a stack (:class:`keras_unet.inference.PredictionJob`),
so the widget and the CLI give the same objects.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import data, inference
from keras_unet.errors import DataError
from keras_unet.postprocess import PostProcessing
from keras_unet.predictor import Options, Predictor


class Cancelled(Exception):
    """Raised by a progress callback to stop a segmentation between batches of tiles."""


@dataclass(frozen=True)
class Request:
    """What the widget asks for: the ``model`` (a run folder, a .keras file or a shipped model's
    name), how the network runs (:class:`keras_unet.predictor.Options`), the post-processing
    options given (the keywords of :meth:`keras_unet.predictor.Predictor.of`; None takes the
    model's own choice, as the CLI's options do) and the layers wanted."""

    model: str
    options: Options = Options()
    given: dict = field(default_factory=dict)  # threshold, min_size, split, diameter (px, the layer's objects)
    objects: bool = True
    probabilities: bool = False

    def predictor(self) -> Predictor:
        return Predictor.of(self.model, **{k: v for k, v in self.given.items() if v is not None})


@dataclass
class Segmentation:
    """The layers a segmentation gives: ``labels`` ``(..., H, W)`` uint32 (a multi-class model:
    ``(..., classes - 1, H, W)``), ``probabilities`` of the object classes ``(..., H, W)`` float32
    (``(..., classes - 1, H, W)``), each None where not asked for."""

    labels: np.ndarray | None
    probabilities: np.ndarray | None
    postprocessing: PostProcessing
    engine: str
    precision: str = "float32"
    diameter: float | None = None  # px, the objects' size measured in the layer (--diameter auto)
    model_note: str | None = None  # which model of a shipped family took the layer, and why


MIN_SIDE = inference.MIN_SIDE


def pages_of(layer_data, rgb: bool, name: str) -> tuple[list[np.ndarray], tuple]:
    """The pages of a layer's data and its leading shape: ``(H, W)`` or ``(H, W, C)`` arrays
    (read from a lazy array page by page) and the shape of the axes in front of them."""
    page_dims = 3 if rgb else 2
    if np.ndim(layer_data) < page_dims:
        raise DataError(f"{name}: layer has {np.ndim(layer_data)} axes; a 2D image is needed")
    shape = tuple(layer_data.shape)
    lead, page_shape = shape[: len(shape) - page_dims], shape[len(shape) - page_dims :]
    if min(page_shape[:2]) < MIN_SIDE:
        raise DataError(f"{name}: layer is {page_shape[0]}x{page_shape[1]} px, too small to segment "
                        f"(at least {MIN_SIDE}x{MIN_SIDE})")
    pages = [np.asarray(layer_data[index]) for index in np.ndindex(*lead)] if lead else [np.asarray(layer_data)]
    return pages, lead


def object_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``(H, W)`` p(object) of a two-class output, else ``(classes - 1, H, W)``."""
    if probabilities.shape[-1] == 2:
        return probabilities[..., 1]
    return np.moveaxis(probabilities[..., 1:], -1, 0)


def segment_layer(layer_data, request: Request, rgb: bool = False, name: str = "image",
                  progress=None) -> Segmentation:
    """Segment every page of a layer. ``progress(done, total)`` is called with tiles after each
    batch; it may raise (:class:`Cancelled`) to stop, and then nothing is returned."""
    predictor = request.predictor()
    pages, lead = pages_of(layer_data, rgb, name)
    job = predictor.job(name, request.options, pages=pages)
    chosen = job.postprocessing
    done = 0

    def tiles_done(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, job.total_tiles)

    labels, probabilities = [], []
    for page_probabilities in job.probabilities(tiles_done):
        if request.objects:
            labels.append(chosen.objects(page_probabilities))
        if request.probabilities:
            probabilities.append(object_probabilities(page_probabilities))

    def stacked(arrays):
        return np.stack(arrays).reshape(lead + arrays[0].shape) if arrays else None

    label_stack = stacked(labels)
    return Segmentation(labels=None if label_stack is None else label_stack.astype(np.uint32),
                        probabilities=stacked(probabilities), postprocessing=chosen, engine=job.engine,
                        precision=job.precision, diameter=job.diameter, model_note=job.model_note)


def layer_name(source: str, model: str, kind: str) -> str:
    """``"cells objects (nuclei)"``: the source layer, what it is, and the model (its folder's
    name for a model file, as a run is known by its folder)."""
    path = Path(model)
    label = path.parent.name if path.suffix == ".keras" else path.name or str(model)
    return f"{source} {kind} ({label})"


# -- training pairs ----------------------------------------------------------------------------

def _stem(name: str) -> str:
    """A file name stem from a layer name: letters, digits, ``-``, ``_`` and ``.``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "image"


def write_training_pair(folder, image, labels, name: str) -> tuple[Path, Path]:
    """Save an image layer's data and a Labels layer's data as ``folder/images/NAME.tif`` and
    ``folder/masks/NAME.tif``, the pair ``keras-unet fit --data folder`` reads (replacing an
    earlier pair of that name: a corrected mask is saved again). Each file is written atomically."""
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"{name}: the Labels layer has {labels.ndim} axes; save one 2D page (H, W) at a time")
    if image.shape[:2] != labels.shape:
        raise DataError(f"{name}: image is {image.shape[0]}x{image.shape[1]} px but the labels are "
                        f"{labels.shape[0]}x{labels.shape[1]}; choose the Labels layer of this image")
    if image.ndim not in (2, 3):
        raise DataError(f"{name}: image has {image.ndim} axes; save one 2D page at a time")
    if labels.max() <= 0:
        raise DataError(f"{name}: the Labels layer is empty; paint or predict objects first")
    if labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max:
        raise DataError(f"{name}: label values must be 0-65535 (0 = background)")
    root = Path(folder)
    stem = _stem(name)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image_path = data.write_image(root / "images" / f"{stem}.tif", image)
    mask_path = data.write_image(root / "masks" / f"{stem}.tif", labels.astype(np.uint16))
    return image_path, mask_path


# -- reading the project's outputs ---------------------------------------------------------------

OUTPUT_SUFFIXES = ("_instances.tif", "_probabilities.tif")


def is_output(path) -> bool:
    """A file ``keras-unet predict`` wrote (``*_instances.tif``, ``*_probabilities.tif``) or an
    OME-Zarr result store of it (``labels/instances`` inside)."""
    path = Path(path)
    if path.name.endswith(OUTPUT_SUFFIXES):
        return path.is_file()
    return path.is_dir() and (path / "labels" / "instances").is_dir()


def read_output(path) -> list[tuple]:
    """napari layer data tuples ``(data, kwargs, layer_type)`` of one output of ``predict``."""
    path = Path(path)
    name = path.name
    if name.endswith("_instances.tif"):
        stack = np.stack(data.read_pages(path))
        return [(stack if len(stack) > 1 else stack[0], {"name": name[: -len(".tif")]}, "labels")]
    if name.endswith("_probabilities.tif"):
        pages = data.read_pages(path)
        classes = pages[0].shape[-1] if pages[0].ndim == 3 else 1
        stack = np.stack(pages) if len(pages) > 1 else pages[0]
        if classes == 1:
            return [(stack, {"name": name[: -len(".tif")], "colormap": "magma"}, "image")]
        return [(stack[..., k], {"name": f"{name[: -len('.tif')]} class {k}", "colormap": "magma",
                                 "contrast_limits": (0.0, 1.0), "visible": k > 0}, "image") for k in range(classes)]
    return _read_store(path)


def _read_store(path: Path) -> list[tuple]:
    """An OME-Zarr result store: its probabilities (the image, one layer per class, lazily) and
    its ``labels/instances``, each at full resolution."""
    import dask.array as da
    import zarr

    from keras_unet.ngff import open_image

    layers = []
    probabilities = open_image(path).data  # (H, W, C) lazily, as keras-unet reads any OME-Zarr image
    for k in range(probabilities.shape[-1]):
        layers.append((probabilities[..., k], {"name": f"{path.stem} class {k}", "colormap": "magma",
                                               "contrast_limits": (0.0, 1.0), "visible": k > 0}, "image"))
    labels = da.from_zarr(zarr.open_array(str(path / "labels" / "instances" / "0"), mode="r"))
    layers.append((labels, {"name": f"{path.stem} objects"}, "labels"))
    return layers
