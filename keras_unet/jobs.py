"""Prediction jobs on Dask: a big image as one task per block, a collection as one task per
image, on the local scheduler (no set-up) or a ``dask.distributed`` cluster.

Dask, not a scheduler of our own: its local scheduler needs nothing, the same task graph runs on
a ``LocalCluster`` or any cluster given by address, and workers, retries and progress are its.
A task gets paths and settings, not arrays or models: each worker process opens the image lazily
and loads the model once (:func:`worker_model`). Locally, blocks run one after the other (the
``synchronous`` scheduler): TensorFlow already uses every core within a block.

Outputs are written under temporary names and renamed when complete, so a job that is stopped and
started again skips what is finished and redoes what was interrupted (:func:`pending`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import blocks, ngff
from keras_unet.errors import DataError, SettingsError

DEFAULT_BLOCK = 1024  # px: about 100 MB of float32 input and probabilities per block for 2 classes


def worker_model(model_path: str):
    """The model at ``model_path``, loaded once per process (worker)."""
    from keras_unet.inference import load_model_cached

    return load_model_cached(str(model_path))


@dataclass(frozen=True)
class Source:
    """Where a task finds its image: a path and the planes chosen (``keras_unet.ngff.open_image``)."""

    path: str
    channel: int | None = None
    z: int | None = None
    t: int | None = None

    def open(self) -> ngff.LazyImage:
        return _opened(self)


@functools.lru_cache(maxsize=8)
def _opened(source: Source) -> ngff.LazyImage:
    return ngff.open_image(source.path, channel=source.channel, z=source.z, t=source.t)


@dataclass
class BigSettings:
    """How a big image is predicted: block and tile size, the engine, the objects' post-processing,
    the NGFF version written."""

    block: int = DEFAULT_BLOCK
    tile: int | None = None
    batch_size: int = 1
    engine: str = "tensorflow"
    precision: str = "float32"
    threshold: float | None = None
    min_size: int = 0
    split: str = "none"
    ngff: str = "0.5"
    timings: dict = field(default_factory=dict)


def _predict_block(model_path: str, source: Source, store: str, rows: slice, cols: slice, normalization,
                   settings: BigSettings) -> int:
    """One task: the probabilities of one block core, written into the store's chunk(s)."""
    import zarr

    model = worker_model(model_path)
    probabilities = blocks.predict_block(model, source.open().data, rows, cols, normalization, tile=settings.tile,
                                         batch_size=settings.batch_size, engine=settings.engine,
                                         precision=settings.precision)
    zarr.open_array(str(Path(store) / "0"), mode="r+")[:, rows, cols] = np.moveaxis(probabilities, -1, 0)
    return 1


def connect(scheduler: str | None):
    """A ``dask.distributed.Client`` for ``scheduler`` (``tcp://host:port``), or None (local);
    a :class:`SettingsError` where the address cannot be reached."""
    if not scheduler:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise SettingsError(f"--scheduler needs dask.distributed; {ngff.EXTRA}") from None
    try:
        # not the process's default scheduler: dask work of the caller stays where it was
        return Client(scheduler, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise SettingsError(f"--scheduler {scheduler}: cannot reach it ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'no answer'})") from None


def compute(tasks: list, client=None, progress=None) -> list:
    """Run dask ``tasks`` (delayed) on ``client`` or locally one by one, calling ``progress(1)``
    after each."""
    import dask

    if client is None:
        results = []
        for task in tasks:
            results.append(dask.compute(task, scheduler="synchronous")[0])
            if progress is not None:
                progress(1)
        return results
    from distributed import as_completed

    with client.as_current():  # for as_completed; the client is not the process's default
        futures = client.compute(tasks)
        for _ in as_completed(futures):
            if progress is not None:
                progress(1)
        return client.gather(futures)


def block_count(shape, block: int) -> int:
    return -(-int(shape[0]) // block) * -(-int(shape[1]) // block)


def predict_big(model_path, source: Source, out_path, kind: str, settings: BigSettings, client=None,
                progress=None) -> Path:
    """Predict a big image block by block into the result store ``out_path`` (OME-Zarr,
    :func:`keras_unet.ngff.create_result`): probabilities, and objects for ``kind="instances"``
    (stitched across blocks, :func:`keras_unet.blocks.instances_blocked`)."""
    import time

    import dask
    from keras_unet.files import atomic_directory
    from keras_unet.model import unet_config
    from keras_unet.normalize import percentile_values

    model_path = str(model_path)
    config = unet_config(worker_model(model_path))
    image = source.open()
    grid = blocks.block_grid(image.shape, settings.block, config["depth"])
    channels = image.shape[-1]
    if channels != config["in_channels"] and not (channels == 1 and config["in_channels"] == 3):
        raise DataError(f"{source.path}: image has {channels} channel(s) but the model takes {config['in_channels']}; "
                         "choose one with --channel or convert it")
    if kind == "instances":
        blocks.check_split(settings.split)
    settings = with_backend(worker_model(model_path), settings, channels, len(grid.cores()))
    started = time.perf_counter()
    normalization = percentile_values(image.data, config["percentiles"]) if config["percentiles"] else None
    with atomic_directory(out_path) as tmp:
        store = ngff.create_result(tmp, image.shape, config["n_classes"], settings.block, kind == "instances",
                                   settings.ngff)
        tasks = [dask.delayed(_predict_block)(model_path, source, str(tmp), rows, cols, normalization, settings)
                 for rows, cols in grid.cores()]
        compute(tasks, client, progress)
        settings.timings["predict"] = time.perf_counter() - started
        if kind == "instances":
            started = time.perf_counter()
            probabilities = _ChannelsLast(store.probabilities)
            blocks.instances_blocked(probabilities, store.work, store.labels, grid, threshold=settings.threshold,
                                     min_size=settings.min_size, split=settings.split)
            settings.timings["stitch"] = time.perf_counter() - started
        ngff.finish(store)
    return Path(out_path)


def with_backend(model, settings: BigSettings, channels: int, n_blocks: int) -> BigSettings:
    """``settings`` with ``auto`` engine and precision resolved once for the whole job (on a full
    block's tiles), so every block and worker runs the same."""
    import dataclasses

    from keras_unet import tiling

    if "auto" not in (settings.engine, settings.precision):
        return settings
    shape = (settings.block, settings.block, channels)
    tile = tiling.resolve_tile(model, shape, settings.tile, settings.batch_size)
    config = tiling.unet_config(model)
    tiles = tiling.count_tiles(shape, tile, config["depth"], config["padding"]) * n_blocks
    engine, precision = tiling.resolve_engine(model, shape, settings.engine, tile, settings.batch_size, tiles=tiles,
                                              precision=settings.precision)
    return dataclasses.replace(settings, engine=engine, precision=precision)


class _ChannelsLast:
    """A ``(C, H, W)`` array read as ``(H, W, C)`` (NGFF stores channels first)."""

    def __init__(self, array):
        self.array, self.shape = array, (*array.shape[1:], array.shape[0])

    def __getitem__(self, index):
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))
        return np.moveaxis(np.asarray(self.array[:, rows, cols]), 0, -1)


def result_path(out_dir, source_path) -> Path:
    """``out_dir/<stem>.ome.zarr`` for an input ``<stem>.ome.zarr``, ``.zarr`` or TIFF."""
    name = Path(source_path).name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(out_dir) / f"{name}.ome.zarr"


def pending(outputs: list[Path]) -> list[int]:
    """Indices of ``outputs`` not yet complete (a complete output exists under its own name;
    an interrupted one only as a temporary, which is removed and redone)."""
    return [i for i, path in enumerate(outputs) if not Path(path).exists()]


@dataclass
class FileSettings:
    """How a small image file is predicted (whole, :class:`keras_unet.inference.PredictionJob`)."""

    kind: str = "png"
    tile: int | None = None
    batch_size: int = 1
    memory_mb: int = 4096
    tta: int = 1
    engine: str = "tensorflow"
    precision: str = "float32"
    threshold: float | None = None
    min_size: int = 0
    split: str = "none"


@dataclass(frozen=True)
class Request:
    """What ``keras-unet predict`` was asked for a collection, as one value: the settings of its
    big images (:class:`BigSettings`), of its whole files (:class:`FileSettings`) and the planes
    taken from OME-Zarr and TIFF inputs (:class:`Source`)."""

    out_dir: str
    files: FileSettings
    block: int | None = None
    channel: int | None = None
    z: int | None = None
    t: int | None = None
    ngff: str = "0.5"
    skip_done: bool = False

    @property
    def kind(self) -> str:
        return self.files.kind

    def big_settings(self) -> BigSettings:
        f = self.files
        return BigSettings(block=self.block or DEFAULT_BLOCK, tile=f.tile, batch_size=f.batch_size, engine=f.engine,
                           precision=f.precision, threshold=f.threshold, min_size=f.min_size, split=f.split,
                           ngff=self.ngff)

    def source(self, path) -> Source:
        return Source(str(path), channel=self.channel, z=self.z, t=self.t)


def predict_file(model_path: str, path: str, out_dir: str, settings: FileSettings) -> str:
    """One task: a whole image file predicted and its output written (atomically)."""
    from keras_unet.inference import PredictionJob

    job = PredictionJob(worker_model(str(model_path)), path, tile=settings.tile, batch_size=settings.batch_size,
                        memory_mb=settings.memory_mb, tta=settings.tta, engine=settings.engine,
                        precision=settings.precision)
    return str(job.run(Path(out_dir), settings.kind, threshold=settings.threshold, min_size=settings.min_size,
                       split=settings.split))


def predict_files(model_path, paths: list, out_dir, settings: FileSettings, client=None, progress=None) -> list[str]:
    """Many image files as one job of one task per file (on ``client``, or locally in turn)."""
    import dask

    tasks = [dask.delayed(predict_file)(str(model_path), str(p), str(out_dir), settings) for p in paths]
    return compute(tasks, client, progress)
