"""Prediction jobs on Dask: a big image as one task per block, a collection as one task per
image, on the local scheduler (no set-up) or a ``dask.distributed`` cluster.

Dask, not a scheduler of our own: its local scheduler needs nothing, the same task graph runs on
a ``LocalCluster`` or any cluster given by address, and workers, retries and progress are its.
A task gets paths and settings, not arrays or models: each worker process opens the image lazily
and loads the model once (:func:`worker_model`). Locally, blocks run one after the other (the
``synchronous`` scheduler): TensorFlow already uses every core within a block.

Outputs are written under temporary names and renamed when complete, so a job that is stopped and
started again skips what is finished and redoes what was interrupted (:func:`pending`). A big
image's store is written as ``.NAME.partial`` with a marker per finished block: a job killed in
the middle (SIGKILL, a lost machine) and started again with the same settings goes on from its
finished blocks (:func:`resumable_store`); an error that is not a kill removes it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_unet import blocks, ngff
from keras_unet.errors import SettingsError
from keras_unet.postprocess import PostProcessing
from keras_unet.predictor import CONVERTED_ENGINES, Options, converted_model, remember_converted

DEFAULT_BLOCK = 1024  # px: about 100 MB of float32 input and probabilities per block for 2 classes


def worker_model(model_path: str):
    """The model at ``model_path``, loaded once per process (worker): its converted network where
    a job here recorded it (:func:`keras_unet.predictor.converted_model`: no TensorFlow), else Keras'."""
    from keras_unet.inference import load_model_cached

    return converted_model(model_path) or load_model_cached(str(model_path))


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


def _predict_block(model_path: str, source: Source, store: str, rows: slice, cols: slice, normalization,
                   options: Options, marker: str | None = None) -> int:
    """One task: the probabilities of one block core, written into the store's chunk(s), then its
    ``marker`` file (a block whose marker exists is finished: a resumed job skips it)."""
    import zarr

    model = worker_model(model_path)
    probabilities = blocks.predict_block(model, source.open().data, rows, cols, normalization, tile=options.tile,
                                         batch_size=options.batch_size, engine=options.engine,
                                         precision=options.precision)
    zarr.open_array(str(Path(store) / "0"), mode="r+")[:, rows, cols] = np.moveaxis(probabilities, -1, 0)
    if marker is not None:
        Path(marker).touch()  # after the chunk is written: a kill between the two redoes the block
    return 1


JOB_FILE, MARKERS = ".keras-unet-job.json", ".keras-unet-blocks"


def partial_path(out_path) -> Path:
    """``.NAME.partial`` beside a big image's result store ``out_path``: the store being written."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.partial")


def resumable_store(partial: Path, job: dict, make, reopen):
    """``(store, finished block names)``: the store at ``partial`` where an interrupted job of the
    same ``job`` (model file and its time, source, block, options, post-processing) left it, with
    its finished blocks; else a new one from ``make(partial)`` with none. ``reopen(partial)``
    opens an existing store."""
    import json
    import shutil

    from keras_unet.runs import read_json, write_json

    if partial.is_dir() and read_json(partial / JOB_FILE) == json.loads(json.dumps(job, default=str)):
        return reopen(partial), {p.name for p in (partial / MARKERS).iterdir()}
    shutil.rmtree(partial, ignore_errors=True)
    store = make(partial)
    (partial / MARKERS).mkdir()
    write_json(partial / JOB_FILE, job)
    return store, set()


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


def predict_big(model_path, source: Source, out_path, request: "Request", client=None, progress=None,
                timings: dict | None = None) -> Path:
    """Predict a big image block by block into the result store ``out_path`` (OME-Zarr,
    :func:`keras_unet.ngff.create_result`): probabilities, and objects for ``request.kind ==
    "instances"`` (stitched across blocks, :func:`keras_unet.blocks.instances_blocked`, with
    ``request.postprocessing``). A shipped model's partner takes the image where its kind, read
    from windows spread over it, is the partner's (:func:`partner_for`). ``timings`` gets the
    seconds of each stage."""
    import dataclasses
    import shutil
    import time

    import dask
    from keras_unet.files import naming
    from keras_unet.inference import check_channels
    from keras_unet.model import unet_config
    from keras_unet.normalize import percentile_values

    timings = {} if timings is None else timings
    image = source.open()
    model_path, chosen, _ = big_image_partner(model_path, image, request)
    request = dataclasses.replace(request, postprocessing=chosen, partners=())
    config = unet_config(worker_model(model_path))
    block = request.block or DEFAULT_BLOCK
    grid = blocks.block_grid(image.shape, block, config["depth"])
    channels = image.shape[-1]
    check_channels(channels, config, source.path)
    chosen = request.postprocessing
    if request.kind == "instances":
        blocks.check_split(chosen.split)
    options = with_backend(worker_model(model_path), request.options, block, channels, len(grid.cores()))
    if options.engine in CONVERTED_ENGINES:  # the next job starts without TensorFlow
        remember_converted(model_path, worker_model(model_path))
    started = time.perf_counter()
    normalization = percentile_values(image.data, config["percentiles"]) if config["percentiles"] else None
    labels = request.kind == "instances"
    job = {"model": model_path, "modified": Path(model_path).stat().st_mtime_ns, "source": dataclasses.asdict(source),
           "shape": list(image.shape), "block": block, "kind": request.kind, "ngff": request.ngff,
           "options": dataclasses.asdict(options), "postprocessing": dataclasses.asdict(chosen)}
    partial = partial_path(out_path)
    try:
        store, finished = resumable_store(
            partial, job, reopen=lambda path: ngff.open_result(path, labels),
            make=lambda path: ngff.create_result(path, image.shape, config["n_classes"], block, labels, request.ngff))
        cores = [(rows, cols) for rows, cols in grid.cores() if f"{rows.start}_{cols.start}" not in finished]
        timings["blocks_done_before"] = len(grid.cores()) - len(cores)
        if progress is not None and timings["blocks_done_before"]:
            progress(timings["blocks_done_before"])
        tasks = [dask.delayed(_predict_block)(model_path, source, str(partial), rows, cols, normalization, options,
                                              str(partial / MARKERS / f"{rows.start}_{cols.start}"))
                 for rows, cols in cores]
        compute(tasks, client, progress)
        timings["predict"] = time.perf_counter() - started
        if labels:  # from the finished probabilities, whole: a resumed job stitches again
            started = time.perf_counter()
            probabilities = _ChannelsLast(store.probabilities)
            blocks.instances_blocked(probabilities, store.work, store.labels, grid, threshold=chosen.threshold,
                                     min_size=chosen.min_size, split=chosen.split)
            timings["stitch"] = time.perf_counter() - started
        ngff.finish(store)
        shutil.rmtree(partial / MARKERS)
        (partial / JOB_FILE).unlink()
        partial.rename(out_path)
    except Exception as err:  # an error, not a kill: nothing is left (a kill leaves the partial to resume)
        shutil.rmtree(partial, ignore_errors=True)
        raise naming(err, Path(out_path), partial) if isinstance(err, OSError) else err
    return Path(out_path)


def with_backend(model, options: Options, block: int, channels: int, n_blocks: int) -> Options:
    """``options`` with ``auto`` engine and precision resolved once for the whole job (on a full
    block's tiles), so every block and worker runs the same."""
    import dataclasses

    from keras_unet import tiling

    if "auto" not in (options.engine, options.precision):
        return options
    shape = (block, block, channels)
    tile = tiling.resolve_tile(model, shape, options.tile, options.batch_size)
    config = tiling.unet_config(model)
    tiles = tiling.count_tiles(shape, tile, config["depth"], config["padding"]) * n_blocks
    engine, precision = tiling.resolve_engine(model, shape, options.engine, tile, options.batch_size, tiles=tiles,
                                              precision=options.precision)
    return dataclasses.replace(options, engine=engine, precision=precision)


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


def is_big(path, block: int | None = None) -> bool:
    """Whether ``path`` is predicted block by block: an OME-Zarr store always, a TIFF where a
    ``block`` is given (``predict --block``); other images whole."""
    from keras_unet.ngff import is_zarr

    return is_zarr(path) or bool(block and Path(path).suffix.lower() in (".tif", ".tiff"))


@dataclass(frozen=True)
class Request:
    """What ``keras-unet predict`` was asked for a collection, as one value: the ``kind`` of output
    written into ``out_dir``, how the network runs (:class:`keras_unet.predictor.Options`), how
    objects are made (:class:`keras_unet.postprocess.PostProcessing`), the big images' ``block``
    (px; None: :data:`DEFAULT_BLOCK`) and NGFF version, the planes taken from OME-Zarr and TIFF
    inputs (:class:`Source`) and whether finished outputs are skipped."""

    out_dir: str
    kind: str = "png"
    options: Options = Options()
    postprocessing: PostProcessing = PostProcessing()
    block: int | None = None
    channel: int | None = None
    z: int | None = None
    t: int | None = None
    ngff: str = "0.5"
    skip_done: bool = False
    # a shipped model's partners (keras_unet.runs.partners): (image kind, model path, its post-processing)
    # each; a file task hands a file of that kind to that model, as predict does locally
    partners: tuple = ()

    def source(self, path) -> Source:
        return Source(str(path), channel=self.channel, z=self.z, t=self.t)

    def output(self, path) -> Path:
        """Where the output of input ``path`` goes: a result store for a big image, else a file."""
        from keras_unet.inference import output_path

        if is_big(path, self.block):
            return result_path(self.out_dir, path)
        return output_path(Path(self.out_dir), Path(path), self.kind)

    def done(self, path) -> bool:
        """True where ``path``'s output is complete and ``skip_done`` asks to keep it."""
        return self.skip_done and self.output(path).exists()


def partner_for(model_path, image, request: Request) -> tuple[str, PostProcessing, str | None]:
    """``(model path, post-processing, note)`` for ``image`` (``(H, W)`` or ``(H, W, C)``; a big
    image's :func:`keras_unet.kinds.sampled` windows): the partner ``request.partners`` names for
    its :func:`keras_unet.kinds.kind`, else ``model_path`` with the request's post-processing, as
    :meth:`keras_unet.predictor.Predictor.chosen_for` chooses locally; ``note`` (``nuclei-stained,
    light background``) where there are partners."""
    from keras_unet.kinds import kind

    if not request.partners:
        return str(model_path), request.postprocessing, None
    image_kind = kind(image)
    path, chosen = next(((partner, its) for of_kind, partner, its in request.partners if of_kind == image_kind),
                        (str(model_path), request.postprocessing))
    return str(path), chosen, f"{Path(path).parent.name}, {image_kind} background"


def big_image_partner(model_path, image: ngff.LazyImage, request: Request) -> tuple[str, PostProcessing, str | None]:
    """:func:`partner_for` a big image, its kind read from windows spread over it
    (:func:`keras_unet.kinds.sampled`), read only where the request has partners."""
    from keras_unet.kinds import sampled

    if not request.partners:
        return str(model_path), request.postprocessing, None
    return partner_for(model_path, sampled(image.data), request)


def predict_file(model_path: str, path: str, request: Request) -> str:
    """One task: a whole image file predicted and its output written (atomically)."""
    from keras_unet.data import read_pages
    from keras_unet.inference import PredictionJob

    pages, chosen = read_pages(path), request.postprocessing
    if pages:
        model_path, chosen, _ = partner_for(model_path, pages[0], request)
    job = PredictionJob(worker_model(str(model_path)), path, pages=pages, postprocessing=chosen,
                        **request.options.job_keywords())
    return str(job.run(Path(request.out_dir), request.kind))


def predict_files(model_path, paths: list, request: Request, client=None, progress=None) -> list[str]:
    """Many image files as one job of one task per file (on ``client``, or locally in turn)."""
    import dask

    tasks = [dask.delayed(predict_file)(str(model_path), str(p), request) for p in paths]
    return compute(tasks, client, progress)
