"""Prediction and evaluation of files: the library behind ``keras-unet predict`` and ``evaluate``."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_unet import data, metrics, runs, tiling, weights
from keras_unet.errors import ModelFileError
from keras_unet.model import network_of, unet_config
from keras_unet.postprocess import PostProcessing, labels_from_probabilities
from keras_unet.precision import with_policy


def resolve_model_path(path) -> Path:
    """A ``.keras`` file, a run folder's ``model.keras`` (else its ``last.keras``), or the name of
    a model shipped with the package (``nuclei``; :func:`keras_unet.runs.shipped_models`)."""
    path = runs.locate(path)
    if path.is_dir():
        for name in (runs.MODEL, runs.LAST):
            if runs.run_file(path, name).is_file():
                return runs.run_file(path, name)
        raise ModelFileError(f"{path}: run folder has no model.keras or last.keras (no epoch finished yet?)")
    if not path.is_file():
        shipped = ", ".join(runs.shipped_models()) or "none installed"
        raise ModelFileError(f"{path}: no such model file, run folder or shipped model ({shipped})")
    return path


def load_model(path):
    """Load a trained U-Net for inference (no optimizer, no compile)."""
    import keras

    import keras_unet.losses  # noqa: F401  (registers the custom objects of training checkpoints: losses, metrics)

    import zipfile

    path = resolve_model_path(path)
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: cannot load model (the file is empty)")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: cannot load model (not a .keras archive: truncated or not a model file)")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a model it cannot rebuild
        raise ModelFileError(f"{path}: cannot load model ({type(err).__name__}: {err})".splitlines()[0]) from None
    if network_of(model) is model:  # a run's last.keras trained in bfloat16: computed in float32 here
        model = with_policy(model, "float32")
    model = with_run_normalization(model, path)
    _recorded_settings(model, path)
    return model


def _recorded_settings(model, path: Path) -> None:
    """The settings the run recorded become the model's ``unet_config`` (stored, not read back
    from layers), where they describe this model (its classes); else it is read as before."""
    from keras_unet.model import remember_config

    recorded = runs.architecture(path)
    if recorded and recorded["n_classes"] == int(model.output_shape[-1]):
        remember_config(model, {**recorded, "in_channels": int(model.input_shape[-1])})


def with_run_normalization(model, path: Path):
    """A run's ``last.keras`` is the bare network (it trained on normalised images): put its run's
    percentile normalisation in front, as ``model.keras`` has it. Other models are returned as they are."""
    from keras_unet.model import inference_model, percentiles_of

    if path.name != runs.LAST or percentiles_of(model) is not None:
        return model
    saved = runs.record(path).get("config", {})
    if saved.get("normalization", "range") != "percentile":
        return model
    return inference_model(model, tuple(saved["percentiles"]))


MIN_SIDE = 8  # px; smaller images hold no object a U-Net of this project could segment


def check_channels(channels: int, config: dict, source) -> None:
    """A :class:`DataError` naming ``source`` where the model does not take ``channels``."""
    if channels != config["in_channels"] and not tiling.gray_for_rgb(channels, config["in_channels"]):
        raise data.DataError(f"{source}: image has {channels} channel(s) but the model takes {config['in_channels']}; "
                             f"convert it ({'to gray' if config['in_channels'] == 1 else 'to RGB'}) first")


def check_image(image: np.ndarray, config: dict, source) -> list[str]:
    """Check an image page against the model it goes to: a :class:`DataError` naming ``source``
    for a side under :data:`MIN_SIDE`, a channel count the model does not take or non-finite
    pixels; warnings (returned) for values beyond the raw range the model was trained on (8-bit
    model, 16-bit image)."""
    if image.ndim not in (2, 3) or min(image.shape[:2]) < MIN_SIDE:
        raise data.DataError(f"{source}: image is {'x'.join(map(str, image.shape[:2]))} px, too small to segment "
                             f"(at least {MIN_SIDE}x{MIN_SIDE})")
    check_channels(1 if image.ndim == 2 else image.shape[-1], config, source)
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise data.DataError(f"{source}: image has NaN or infinite pixel values; fix them first")
    warnings = []
    if config["percentiles"] is not None:
        return warnings  # normalised by its own percentiles: every raw range is fine
    low, high = config["input_range"] or (0.0, 1.0)
    top = float(np.max(image))
    if top > high * 1.001:
        warnings.append(f"{source}: values up to {top:g} exceed the range the model was trained on "
                        f"({low:g}-{high:g}): its output is unreliable; convert the image to that range or retrain")
    return warnings


def predict_probabilities(model, image: np.ndarray, tile=None, batch_size: int = 1, tta: int = 1, progress=None,
                          memory_mb: int = 4096, engine: str = "tensorflow", precision: str = "float32"):
    """``(H, W, n_classes)`` probabilities with overlap-tile prediction and optional TTA (1-8),
    the network run by ``engine`` at ``precision`` (:mod:`keras_unet.engines`)."""
    options = dict(tile=tile, batch_size=batch_size, progress=progress, memory_mb=memory_mb, engine=engine,
                   precision=precision)
    if tta > 1:
        return tiling.predict_tta(model, image, tta, **options)
    return tiling.predict_tiled(model, image, **options)


def output_path(out_dir: Path, source: Path, kind: str) -> Path:
    suffix = {"png": ".png", "tif": ".tif", "probabilities": ".tif", "instances": ".tif"}[kind]
    stem = source.stem + {"probabilities": "_probabilities", "instances": "_instances"}.get(kind, "")
    return Path(out_dir) / f"{stem}{suffix}"


def load_model_cached(model_path):
    """:func:`load_model`, once per model file and process (``segment``, Dask workers, the napari
    widget), again when the file changed (a run trained on: its new ``model.keras``)."""
    path = resolve_model_path(model_path)
    return _load_model_version(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_model_version(path: str, _modified: int):
    return load_model(path)


def write_prediction(path: Path, pages: list[np.ndarray], kind: str, scale_labels: bool = True) -> Path:
    """Write label maps (PNG/TIFF; two-class PNGs as 0/255 to be visible) or float32 probability
    TIFFs ``(pages, H, W, classes)``. Multipage inputs give multipage TIFFs."""
    if kind in ("probabilities", "instances"):
        stack = np.stack(pages).astype(np.float32 if kind == "probabilities" else np.uint16)
        return data.write_image(path, stack if len(pages) > 1 else stack[0], pages=len(pages) > 1)
    labels = [labels_from_probabilities(p) for p in pages] if pages[0].ndim == 3 else pages
    n_classes = pages[0].shape[-1] if pages[0].ndim == 3 else int(max(lab.max() for lab in labels)) + 1
    if scale_labels and kind == "png" and n_classes == 2:
        labels = [lab * np.uint8(255) for lab in labels]
    if len(labels) > 1 and kind == "png":
        path = path.with_suffix(".tif")
    return data.write_image(path, np.stack(labels) if len(labels) > 1 else labels[0], pages=len(labels) > 1)


class PredictionJob:
    """One image file (or the pages of an image already in memory) to predict: its pages, the
    checks, the tiles, then :meth:`run` (files) or :meth:`probabilities` (arrays).

    Split in two so a caller can show what is coming (``warnings``, ``total_tiles`` for a progress
    bar) before the work starts. ``pages`` (each ``(H, W)`` or ``(H, W, C)``) in place of reading
    ``path``: the napari widget predicts a layer exactly as ``predict`` predicts a file.
    ``postprocessing``: how the file's objects are made (:meth:`run`, :meth:`finish`); its
    ``scale`` is what the pages are resized by where ``scale`` is not given.
    """

    def __init__(self, model, path, tile=None, batch_size: int = 1, memory_mb: int = 4096, tta: int = 1,
                 engine: str = "tensorflow", pages: list[np.ndarray] | None = None, scale: float | None = None,
                 precision: str = "float32", job_files: int = 1, postprocessing: PostProcessing = PostProcessing()):
        config = unet_config(model)
        self.model, self.path, self.batch_size, self.tta, self.memory_mb = model, Path(path), batch_size, tta, memory_mb
        self.postprocessing = postprocessing
        self.diameter = None  # px, the objects' size measured in the image (--diameter auto), where it was
        self.model_note = None  # which model of a shipped family took the file, and why (Predictor.chosen_for)
        scale = postprocessing.scale if scale is None else scale
        self.pages = data.read_pages(path) if pages is None else pages
        self.warnings = list(dict.fromkeys(w for page in self.pages for w in check_image(page, config, path)))
        # scale != 1 (predict --diameter): the network sees each page resized so that its objects
        # have the size it learned; its probabilities are resized back to the page.
        self.shapes = [page.shape[:2] for page in self.pages]
        if scale != 1.0:
            self.pages = [rescaled(page, scale, path) for page in self.pages]
        self.tiles = [tiling.resolve_tile(model, page.shape, tile, batch_size, memory_mb) for page in self.pages]
        self.total_tiles = tta * sum(tiling.count_tiles(page.shape, t, config["depth"], config["padding"])
                                     for page, t in zip(self.pages, self.tiles))
        # one engine and precision for the file, chosen for its first page's tiles and the whole
        # job's count (``job_files`` files like this one: a collection resolves once, on its first)
        self.engine, self.precision = tiling.resolve_engine(model, self.pages[0].shape, engine, self.tiles[0],
                                                            batch_size, memory_mb, tiles=self.total_tiles * job_files,
                                                            precision=precision)
        # normalised here, once: a collection's next file is made in a background thread while the
        # network runs on this one (prefetched_jobs)
        self.pages = [tiling.prepared(model, page) for page in self.pages]

    def probabilities(self, progress=None):
        """Each page's ``(H, W, n_classes)`` probabilities in turn; ``progress(tiles)`` after each
        batch of tiles (an exception it raises stops the job)."""
        for page, tile, shape in zip(self.pages, self.tiles, self.shapes):
            probabilities = predict_probabilities(self.model, page, tile, self.batch_size, self.tta, progress,
                                                  self.memory_mb, self.engine, self.precision)
            yield probabilities if probabilities.shape[:2] == shape else resized(probabilities, shape)

    def run(self, out_dir: Path, kind: str, progress=None) -> Path:
        """Predict every page and write the ``kind`` of output (see :func:`write_prediction`)."""
        return self.finish(list(self.probabilities(progress)), out_dir, kind)

    def finish(self, probabilities: list, out_dir: Path, kind: str) -> Path:
        """Make the ``kind`` of output of the pages' ``probabilities`` and write it."""
        outputs = [self.postprocessing.output(p, kind) for p in probabilities]
        return write_prediction(output_path(out_dir, self.path, kind), outputs, kind)


def job_backend(model, paths: list, tile=None, batch_size: int = 1, memory_mb: int = 4096, tta: int = 1,
                engine: str = "auto", precision: str = "auto", scale: float = 1.0) -> tuple[str, str]:
    """``(engine, precision)`` for a job of the image files ``paths``, resolved once on the first
    that can be read so every file of the job runs the same (:func:`keras_unet.engines.resolve`);
    float32 TensorFlow where none can (each file's own error comes when it is predicted)."""
    if "auto" not in (engine, precision):
        return engine, precision
    for done, path in enumerate(paths):
        try:
            job = PredictionJob(model, path, tile=tile, batch_size=batch_size, memory_mb=memory_mb, tta=tta,
                                engine=engine, scale=scale, precision=precision, job_files=len(paths) - done)
        except (data.DataError, OSError):
            continue
        return job.engine, job.precision
    return "tensorflow", "float32"


def prefetched_jobs(paths, make, engine: str = "tensorflow", precision: str = "float32"):
    """``(path, PredictionJob or None, problem or None)`` of each of ``paths`` in order, the next
    job made (read, checked, its tiles planned) in a background thread while the caller predicts
    the current one. A file that cannot be used (unreadable, truncated, empty, wrong channels: a
    :class:`DataError` or OS error) comes with its one-line problem instead of a job, so one bad
    file does not stop a collection. Each network of the job resolves ``auto`` engine and
    precision once, on the first good file it takes (:func:`job_backend`), and its other files use
    them: a shipped model's partner (:meth:`keras_unet.predictor.Predictor.for_image`) is a network
    of its own, whose engine is chosen for it (the main network's OpenVINO would cost the partner
    a conversion its few files never pay back). ``make(path, backend=, job_files=)`` makes a job
    (:meth:`keras_unet.predictor.Predictor.job`); ``backend(network)`` is ``(engine, precision)``
    for that network: as resolved, else as asked."""
    from concurrent.futures import ThreadPoolExecutor
    from keras_unet.errors import user_message

    paths = list(paths)
    resolved = {}  # id(network) -> (network, engine, precision); the network kept so its id stays its own

    def backend(network):
        return resolved[id(network)][1:] if id(network) in resolved else (engine, precision)

    def made(path, files: int = 1):
        try:
            job = make(path, backend=backend, job_files=files)
        except (data.DataError, OSError) as err:
            return None, user_message(err)
        resolved.setdefault(id(job.model), (job.model, job.engine, job.precision))
        return job, None

    with ThreadPoolExecutor(1, thread_name_prefix="keras-unet-read") as pool:
        upcoming = None
        for i, path in enumerate(paths):
            job, problem = upcoming.result() if upcoming is not None else made(path, len(paths) - i)
            # read ahead once the first network is resolved: its measurement, if any, is made alone
            ahead = i + 1 < len(paths) and ("auto" not in (engine, precision) or resolved)
            upcoming = pool.submit(made, paths[i + 1], len(paths) - i - 1) if ahead else None
            yield path, job, problem


class Finisher:
    """Post-processing and writing of predicted files in one background thread, in order, while
    the network runs on the next file (on 2 cores: 13% off a bfloat16 job of 120 DSB2018 images).
    :meth:`submit` returns the path the output will have; leaving the ``with`` block waits for
    every write and raises the first error (each output is written atomically: a failed one
    leaves nothing)."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="keras-unet-write")
        self._pending = []

    def submit(self, job: "PredictionJob", probabilities: list, out_dir: Path, kind: str) -> Path:
        """Make ``kind`` of the pages' ``probabilities`` and write it, in the background."""
        for done in [f for f in self._pending if f.done()]:  # an error stops the job at the next file
            self._pending.remove(done)
            done.result()
        self._pending.append(self._pool.submit(job.finish, probabilities, out_dir, kind))
        return output_path(out_dir, job.path, kind)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return False


def rescaled(image: np.ndarray, scale: float, source="image") -> np.ndarray:
    """``image`` ``(H, W[, C])`` resized by ``scale`` (float32; area-averaged when shrinking, so
    small objects are not aliased away: TensorFlow's antialiased bilinear resize)."""
    import tensorflow as tf

    height, width = image.shape[:2]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if min(size) < 8:
        raise data.DataError(f"{source}: {height}x{width} px resized by {scale:.3g} (--diameter) is under 8 px; "
                             f"give the objects' real diameter")
    planes = image[..., None] if image.ndim == 2 else image
    out = tf.image.resize(planes.astype(np.float32), size, method="bilinear", antialias=True).numpy()
    return out[..., 0] if image.ndim == 2 else out


def resized(probabilities: np.ndarray, shape) -> np.ndarray:
    """Probabilities ``(h, w, classes)`` resized (bilinear) to ``shape`` ``(H, W)``: still sums of 1."""
    import tensorflow as tf

    return tf.image.resize(probabilities, tuple(shape), method="bilinear", antialias=True).numpy()


def true_objects(mask: np.ndarray, source) -> tuple[np.ndarray, np.ndarray]:
    """``(binary truth (H, W), true instance labels (H, W))`` of a mask page: an instance mask as
    it is (the pixel truth its training target, borders cut), a binary mask's 4-connected
    components."""
    from keras_unet.instances import as_uint16

    mask = mask[..., 0] if mask.ndim == 3 else mask
    if data.mask_kind(mask) == "binary":
        truth = data.binary_from_mask(mask)
        return truth, weights.instances_from_binary(truth)
    return weights.binary_target(mask.astype(np.int32)), as_uint16(mask, str(source))


@dataclass
class PredictedPage:
    """One labelled image page and the model's probabilities for it: what evaluation and the
    post-processing search both start from, so a page is predicted once for both."""

    name: str
    mask_source: str
    probabilities: np.ndarray  # (H, W, classes)
    truth: np.ndarray  # (H, W) binary pixel truth
    true_instances: np.ndarray  # (H, W) instance labels


def predicted_pages(model, pairs, tile=None, batch_size: int = 1, tta: int = 1, progress=None,
                    engine: str = "tensorflow", scale: float = 1.0, precision: str = "float32", problems=None):
    """:class:`PredictedPage` of every page of ``(image, mask)`` file pairs, checked, one at a time,
    predicted as ``predict`` predicts them (:class:`PredictionJob`; ``scale``: ``--diameter``).
    ``problems``: a list that gets the one-line problem of each pair that cannot be used (skipped:
    one bad pair does not stop an evaluation); without it the first such pair raises."""
    from keras_unet.errors import user_message

    for image_path, mask_path in pairs:
        try:
            images, masks = data.read_pages(image_path), data.read_pages(mask_path)
            data.check_pair(image_path, mask_path, images, masks)
            suffixes = [f"[{page}]" if len(images) > 1 else "" for page in range(len(images))]
            truths = [true_objects(mask, f"{mask_path}{suffix}") for mask, suffix in zip(masks, suffixes)]
            jobs = [PredictionJob(model, image_path, tile=tile, batch_size=batch_size, tta=tta, engine=engine,
                                  pages=[image], scale=scale, precision=precision) for image in images]
        except (data.DataError, OSError) as err:
            if problems is None:
                raise
            problems.append(user_message(err))
            continue
        for job, suffix, (truth, true_instances) in zip(jobs, suffixes, truths):
            yield PredictedPage(image_path.name + suffix, f"{mask_path}{suffix}", next(job.probabilities(progress)),
                                truth, true_instances)


def evaluate_page(page: PredictedPage, postprocessing: PostProcessing = PostProcessing(), sweep: bool = False,
                  warn=None) -> dict:
    """The metrics row of one :class:`PredictedPage` (see :func:`evaluate_pairs`)."""
    from keras_unet.instances import instances_from_probabilities

    chosen = postprocessing
    prediction = labels_from_probabilities(page.probabilities, chosen.threshold)
    if chosen.split == "boundary":  # a three-class model: its objects are interior and boundary
        prediction = (prediction != 0).astype(np.uint8)
    found = instances_from_probabilities(page.probabilities, threshold=chosen.threshold, min_size=chosen.min_size,
                                         split=chosen.split, dtype=np.int32)  # scored, not written
    if warn is not None and not np.any(page.true_instances):
        warn(f"{page.mask_source}: the mask has no object: its Rand, warping and SEG scores are perfect whatever "
             "is predicted; check the mask")
    row = {"image": page.name, **metrics.evaluate_binary(prediction, page.truth),
           **{f"object_{k}": v for k, v in metrics.evaluate_objects(found, page.true_instances).items()}}
    if sweep:
        row.update(metrics.challenge_sweep(page.probabilities[..., 1], page.truth))
    return row


def evaluate_pairs(model, pairs, tile=None, batch_size: int = 1, tta: int = 1, progress=None,
                   postprocessing: PostProcessing = PostProcessing(), sweep: bool = False, warn=None) -> list[dict]:
    """Metrics per image page of ``(image, mask)`` pairs: pixel metrics of the object class
    (:func:`keras_unet.metrics.evaluate_binary`) and object metrics
    (:func:`keras_unet.metrics.evaluate_objects`, ``object_*`` keys) of the predicted instances
    against the true ones: an instance mask as it is, a binary mask's 4-connected components.

    ``postprocessing``: how objects are made, as by ``predict`` (its threshold fixed beforehand, as
    a user would; default: argmax, nothing dropped, no split). ``sweep``: also the ISBI
    challenge's protocol, the best value of each challenge metric over thresholds 0.0-1.0
    (``swept_*`` keys; it looks at the truth to pick, so it is an upper bound, reported apart).
    ``warn``: called with a message for each page whose scores mean little (a mask without any
    object scores a perfect Rand error and SEG whatever is predicted).
    """
    return [evaluate_page(page, postprocessing, sweep=sweep, warn=warn)
            for page in predicted_pages(model, pairs, tile, batch_size, tta, progress)]


def write_metrics(out_dir: Path, rows: list[dict], model, data, settings: dict) -> tuple[Path, Path]:
    """``metrics.csv`` (one row per image, then the mean) and ``metrics.json`` (the same with the
    model, data and evaluation settings) in ``out_dir``, each written atomically."""
    import csv
    import json

    from keras_unet.files import atomic_path

    csv_path, json_path = Path(out_dir) / "metrics.csv", Path(out_dir) / "metrics.json"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps({"model": str(model), "data": str(data), "settings": settings, "rows": rows},
                                  indent=2))
    return csv_path, json_path


def mean_row(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "image"]
    return {"image": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}
