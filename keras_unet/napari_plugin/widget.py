"""The segmentation widget: a model, an image layer and the post-processing in; objects and
probabilities out as layers. The prediction runs in a worker thread (napari's ``create_worker``)
so the viewer stays live; Cancel stops it between batches of tiles and adds nothing."""
from __future__ import annotations

import threading

import numpy as np

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton
from magicgui.widgets import SpinBox
from qtpy.QtCore import QObject, Signal

from keras_unet.napari_plugin import layers
from keras_unet.instances import SPLITS
from keras_unet.precision import PRECISIONS

OTHER = "run folder or model file below"


class _Progress(QObject):
    """Carries tile counts from the worker thread to the progress bar (a queued Qt signal)."""

    advanced = Signal(int, int)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class SegmentWidget(Container):
    """Segment an image layer with a run folder, a ``model.keras`` or a shipped model, as
    ``keras-unet predict --format instances`` would (the same pages, tiles and post-processing)."""

    def __init__(self, napari_viewer):
        from keras_unet import runs

        super().__init__(labels=True)
        self.viewer = napari_viewer
        shipped = list(runs.shipped_models())
        self.model = ComboBox(label="model", choices=[*shipped, OTHER], value=shipped[0] if shipped else OTHER)
        self.path = FileEdit(label="path", mode="d", visible=not shipped,
                             tooltip="a run folder (its model.keras), or type the path of a .keras file")
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.tile = SpinBox(label="tile (0 = auto)", value=0, min=0, max=4092, step=16)
        self.tta = SpinBox(label="TTA transforms", value=1, min=1, max=8)
        self.diameter = SpinBox(label="object diameter (px, 0 = as trained)", value=0, min=0, max=10_000,
                                tooltip="the objects' typical diameter in this image: it is resized so that they "
                                        "have the size the model learned (predict --diameter)")
        self.measure = CheckBox(text="measure the diameter (auto)", value=False,
                                tooltip="find the objects' size in the image itself (predict --diameter auto)")
        self.threshold = FloatSpinBox(label="threshold (0 = argmax)", value=0.0, min=0.0, max=1.0, step=0.05)
        self.min_size = SpinBox(label="min object size (px)", value=0, min=0, max=10**7)
        self.split = ComboBox(label="split touching", choices=SPLITS, value="none")
        self.precision = ComboBox(label="precision", choices=PRECISIONS, value="auto",
                                  tooltip="bfloat16 runs several times faster on CPUs that have it natively (AMX, "
                                          "AVX512_BF16); auto: bfloat16 only there and where measured faster")
        self.objects = CheckBox(text="objects (Labels layer)", value=True)
        self.probabilities = CheckBox(text="probabilities (Image layer)", value=False)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1)
        self.status = Label(value="")
        self.extend([self.model, self.path, self.image, self.tile, self.tta, self.diameter, self.measure, self.threshold, self.min_size, self.split,
                     self.precision, self.objects, self.probabilities, self.run_button, self.cancel_button, self.progress, self.status])
        self.worker = None
        self._cancel = threading.Event()
        self._signals = _Progress()
        self._signals.advanced.connect(self._advance)
        self.model.changed.connect(self._model_changed)
        self.path.changed.connect(self._model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _event: self.image.reset_choices())
        self._model_changed()

    # -- settings ------------------------------------------------------------------------------

    def _image_layers(self, _widget=None):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def model_path(self) -> str:
        return str(self.path.value) if self.model.value == OTHER else self.model.value

    def _model_changed(self, _value=None) -> None:
        """Show the path field for a run or file, and put the model's own post-processing (chosen
        on its validation data) into the fields: what ``predict`` would use."""
        from keras_unet import runs
        from keras_unet.postprocess import PostProcessing

        self.path.visible = self.model.value == OTHER
        try:
            # the record only (no network loaded in the UI thread); the worker makes the handle
            chosen = PostProcessing.of_record(runs.record(self.model_path()))
        except Exception:  # a path being typed, not a run (yet): keep the fields as they are
            return
        self.threshold.value = chosen.threshold or 0.0
        self.min_size.value = int(chosen.min_size)
        self.split.value = chosen.split
        self._own = chosen.as_dict()

    def request(self) -> layers.Request:
        """The fields as :class:`layers.Request`; a post-processing field left at the model's own
        value is passed as None (the model's choice: its minimum size then follows ``diameter``)."""
        from keras_unet.predictor import Options

        own = getattr(self, "_own", {})

        def changed(name, value):
            return None if own and own.get(name) == value else value

        given = {"threshold": changed("threshold", self.threshold.value or None),
                 "min_size": changed("min_size", self.min_size.value), "split": changed("split", self.split.value),
                 "diameter": "auto" if self.measure.value else (self.diameter.value or None)}
        return layers.Request(model=self.model_path(), given=given, objects=self.objects.value,
                              probabilities=self.probabilities.value,
                              options=Options(tile=self.tile.value or None, tta=self.tta.value,
                                              precision=self.precision.value))

    # -- running -------------------------------------------------------------------------------

    def run(self, _value=None):
        """Start the segmentation of the chosen layer in a worker thread; returns the worker."""
        from napari.qt.threading import create_worker

        layer = self.image.value
        if layer is None:
            _notify_error("choose an image layer to segment (open an image, or File > Open Sample > Synthetic cells)")
            return None
        request = self.request()
        if not (request.objects or request.probabilities):
            _notify_error("choose an output: objects, probabilities or both")
            return None
        self._cancel.clear()
        self.progress.value = 0
        self.status.value = f"segmenting {layer.name} ..."
        self.run_button.enabled, self.cancel_button.enabled = False, True
        worker = create_worker(layers.segment_layer, layer.data, request, rgb=bool(layer.rgb), name=layer.name,
                               progress=self._tiles_done, _ignore_errors=True)  # errors: notifications, below
        worker.returned.connect(lambda result: self._add_layers(layer, request, result))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()
        return worker

    def _tiles_done(self, done: int, total: int) -> None:
        """Called in the worker thread after each batch of tiles."""
        if self._cancel.is_set():
            raise layers.Cancelled()
        self._signals.advanced.emit(done, total)

    def _advance(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def cancel(self, _value=None) -> None:
        self._cancel.set()
        self.status.value = "cancelling ..."

    def _add_layers(self, source, request: layers.Request, result: layers.Segmentation) -> None:
        """Add (or replace, for the same source and model) the result layers, all at once."""
        where = {"scale": source.scale, "translate": source.translate}
        made = []
        if result.probabilities is not None:
            placed = where if result.probabilities.ndim == source.ndim else {}
            made.append(self._put(layers.layer_name(source.name, request.model, "probabilities"),
                                  result.probabilities, "image", colormap="magma", contrast_limits=(0.0, 1.0),
                                  blending="additive", **placed))
        if result.labels is not None:
            placed = where if result.labels.ndim == source.ndim else {}
            made.append(self._put(layers.layer_name(source.name, request.model, "objects"), result.labels, "labels",
                                  **placed))
        chosen = result.postprocessing
        threshold = "argmax" if chosen.threshold is None else f"p >= {chosen.threshold:g}"
        count = f", {np.unique(result.labels).size - 1} objects" if result.labels is not None else ""
        sized = f", objects ~{result.diameter:g} px" if result.diameter else ""
        model = f"{result.model_note}, " if result.model_note else ""
        self.status.value = (f"done{count} ({model}{threshold}, min {chosen.min_size} px, split {chosen.split}, "
                             f"{result.engine} {result.precision}{sized})")
        return made

    def _put(self, name: str, data, kind: str, **kwargs):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            return layer
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(data, name=name, **kwargs)

    def _failed(self, error: Exception) -> None:
        if isinstance(error, layers.Cancelled):
            self.status.value = "cancelled: no layer added"
            return
        from keras_unet.errors import one_line, user_message

        # the CLI's words for what the user can fix; anything else says what it is, never a traceback dialog
        message = user_message(error) or f"{type(error).__name__}: {one_line(error)}"
        self.status.value = message
        _notify_error(message)

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.worker = None
