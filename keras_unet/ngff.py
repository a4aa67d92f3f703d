"""Big images in and out: OME-Zarr (NGFF 0.4 and 0.5) and large TIFFs opened lazily as
``(H, W, C)`` dask arrays, and results written as OME-Zarr stores that napari's
``napari-ome-zarr`` reader and ``ome_zarr info`` open.

Reading goes through the ``ome-zarr`` package (NGFF metadata, both versions) and tifffile's zarr
store (a TIFF read tile by tile); the highest resolution level is the image. Axes other than y, x
and the channel (t, z) must be one plane or chosen by index; the channels are all taken unless
one is chosen.

A result store (:func:`create_result`) is an NGFF image of the probabilities (axes c, y, x;
float32) with the objects as NGFF labels under its ``labels/instances`` group (axes y, x;
uint32), one resolution level each, chunked by the prediction block so that blocks are written
independently. It is made under a temporary name and renamed when complete
(:func:`keras_unet.files.atomic_directory`), so an interrupted job never leaves a store that
looks finished.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from keras_unet.errors import DataError, SettingsError

TIFF_SUFFIXES = (".tif", ".tiff")
EXTRA = "install the zarr extra: pip install 'unet-paper-keras[zarr]'"


def require() -> None:
    """A :class:`SettingsError` naming the extra where dask, zarr or ome-zarr is missing."""
    try:
        import dask.array  # noqa: F401
        import ome_zarr  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as err:
        raise SettingsError(f"big images need {err.name}; {EXTRA}") from None


def is_zarr(path) -> bool:
    """A zarr store (v2 ``.zattrs``/``.zgroup`` or v3 ``zarr.json``): a folder read as one image."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zattrs", ".zgroup"))


@dataclass
class LazyImage:
    """An image as ``data`` ``(H, W, C)`` (a dask array: read when sliced), from ``source``,
    whose stored axes were ``axes`` (e.g. ``tczyx``) and planes ``selected`` (axis -> index)."""

    data: object
    source: Path
    axes: str
    selected: dict

    @property
    def shape(self):
        return self.data.shape


def open_image(path, channel: int | None = None, z: int | None = None, t: int | None = None) -> LazyImage:
    """Open an OME-Zarr image or a TIFF lazily as ``(H, W, C)``; a :class:`DataError` naming the
    file for a store that is not an image, an axis that does not exist or a plane out of range."""
    require()
    path = Path(path)
    if is_zarr(path):
        array, axes = _ome_zarr_level0(path)
    elif path.suffix.lower() in TIFF_SUFFIXES:
        array, axes = _tiff_level0(path)
    else:
        raise DataError(f"{path}: not an OME-Zarr store or a TIFF; big-image prediction reads those")
    data, selected = _select(array, axes, {"c": channel, "z": z, "t": t}, path)
    return LazyImage(data, path, axes, selected)


def _ome_zarr_level0(path: Path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    logging.getLogger("ome_zarr").setLevel(logging.ERROR)  # its version notes are not the user's business
    location = parse_url(str(path))
    if location is None:
        raise DataError(f"{path}: not a zarr store that ome-zarr can open")
    for node in Reader(location)():
        if node.load(Multiscales) is not None and node.data:
            axes = "".join(a["name"] if isinstance(a, dict) else str(a) for a in node.metadata.get("axes", []))
            return node.data[0], axes.lower() or "yx"[-node.data[0].ndim:]
        break  # the first node is the store itself; labels and other children are not the image
    raise DataError(f"{path}: a zarr store without an NGFF image (no 'multiscales' metadata); give the image's "
                    "store (e.g. image.ome.zarr), not a labels or plate group")


def _tiff_level0(path: Path):
    import dask.array as da
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.lower().replace("s", "c")
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        array = zarr.open(store, mode="r")
    except (tifffile.TiffFileError, OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: cannot read the TIFF ({err})".splitlines()[0]) from None
    return da.from_zarr(array), axes


def _select(array, axes: str, chosen: dict, path: Path):
    """``array`` with stored ``axes`` as ``(H, W, C)``: each other axis at its chosen (or only) plane."""
    import dask.array as da

    if len(axes) != array.ndim or "y" not in axes or "x" not in axes:
        raise DataError(f"{path}: axes {axes!r} do not describe a {array.ndim}-D image with y and x")
    for name, index in chosen.items():
        if index is not None and name not in axes:
            option = "--channel" if name == "c" else f"--{name}"
            raise DataError(f"{path}: has no {name} axis (axes {axes}); leave out {option}")
    index, selected = [], {}
    for axis, size in zip(axes, array.shape):
        if axis in "yx":
            index.append(slice(None))
        elif axis == "c" and chosen["c"] is None:
            index.append(slice(None))
        else:
            pick = chosen.get(axis)
            if pick is None and size > 1:
                raise DataError(f"{path}: has {size} planes along {axis} (axes {axes}); choose one with --{axis} "
                                f"0..{size - 1}")
            pick = 0 if pick is None else pick
            if not 0 <= pick < size:
                option = "--channel" if axis == "c" else f"--{axis}"
                raise DataError(f"{path}: {option} {pick} is out of range 0..{size - 1}")
            index.append(pick)
            selected[axis] = pick
    data = da.asarray(array)[tuple(index)]
    kept = [a for a, i in zip(axes, index) if isinstance(i, slice)]
    order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
    data = data.transpose(order)
    return (data if data.ndim == 3 else data[..., None]), selected


# -- Result stores -------------------------------------------------------------------------------


@dataclass
class ResultStore:
    """An open result store: ``probabilities`` (c, y, x) and ``labels`` (y, x) zarr arrays (None
    where not written) at ``path`` (the temporary folder while it is being written)."""

    path: Path
    probabilities: object
    labels: object
    work: object  # the labels' work array (uint32), removed when the store is finished


def create_result(path, shape, n_classes: int, block: int, labels: bool, version: str = "0.5") -> ResultStore:
    """A new result store at ``path`` for an image of ``shape`` ``(H, W, ...)``, chunked by ``block``."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    fmt = {"0.4": FormatV04(), "0.5": FormatV05()}.get(version)
    if fmt is None:
        raise SettingsError(f"--ngff {version} is not written; use 0.4 or 0.5")
    height, width = int(shape[0]), int(shape[1])
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    probabilities = root.create_array("0", shape=(n_classes, height, width), chunks=(n_classes, block, block),
                                      dtype="float32", fill_value=0)
    write_multiscales_metadata(root, datasets=[_dataset(3)], fmt=fmt, axes=["c", "y", "x"], name="probabilities")
    out = work = None
    if labels:
        group = root.require_group("labels")
        group.attrs.update(_labels_list(version))
        instances = group.require_group("instances")
        out = instances.create_array("0", shape=(height, width), chunks=(block, block), dtype="uint32", fill_value=0)
        write_multiscales_metadata(instances, datasets=[_dataset(2)], fmt=fmt, axes=["y", "x"], name="instances")
        _label_metadata(instances, version)
        work = root.create_array("work", shape=(height, width), chunks=(block, block), dtype="uint32", fill_value=0)
    return ResultStore(Path(path), probabilities, out, work)


def open_result(path, labels: bool) -> ResultStore:
    """The result store :func:`create_result` made at ``path``, opened to go on writing it."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    if not labels:
        return ResultStore(Path(path), root["0"], None, None)
    return ResultStore(Path(path), root["0"], root["labels/instances/0"], root["work"])


def finish(store: ResultStore) -> None:
    """Remove the work array; the store is then what readers see."""
    import shutil

    if store.work is not None:
        shutil.rmtree(store.path / "work", ignore_errors=True)


def _dataset(ndim: int) -> dict:
    """The one resolution level: path ``0`` at scale 1 on every axis."""
    return {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * ndim}]}


def _labels_list(version: str) -> dict:
    return {"ome": {"version": version, "labels": ["instances"]}} if version == "0.5" else {"labels": ["instances"]}


def _label_metadata(group, version: str) -> None:
    label = {"version": version, "source": {"image": "../../"}}
    if version == "0.5":
        group.attrs["ome"] = {**group.attrs.get("ome", {}), "image-label": label}
    else:
        group.attrs["image-label"] = label
