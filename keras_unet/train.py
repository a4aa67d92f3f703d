"""Training: the paper's setup (weighted cross-entropy, SGD with momentum 0.99, one large tile per
batch) with validation, checkpoints, resume, logs and plots in a run folder.

Run folder contents:

* ``config.json`` - every setting plus library versions; ``state.json`` - epochs done, best score;
* ``model.keras`` - the best model for inference, taking raw pixels (its normalisation inside):
  Keras layers and ops only, no optimizer, loads with plain ``keras.models.load_model``. "Best" is
  by ``select_on``: the object F1 at IoU 0.5 on the validation images (two classes), the
  foreground IoU (more classes) or the validation loss; ``state.json`` says which;
  ``last.keras`` - the latest network, with optimizer state (what ``--resume`` continues from);
* ``log.csv`` - per-epoch losses and metrics; ``curves.png`` and ``samples.png`` - plots.

Files are written to a temporary name and renamed, so a run killed at any moment leaves no
corrupt checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_unet import __version__, augment, data, inference, losses, metrics, pipeline, plots, sizes, synthetic, tiling
from keras_unet import keras_patches
from keras_unet.errors import ModelFileError, SettingsError
from keras_unet.files import atomic_path, remove_stale_temporaries
from keras_unet.settings import TrainConfig
from keras_unet.instances import typical_min_size
from keras_unet.model import inference_model, unet


def versions() -> dict:
    return {"keras_unet": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def write_json(path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))


def save_model_atomic(model: keras.Model, path) -> None:
    """``model.save`` through :func:`keras_unet.files.atomic_path` (a ``.keras`` temporary)."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_data(config: TrainConfig) -> tuple[data.Dataset, data.Dataset]:
    """``(train, validation)`` datasets from the configured folders or the synthetic default."""
    params = data.WeightParams(w0=config.w0, sigma=config.sigma, border_width=config.border_width,
                               balance_classes=config.balance_classes, n_classes=config.n_classes,
                               mask_kind=config.mask_kind)
    if config.data is None:
        full = synthetic.as_dataset(config.synthetic_images, (config.synthetic_size,) * 2, config.seed, params)
    else:
        full = data.load_dataset(config.data, params).check()  # refuse what training would get wrong
    if config.val_data:
        train, val = full, data.load_dataset(config.val_data, params).check()
    else:
        train, val = full.split(config.val_fraction, config.seed)
    return train, val


def make_optimizer(config: TrainConfig, total_steps: int):
    rate = config.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(total_steps, 1))
    elif config.lr_schedule != "constant":
        raise SettingsError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    raise SettingsError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


def build_model(config: TrainConfig, channels: int, input_range) -> keras.Model:
    model = unet(depth=config.depth, base_filters=config.base_filters, in_channels=channels, n_classes=config.n_classes,
                 padding=config.padding, dropout=config.dropout, batch_norm=config.batch_norm, input_range=input_range)
    model.compile(
        optimizer=make_optimizer(config, config.epochs * config.steps_per_epoch),
        loss=losses.get_loss(config.loss),
        metrics=[metrics.PixelError(), metrics.ForegroundIoU(config.n_classes)],
    )
    return model


def selection_metric(config: TrainConfig, has_validation: bool) -> str:
    """The log key that picks the best model: ``val_object_f1`` (:class:`ValidationObjects`),
    ``val_iou`` (the foreground IoU metric on the validation tiles) or ``val_loss``; ``loss``
    without validation data."""
    if not has_validation:
        return "loss"
    choice = config.select_on
    if choice == "auto":
        choice = "object_f1" if config.n_classes == 2 else "iou"
    return {"object_f1": "val_object_f1", "iou": "val_iou", "loss": "val_loss"}[choice]


class ValidationObjects(keras.callbacks.Callback):
    """After each epoch, what users measure on whole validation images (overlap-tile prediction and
    instances, as ``keras-unet predict --format instances`` makes them): ``val_object_f1``, the mean
    object F1 at IoU 0.5 of class 1, added to the epoch's logs.

    The true objects are the targets' class-1 components with the separation borders given back,
    the post-processing the predicted ones get (with the run's ``min_object_size``). At most
    ``max_images`` images, evenly spread over the set, to bound the cost.
    """

    def __init__(self, images: list, targets: list, tile: int, min_size: int = 0, max_images: int = 16):
        super().__init__()
        from keras_unet.instances import instances_from_probabilities

        # Evenly spread over the validation images (they come sorted by file: the first few could
        # be of one collection only).
        picks = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).round().astype(int))
        self.images, self.tile, self.min_size = [images[i] for i in picks], tile, min_size
        self.truths = [instances_from_probabilities(np.eye(2, dtype=np.float32)[targets[i]]) for i in picks]

    def on_epoch_end(self, epoch, logs=None):
        from keras_unet.instances import instances_from_probabilities

        if logs is None or not self.images:
            return
        scores = [metrics.evaluate_objects(instances_from_probabilities(
                      tiling.predict_tiled(self.model, image, tile=self.tile), min_size=self.min_size), truth)["f1"]
                  for image, truth in zip(self.images, self.truths)]
        logs["val_object_f1"] = float(np.mean(scores))


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: ``last.keras`` and ``state.json``; ``model.keras`` when the selection
    metric (see :func:`selection_metric`) improves."""

    def __init__(self, run_dir: Path, state: dict, is_chief: bool = True, select: str = "val_loss",
                 percentiles=None):
        super().__init__()
        self.run_dir, self.state, self.is_chief = run_dir, state, is_chief
        self.select, self.percentiles = select, percentiles
        self.state["selected_on"] = select

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.select)
        # Stored as a score to minimise: losses as they are, F1 and IoU negated.
        score = None if value is None else (float(value) if self.select.endswith("loss") else -float(value))
        improved = score is not None and np.isfinite(score) and score < self.state.get("best", np.inf)
        self.state["epoch"] = epoch + 1
        if improved:
            self.state.update(best=float(score), best_epoch=epoch + 1, best_value=float(value))
        if not self.is_chief:
            return
        if improved:  # an inference model: loads without keras_unet; training state stays in last.keras
            save_model_atomic(inference_model(self.model, self.percentiles), self.run_dir / "model.keras")
        save_model_atomic(self.model, self.run_dir / "last.keras")
        write_json(self.run_dir / "state.json", self.state)


def format_minutes(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ProgressEstimate(keras.callbacks.Callback):
    """Tell the user early how long the run takes: after ``after_steps`` steps (the first, which
    builds the graph, not counted) and again after the first epoch (validation included), with a
    hint when it is over an hour."""

    def __init__(self, config: TrainConfig, verbose: int = 1, after_steps: int = 5, out=None):
        super().__init__()
        self.config, self.verbose, self.after_steps, self.out = config, verbose, after_steps, out
        self.first_epoch = self.started = self.epoch_started = None
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == 1:
            self.started = time.monotonic()
        elif self.steps == 1 + self.after_steps:
            per_step = (time.monotonic() - self.started) / self.after_steps
            steps = (self.config.epochs - self.first_epoch) * self.config.steps_per_epoch
            self.report(per_step * steps, f"{per_step:.2f} s per step x {steps} steps, validation not included")

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.first_epoch:
            self.report((time.monotonic() - self.epoch_started) * (self.config.epochs - self.first_epoch),
                        "from the first epoch, validation included")

    def report(self, seconds: float, basis: str) -> None:
        if not self.verbose:
            return
        limit = self.config.max_minutes * 60.0
        line = f"estimated training time: {format_minutes(seconds)} ({basis})"
        if limit and seconds > limit:
            line += f"; --max-minutes stops it after {format_minutes(limit)}"
        elif seconds > 3600:
            line += ("\nhint: over an hour on this machine; --preset cpu trains a smaller network in about "
                     "30 min, --max-minutes bounds the time, and a GPU (pip install '.[gpu]') is far faster")
        print(line, file=self.out or sys.stderr, flush=True)


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the batch after ``minutes`` of wall time."""

    def __init__(self, minutes: float):
        super().__init__()
        self.deadline = time.monotonic() + 60.0 * minutes
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() > self.deadline:
            self.model.stop_training = self.stopped = True


def augment_on_device(config: TrainConfig) -> bool:
    """Where the augmentation runs: ``auto`` puts it on the GPU where there is one GPU and no
    distribution strategy (a GPU trains the paper network faster than a few host cores augment:
    benchmarks/results/gpu.md), and on the host otherwise (on a CPU the two are the same cores and
    the host path overlaps with training; a strategy distributes the host's dataset itself)."""
    if config.augment_on == "auto":
        return config.strategy == "default" and len(tf.config.list_physical_devices("GPU")) == 1
    return config.augment_on == "device"


def distribution_strategy(name: str):
    """``tf.distribute`` strategy by name: default, mirrored (GPUs of one machine) or multiworker
    (machines listed in ``TF_CONFIG``)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SettingsError(f"strategy must be default, mirrored or multiworker, got {name!r}")


def is_chief() -> bool:
    """True on the worker that writes files (the only one without TF_CONFIG, or task 0 / chief)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                    and "chief" not in tf_config.get("cluster", {}))


def fit(config: TrainConfig, run_dir, verbose: int = 1, datasets=None) -> dict:
    """Train a new run into ``run_dir`` (created; settings checked before anything is written).

    ``datasets``: an optional ``(train, validation)`` pair of :class:`keras_unet.data.Dataset`
    used instead of the configured folders.

    Returns the final state: ``{"epoch", "best", "best_epoch", "history", "model", "config", "time_limited"}``.
    Keras's global dtype policy (changed by ``mixed_precision``) is restored on return.
    """
    return _run(config.validated(), Path(run_dir), {"epoch": 0, "best": float("inf")}, False, verbose, datasets)


def resume(run_dir, epochs: int | None = None, verbose: int = 1, datasets=None) -> dict:
    """Continue the run in ``run_dir`` with the settings of its ``config.json``, from its
    ``last.keras`` (optimizer state included) or, where no epoch finished, from the start.

    ``epochs``: a new total number of epochs (to train longer than first planned).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ModelFileError(f"{run_dir}: not a run folder to resume (no config.json); start it anew with --out")
    saved = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict(saved["config"])
    if epochs is not None and epochs != config.epochs:
        config = config.updated(epochs=epochs).validated()
        if is_chief():  # the run's record follows: a later --resume continues to the new total
            write_json(run_dir / "config.json", {**saved, "config": asdict(config)})
    has_checkpoint = (run_dir / "last.keras").is_file()
    state = {"epoch": 0, "best": float("inf")}
    if has_checkpoint and (run_dir / "state.json").is_file():
        state = json.loads((run_dir / "state.json").read_text())
    return _run(config.validated(), run_dir, state, has_checkpoint, verbose, datasets)


def _run(config: TrainConfig, run_dir: Path, state: dict, from_checkpoint: bool, verbose: int, datasets) -> dict:
    policy = keras.mixed_precision.global_policy()
    try:
        return _train(config, run_dir, state, from_checkpoint, verbose, datasets)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _train(config: TrainConfig, run_dir: Path, state: dict, resume: bool, verbose: int, datasets) -> dict:
    sizes.check_input_size(config.tile, config.depth, config.padding)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    keras.utils.set_random_seed(config.seed + state["epoch"])
    chief = is_chief()

    train_data, val_data = datasets if datasets is not None else load_data(config)
    if verbose:
        for note in train_data.notes:
            print(f"note: {note}", file=sys.stderr)
    data.check_tile_fits(train_data, config.tile, config.depth, config.padding)
    raw_range = train_data.input_range()
    # Objects smaller than this are noise: the default --min-size of predict and export for this run.
    min_object_size = typical_min_size(train_data.targets) if config.n_classes == 2 else 0
    # The strategy before any TF op runs (the normalisation below is one): collective ops are
    # configured at program start-up.
    strategy = distribution_strategy(config.strategy)
    # Per-image percentiles: the images are normalised once, whole, and the network learns on
    # them; model.keras puts the same normalisation in front (model.inference_model). Fixed range:
    # the network's first layer maps raw_range to [0, 1], as in every run made before per-image
    # normalisation.
    percentiles = tuple(config.percentiles) if config.normalization == "percentile" else None
    input_range, value_range = (None, (0.0, 1.0)) if percentiles else (raw_range, raw_range)
    raw_train_data, raw_val_data = train_data, val_data
    train_data, val_data = pipeline.network_input(train_data, percentiles), pipeline.network_input(val_data, percentiles)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a process killed while writing
    if chief and not resume:
        write_json(run_dir / "config.json", {"config": asdict(config), "input_range": raw_range,
                                             "min_object_size": min_object_size,
                                             "versions": versions(), "data_notes": train_data.notes,
                                             "train_samples": train_data.sources, "val_samples": val_data.sources})

    with strategy.scope():
        if resume:
            model = keras.models.load_model(run_dir / "last.keras")
        else:
            model = build_model(config, train_data.channels, input_range)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.num_replicas_in_sync > 1:
        keras_patches.patch_multiworker_fit(model)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    params = augment.AugmentParams() if config.augment else augment.AugmentParams.none()
    train_ds = pipeline.training_dataset(train_data, config.tile, global_batch, config.depth, config.padding,
                                         params, value_range, seed=config.seed * 100_003 + state["epoch"],
                                         on_device=augment_on_device(config))
    val_tile = pipeline.validation_tile(val_data, config.tile, config.depth, config.padding, config.base_filters,
                                        global_batch)
    val_ds = pipeline.validation_dataset(val_data, val_tile, global_batch, config.depth, config.padding) if len(val_data) else None

    select = selection_metric(config, bool(val_ds))
    callbacks = [RunCheckpoint(run_dir, state, chief, select, percentiles), keras.callbacks.TerminateOnNaN(),
                 ProgressEstimate(config, verbose)]
    if select == "val_object_f1":  # first: later callbacks see its score in the logs
        callbacks.insert(0, ValidationObjects(val_data.images, val_data.targets, val_tile, min_object_size))
    if chief:  # only the chief writes files; the other workers train in lockstep
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=resume))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(patience=config.early_stopping,
                                                       monitor="val_loss" if val_ds else "loss"))
    time_limit = TimeLimit(config.max_minutes) if config.max_minutes else None
    if time_limit:
        callbacks.append(time_limit)
    if config.tensorboard and chief:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))

    history = {}
    if state["epoch"] < config.epochs:
        history = model.fit(train_ds, epochs=config.epochs, initial_epoch=state["epoch"],
                            steps_per_epoch=config.steps_per_epoch, validation_data=val_ds,
                            callbacks=callbacks, verbose=verbose, shuffle=False).history
    if chief:
        write_report(run_dir, raw_val_data if len(raw_val_data) else raw_train_data)
    return {**state, "history": history, "model": model, "config": config,
            "time_limited": bool(time_limit and time_limit.stopped)}


def write_report(run_dir: Path, dataset: data.Dataset, n_samples: int = 2) -> None:
    """``curves.png`` from the log and ``samples.png`` from the best model on ``dataset``."""
    if (run_dir / "log.csv").is_file() and (run_dir / "log.csv").stat().st_size:
        plots.training_curves(run_dir / "log.csv", run_dir / "curves.png")
    try:
        model = inference.load_model(run_dir)  # model.keras, else last.keras
    except ModelFileError:
        return  # no epoch finished yet
    picks = list(range(min(n_samples, len(dataset))))
    probabilities = [tiling.predict_tiled(model, dataset.images[i]) for i in picks]
    plots.sample_predictions([dataset.images[i] for i in picks], [dataset.targets[i] for i in picks],
                             probabilities, run_dir / "samples.png", titles=[Path(dataset.sources[i]).name for i in picks])
