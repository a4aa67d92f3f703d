"""One handle for a model to predict with, as CSBDeep's ``BaseModel`` owns a model folder: the
path resolved once, the run's record read once, the network loaded through the one cache, and
the post-processing (:class:`keras_unet.postprocess.PostProcessing`) the run chose, with what the
caller gave in its place. ``predict``, ``evaluate``, the napari widget, Dask workers, ``export``
and :func:`segment` all start from :meth:`Predictor.of`.

How the network runs over an image (tile, batch, memory, TTA, engine, precision) is one value too,
:class:`Options`; a job resolves ``auto`` engine and precision once, on its first good file
(:func:`keras_unet.inference.prefetched_jobs`).

A shipped model may name partners for images of another kind (:func:`keras_unet.runs.partners`:
``nuclei`` hands stained and brightfield images, :func:`keras_unet.kinds.kind` ``light``, to
``nuclei-stained``); :meth:`Predictor.for_image` makes that choice image by image, for every caller
that predicts through a job.
"""
from __future__ import annotations

import dataclasses
import functools

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import converted, engines, inference, kinds, runs, tiling
from keras_unet.postprocess import PostProcessing


@dataclass(frozen=True)
class Options:
    """How the network runs over an image: the input ``tile`` (px; None: the largest within
    ``memory_mb`` that the image needs), tiles per forward pass, test-time augmentation views
    (1-8), and the ``engine`` and ``precision`` (``auto``: the fastest here,
    :func:`keras_unet.engines.resolve`)."""

    tile: int | None = None
    batch_size: int = 1
    memory_mb: int = 4096
    tta: int = 1
    engine: str = "auto"
    precision: str = "auto"

    def job_keywords(self) -> dict:
        """The :class:`keras_unet.inference.PredictionJob` keywords of these options."""
        return {"tile": self.tile, "batch_size": self.batch_size, "memory_mb": self.memory_mb, "tta": self.tta,
                "engine": self.engine, "precision": self.precision}


@dataclass(frozen=True)
class Predictor:
    """A trained model and how its objects are made: ``path`` (the model file), ``model`` (the
    Keras model, or where this machine ran its network converted before a
    :class:`keras_unet.converted.ConvertedModel`; :attr:`keras_model` is the Keras model either
    way), ``record`` (its run's ``config.json``, ``{}`` without a run) and ``postprocessing``.
    Make one with :meth:`of`."""

    path: Path
    model: object
    record: dict
    postprocessing: PostProcessing
    given: dict = field(default_factory=dict)  # what the caller gave in place of the run's (not None)
    auto_diameter: bool = False  # each image's objects measured first (keras_unet.diameter)
    diameter: float | str | None = None  # as given: the partners get it too
    partners: dict = field(default_factory=dict)  # image kind -> shipped model name (keras_unet.runs.partners)

    @classmethod
    def of(cls, model, *, threshold: float | None = None, min_size: int | None = None, split: str | None = None,
           diameter: float | str | None = None, by_kind: bool = True) -> "Predictor":
        """The handle of ``model``: a run folder, a ``.keras`` file or a shipped model's name
        (``nuclei``). The keywords given (not None) replace the run's post-processing;
        ``diameter`` (px, the objects in the images to predict) resizes the images so their
        objects have the size the model learned; ``"auto"``: estimated image by image
        (:func:`keras_unet.diameter.estimate`). ``by_kind=False``: this model for every image,
        not the partners its card names (:meth:`for_image`)."""
        path = inference.resolve_model_path(model)
        record = runs.record(path)
        auto = diameter == "auto"
        if auto and not record.get("object_diameter"):
            from keras_unet.errors import SettingsError

            raise SettingsError(f"{model}: the model records no object diameter, so --diameter auto cannot size the "
                                "images for it; give the diameter in px")
        given = {k: v for k, v in {"threshold": threshold, "min_size": min_size, "split": split}.items()
                 if v is not None}
        chosen = (PostProcessing.of_record(record)
                  .at_diameter(None if auto else diameter, record.get("object_diameter"), source=model).given(**given))
        return cls(path=path, model=converted_model(path) or inference.load_model_cached(path), record=record,
                   postprocessing=chosen, given=given, auto_diameter=auto, diameter=diameter,
                   partners=runs.partners(path) if by_kind else {})

    @property
    def keras_model(self):
        """The Keras model (loaded now where :attr:`model` is a converted network's)."""
        return converted.keras_of(self.model)

    @property
    def name(self) -> str:
        """A shipped model's name, else the model file's path."""
        run = runs.Run.of(self.path)
        return run.folder.name if run.shipped else str(self.path)

    def for_image(self, image: np.ndarray) -> "Predictor":
        """The handle that predicts ``image`` (``(H, W)`` or ``(H, W, C)``): the partner its card
        names for the image's :func:`keras_unet.kinds.kind`, with the options given here, else
        this one."""
        return self.chosen_for(image)[0]

    def for_file(self, path) -> "Predictor":
        """:meth:`for_image` of the first page of the image file ``path`` (this handle where it
        cannot be read: the caller's own reading then names the problem)."""
        if not self.partners:
            return self
        from keras_unet import data

        try:
            pages = data.read_pages(path)
        except (data.DataError, OSError):
            return self
        return self.for_image(pages[0]) if pages else self

    def convert_partners(self) -> None:
        """Convert the partners' networks (once: the converted files are cached) where this
        model's runs converted: the job that first does so loads TensorFlow anyway, and a later
        job whose images include a partner's kind then starts without it too (one partner on
        Keras imports TensorFlow: 3-4 s)."""
        for partner in self.partner_handles().values():
            network = tiling.prediction_network(partner.model)
            if not engines.converted(network):
                engines.onnx_file(network)
            remember_converted(partner.path, partner.model)

    def partner_handles(self) -> dict:
        """The partners' handles by image kind (``{}`` without partners)."""
        return {kind: self._partner_handle(name) for kind, name in self.partners.items()}

    def _partner_handle(self, name: str) -> "Predictor":
        # the package's folder, whatever folders of that name the working directory holds
        return _partner(str(runs.SHIPPED / name), tuple(sorted(self.given.items())), self.diameter)

    def chosen_for(self, image: np.ndarray) -> tuple["Predictor", str | None]:
        """``(handle, note)``: :meth:`for_image` and, where this model has partners, which model
        took the image and why (``nuclei-stained, light background``) for progress lines."""
        if not self.partners:
            return self, None
        kind = kinds.kind(image)
        # only the partner an image needs is loaded: a job of fluorescence images never loads nuclei-stained
        chosen = self._partner_handle(self.partners[kind]) if kind in self.partners else self
        return chosen, f"{chosen.name}, {kind} background"

    @property
    def config(self) -> dict:
        """The network's settings (:func:`keras_unet.model.unet_config`)."""
        from keras_unet.model import unet_config

        return unet_config(self.model)

    @property
    def object_diameter(self) -> float | None:
        """The objects' typical diameter (px) the model learned, where its run recorded it."""
        return self.record.get("object_diameter")

    def calibration_run(self, name=None) -> runs.Run:
        """The run folder that ``evaluate --calibrate`` writes its choice into; a
        :class:`SettingsError` (``name``: the model as the user gave it) where there is none or it
        is a shipped model's."""
        from keras_unet.errors import SettingsError

        run, name = runs.Run.of(self.path), name or self.path
        if run.shipped:
            raise SettingsError(f"{name}: a shipped model is not changed; copy its folder ({run.folder}) and "
                                "calibrate the copy, or fine-tune it with fit --from")
        if not run.started:
            raise SettingsError(f"{name}: --calibrate writes its choice into a run folder (with config.json); "
                                "give a run folder or a model inside one")
        return run

    def calibrate(self, pages: list, data) -> dict:
        """Choose the post-processing on labelled :class:`keras_unet.inference.PredictedPage` s
        (from the run's own split and minimum size, :func:`keras_unet.postprocess.search`) and
        record it in the run, with the ``data`` it was chosen on. Returns the search's record."""
        from keras_unet import postprocess

        own = PostProcessing.of_record(self.record)
        chosen = postprocess.search([p.probabilities for p in pages], [p.true_instances for p in pages],
                                    typical_min_size=self.record.get("min_object_size") or 0, split=own.split)
        self.calibration_run().update(postprocessing={**chosen, "data": str(data)})
        return chosen

    def postprocessing_for(self, image: np.ndarray, options: Options = Options()) -> tuple[PostProcessing, float | None]:
        """``(post-processing, objects' diameter)`` for ``image``: this handle's, and with
        ``diameter="auto"`` scaled to the diameter estimated in it (None where none is found:
        the image is predicted as it is)."""
        if not self.auto_diameter:
            return self.postprocessing, None
        from keras_unet import diameter

        found = diameter.estimate(self, image, Options(engine=options.engine, precision=options.precision)).diameter
        if found is None or abs(np.log(found / self.object_diameter)) < np.log(diameter.DEAD_ZONE):
            return self.postprocessing, found  # near the learned size: predicted as it is
        own = PostProcessing.of_record(self.record).at_diameter(found, self.object_diameter).given(**self.given)
        return own, found

    def job(self, path, options: Options = Options(), pages: list | None = None,
            job_files: int = 1, backend=None) -> inference.PredictionJob:
        """The :class:`keras_unet.inference.PredictionJob` of one image file (or its ``pages``),
        with the post-processing of :meth:`postprocessing_for` its first page. ``backend(network)``:
        ``(engine, precision)`` for the network chosen, in place of the options' (a job's networks
        each resolved once: :func:`keras_unet.inference.prefetched_jobs`)."""
        from keras_unet import data

        pages = data.read_pages(path) if pages is None else pages
        handle, note = self.chosen_for(pages[0]) if pages else (self, None)
        if backend is not None:
            engine, precision = backend(handle.model)
            options = dataclasses.replace(options, engine=engine, precision=precision)
        chosen, found = handle.postprocessing_for(pages[0], options) if pages else (self.postprocessing, None)
        job = inference.PredictionJob(handle.model, path, pages=pages, postprocessing=chosen, job_files=job_files,
                                      **options.job_keywords())
        if job.engine in CONVERTED_ENGINES:  # the next job on this machine can start without TensorFlow
            remember_converted(handle.path, handle.model)
            if handle is self and not isinstance(self.model, converted.ConvertedModel):
                self.convert_partners()
        job.diameter, job.model_note = found, note
        return job

    def jobs(self, paths, options: Options = Options()):
        """``(path, job or None, problem or None)`` of each file, read ahead
        (:func:`keras_unet.inference.prefetched_jobs`)."""
        def make(path, backend, job_files):
            return self.job(path, options, job_files=job_files, backend=backend)

        return inference.prefetched_jobs(paths, make, engine=options.engine, precision=options.precision)

    def segment(self, image: np.ndarray, options: Options = Options(engine="tensorflow", precision="float32"),
                name: str = "image") -> np.ndarray:
        """The objects of ``image`` (``(H, W)`` or ``(H, W, C)``) as ``predict --format
        instances`` makes them."""
        job = self.job(name, options, pages=[image])
        return job.postprocessing.objects(next(job.probabilities()))


CONVERTED_ENGINES = ("onnxruntime", "openvino")  # the engines that run the converted network


def converted_model(path) -> converted.ConvertedModel | None:
    """The model file ``path`` as its converted network runs without TensorFlow, where a job
    here ran it so before (its record, :func:`remember_converted`) and the converted file is in
    the cache; else None. One object per file version and process, as the Keras models."""
    return _converted_model(str(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _converted_model(path: str, _modified: int) -> converted.ConvertedModel | None:
    record = converted.read_record(path)
    if record is None or not engines.onnx_path(record["network_key"]).is_file():
        return None
    return converted.ConvertedModel(path, record["config"], record["network_key"], record["in_channels"],
                                    load=lambda: inference.load_model_cached(path),
                                    load_network=lambda: tiling.prediction_network(inference.load_model_cached(path)))


def remember_converted(path, model) -> None:
    """Record what :func:`converted_model` needs of the Keras ``model`` loaded from ``path``
    (once per file; a converted model has its record)."""
    if isinstance(model, converted.ConvertedModel):
        return
    from keras_unet.model import unet_config

    network = tiling.prediction_network(model)
    converted.write_record(path, unet_config(model), engines.network_key(network), int(network.input_shape[-1]))


@functools.lru_cache(maxsize=8)
def _partner(folder: str, given: tuple, diameter) -> Predictor:
    """A partner's handle (its shipped folder), made once per options (its network is cached by path anyway)."""
    return Predictor.of(folder, diameter=diameter, by_kind=False, **dict(given))


def segment(model, image: np.ndarray, threshold: float | None = None, min_size: int | None = None,
            split: str | None = None, tile=None, tta: int = 1, engine: str = "tensorflow",
            diameter: float | None = None, precision: str = "float32") -> np.ndarray:
    """Objects of ``image`` as ``keras-unet predict MODEL --format instances`` makes them: the
    model of a run folder, ``.keras`` file or shipped name, with the run's post-processing (the
    keywords given override it). ``diameter``: the objects' typical diameter in ``image`` (px),
    to resize it to what the model learned. ``engine``, ``precision``: what runs the network
    (``auto`` for each: the fastest here; bfloat16 only on a CPU that has it natively)."""
    predictor = Predictor.of(model, threshold=threshold, min_size=min_size, split=split, diameter=diameter)
    return predictor.segment(image, Options(tile=tile, tta=tta, engine=engine, precision=precision))
