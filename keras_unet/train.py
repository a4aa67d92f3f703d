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
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_unet import __version__, augment, data, inference, losses, metrics, pipeline, plots, sizes, synthetic, tiling
from keras_unet import keras_patches, precision, runs
from keras_unet.budget import cosine_rate, plan_schedule
from keras_unet.errors import ModelFileError, SettingsError
from keras_unet.files import atomic_path, remove_stale_temporaries
from keras_unet.settings import TrainConfig
from keras_unet.instances import object_areas, typical_diameter, typical_min_size
from keras_unet.model import inference_model, unet, unet_config


def versions() -> dict:
    return {"keras_unet": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_model_atomic(model: keras.Model, path) -> None:
    """``model.save`` through :func:`keras_unet.files.atomic_path` (a ``.keras`` temporary)."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def weight_params(config: TrainConfig) -> data.WeightParams:
    """How the run's masks become targets: a three-class target reads masks as objects (2 classes)."""
    three = config.target == "three_class"
    return data.WeightParams(w0=config.w0, sigma=config.sigma, border_width=config.border_width,
                             balance_classes=config.balance_classes, n_classes=2 if three else config.n_classes,
                             mask_kind=config.mask_kind, target=config.target)


def load_data(config: TrainConfig) -> tuple[data.Dataset, data.Dataset]:
    """``(train, validation)`` datasets from the configured folders or the synthetic default."""
    params = weight_params(config)
    if config.data is None:
        full = synthetic.as_dataset(config.synthetic_images, (config.synthetic_size,) * 2, config.seed, params)
    else:
        full = data.load_dataset(config.data, params).check()  # refuse what training would get wrong
    if config.val_data:
        train, val = full, data.load_dataset(config.val_data, params).check()
    else:
        train, val = full.split(config.val_fraction, config.seed)
    return train, val


def make_optimizer(config: TrainConfig):
    """The configured optimizer at its base learning rate; a cosine schedule is applied step by
    step by :class:`BudgetPlanner`, over the planned length of the run (known only once the step
    time is measured)."""
    if config.lr_schedule not in ("constant", "cosine"):
        raise SettingsError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    raise SettingsError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


def build_model(config: TrainConfig, channels: int, input_range) -> keras.Model:
    model = unet(depth=config.depth, base_filters=config.base_filters, in_channels=channels, n_classes=config.n_classes,
                 padding=config.padding, dropout=config.dropout, batch_norm=config.batch_norm, input_range=input_range)
    model.compile(
        optimizer=make_optimizer(config),
        loss=losses.get_loss(config.loss),
        metrics=[losses.PixelError(), losses.ForegroundIoU(config.n_classes)],
    )
    return model


def starting_point(source) -> tuple[keras.Model, dict]:
    """``(bare network, architecture settings)`` of the model ``source`` (run folder, ``.keras``
    file or shipped model name) that a run starts from (``fit --from``); the settings are
    :data:`keras_unet.settings.ARCHITECTURE` keys plus ``in_channels``."""
    loaded = inference.load_model(source)
    found = unet_config(loaded)
    architecture = {name: found[name] for name in ("depth", "base_filters", "n_classes", "padding", "batch_norm")}
    architecture["normalization"] = "percentile" if found["percentiles"] else "range"
    if found["percentiles"]:
        architecture["percentiles"] = tuple(found["percentiles"])
    return tiling.network_of(loaded), {**architecture, "in_channels": found["in_channels"]}


def inherited_settings(source, given: dict | None = None) -> dict:
    """``given`` settings (keywords of :class:`TrainConfig`) plus the architecture of the model
    ``source`` and ``init_from``: a run that starts from its weights (``fit --from``)."""
    from keras_unet.settings import inherited

    architecture = starting_point(source)[1]
    architecture.pop("in_channels")
    return inherited(architecture, dict(given or {}), source)


def start_from(model: keras.Model, network: keras.Model, source) -> None:
    """Set ``model``'s weights to those of ``network``, the bare network of ``source`` (same architecture)."""
    theirs, ours = network.get_weights(), model.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise SettingsError(f"--from {source}: its network does not match this run's (depth, filters, classes, "
                            "channels); leave those options out to take its own")
    model.set_weights(theirs)


def object_split(config: TrainConfig) -> str | None:
    """How the run's objects come from its output by default (``split`` of
    :func:`keras_unet.instances.instances_from_probabilities`): ``boundary`` for a three-class
    target, ``none`` for two classes, None where its classes are not objects
    (:func:`keras_unet.postprocess.default_split`)."""
    from keras_unet.postprocess import default_split

    return default_split(config.target, config.n_classes)


def selection_metric(config: TrainConfig, has_validation: bool) -> str:
    """The log key that picks the best model: ``val_object_f1`` (:class:`Validation`),
    ``val_iou`` (the foreground IoU metric on the validation tiles) or ``val_loss``; ``loss``
    without validation data."""
    if not has_validation:
        return "loss"
    choice = config.select_on
    if choice == "auto":
        choice = "object_f1" if config.n_classes == 2 or config.target == "three_class" else "iou"
    return {"object_f1": "val_object_f1", "iou": "val_iou", "loss": "val_loss"}[choice]


class Validation(keras.callbacks.Callback):
    """Validation after the epochs the plan names (``validate_at``, 1-based; :mod:`keras_unet.budget`),
    timed, at a bounded cost:

    * the loss, pixel error and IoU on a fixed, small set of validation tiles (``tiles``:
      ``(images, y_true)`` from :func:`keras_unet.pipeline.validation_tiles`): ``val_loss``,
      ``val_pixel_error``, ``val_iou``;
    * what users measure, on whole validation images (overlap-tile prediction and instances as
      ``keras-unet predict --format instances`` makes them, with the run's ``min_size``):
      ``val_object_f1`` (F1 at IoU 0.5) and ``val_object_dsb`` (the DSB score), for two classes.

    Every epoch's logs get ``train_seconds`` (its training steps) and ``val_seconds`` (0 where it
    did not validate), which ``log.csv`` keeps. The true objects are the targets' class-1
    components with the separation borders given back, the post-processing predicted ones get.
    """

    def __init__(self, tiles, images: list, targets: list, tile: int, min_size: int = 0, batch_size: int = 1,
                 validate_at=(1,), split: str = "none"):
        super().__init__()
        from keras_unet.instances import instances_from_probabilities

        self.tiles, self.images, self.tile, self.min_size = tiles, list(images), tile, min_size
        self.batch_size, self.validate_at, self.split = batch_size, set(validate_at), split
        classes = 3 if split == "boundary" else 2  # a three-class target's objects: interiors with their rims
        self.truths = [instances_from_probabilities(np.eye(classes, dtype=np.float32)[t], split=split)
                       for t in targets]
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        from keras_unet.instances import instances_from_probabilities

        if logs is None:
            return
        now = time.monotonic()
        logs["train_seconds"] = now - self.started
        if epoch + 1 not in self.validate_at:
            logs["val_seconds"] = 0.0
            return
        scores = self.model.evaluate(*self.tiles, batch_size=self.batch_size, verbose=0, return_dict=True)
        logs.update({f"val_{k}": float(v) for k, v in scores.items()})
        if self.images:
            found = [metrics.evaluate_objects(instances_from_probabilities(
                         tiling.predict_tiled(self.model, image, tile=self.tile), min_size=self.min_size,
                         split=self.split, dtype=np.int32), truth)
                     for image, truth in zip(self.images, self.truths)]
            logs["val_object_f1"] = float(np.mean([f["f1"] for f in found]))
            logs["val_object_dsb"] = float(np.mean([f["dsb_score"] for f in found]))
        logs["val_seconds"] = time.monotonic() - now


class BudgetPlanner(keras.callbacks.Callback):
    """Plans the run once its costs are measured (:func:`keras_unet.budget.plan_schedule`): after
    the first validated epoch it knows a training step's time (steps after the first, which builds
    the graph) and a validation's, and fixes how many epochs fit the budget and after which to
    validate (writing both into ``validation.validate_at``). It stops training after the planned
    last epoch and, for ``lr_schedule="cosine"``, sets the learning rate before every step so the
    decay reaches its end with the plan. The plan is printed and kept in ``state["plan"]``."""

    def __init__(self, config: TrainConfig, state: dict, validation: Validation | None, started: float,
                 fixed: bool = False, verbose: int = 1, out=None):
        super().__init__()
        self.config, self.state, self.validation, self.started = config, state, validation, started
        self.fixed, self.verbose, self.out = fixed, verbose, out
        self.step_times, self.last, self.epoch_started, self.first_validation, self.step = [], None, None, None, 0
        planned = state.get("plan", {}).get("epochs")
        self.epochs = planned or config.epochs
        self.planned = planned is not None

    def on_train_begin(self, logs=None):
        # Counted here from the optimizer's count (a resumed run's included): reading the variable
        # before every step would wait for the step before it.
        self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        if self.config.lr_schedule == "cosine":
            rate = cosine_rate(self.step, self.epochs * self.config.steps_per_epoch, self.config.learning_rate)
            learning_rate = self.model.optimizer._learning_rate  # a variable, unless an old run's schedule
            if isinstance(learning_rate, keras.Variable):
                learning_rate.assign(rate)
        self.last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.last is not None:
            self.step_times.append(time.monotonic() - self.last)

    def on_epoch_begin(self, epoch, logs=None):
        # Planned at the start of the second epoch of this process: by then the first one's steps,
        # validation and checkpoint writing have all been timed.
        if not self.planned and self.epoch_started is not None:
            wall = time.monotonic() - self.epoch_started
            overhead = wall - sum(self.step_times) - self.first_validation
            self.plan(epoch, self.first_validation, overhead)
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.first_validation is None:
            self.first_validation = (logs or {}).get("val_seconds", 0.0)
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True

    def plan(self, epochs_done: int, validation_seconds: float, overhead: float = 0.0) -> None:
        times = self.step_times[1:] or self.step_times  # the first step builds the graph
        step_seconds = float(np.median(times)) if times else 1.0
        done = tuple(sorted(self.validation.validate_at & set(range(1, epochs_done + 1)))) if self.validation else ()
        plan = plan_schedule(epochs=self.config.epochs, steps_per_epoch=self.config.steps_per_epoch,
                             step_seconds=step_seconds, validation_seconds=validation_seconds,
                             budget_seconds=60.0 * self.config.max_minutes,
                             elapsed_seconds=time.monotonic() - self.started,
                             reserve_seconds=2 * validation_seconds,  # choosing the post-processing
                             epochs_done=epochs_done, validated=done, fixed=self.fixed,
                             epoch_overhead_seconds=overhead)
        self.epochs, self.planned = plan.epochs, True
        if self.validation is not None:
            self.validation.validate_at = set(plan.validate_at)
        self.state["plan"] = {"epochs": plan.epochs, "steps_per_epoch": plan.steps_per_epoch,
                              "validate_at": list(plan.validate_at), "seconds": round(plan.seconds, 1),
                              "step_seconds": round(step_seconds, 4), "validation_seconds": round(validation_seconds, 3),
                              "epoch_overhead_seconds": round(overhead, 3), "reason": plan.reason, "fits": plan.fits}
        if self.verbose:
            line = (f"plan: {plan.epochs} epochs x {plan.steps_per_epoch} steps, validation after "
                    f"{len(plan.validate_at)} of them, about {format_minutes(plan.seconds)} in all ({plan.reason})")
            print(("warning: " if not plan.fits else "") + line, file=self.out or sys.stderr, flush=True)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch where Keras' progress bar is off (output to a file or pipe): the planned
    epochs as the total, the losses, and where the time went."""

    def __init__(self, planner: BudgetPlanner, out=None):
        super().__init__()
        self.planner, self.out = planner, out

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = ["loss", "val_loss", "val_pixel_error", "val_object_f1", "val_object_dsb"]
        values = ", ".join(f"{k} {logs[k]:.4f}" for k in shown if k in logs)
        print(f"epoch {epoch + 1}/{self.planner.epochs}: {values} (train {logs.get('train_seconds', 0):.1f} s, "
              f"validation {logs.get('val_seconds', 0):.1f} s)", file=self.out or sys.stdout, flush=True)


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
            self.state.update(best=float(score), best_epoch=epoch + 1, best_value=float(value),
                              best_logs={k: float(v) for k, v in logs.items() if k.startswith("val_")})
        if not self.is_chief:
            return
        if improved:  # an inference model: loads without keras_unet; training state stays in last.keras
            # float32 whatever the run trained in: predict and the exporters choose their own precision
            with precision.global_policy("float32"):
                network = precision.with_policy(self.model, "float32")
                save_model_atomic(inference_model(network, self.percentiles), runs.run_file(self.run_dir, runs.MODEL))
        save_model_atomic(self.model, runs.run_file(self.run_dir, runs.LAST))
        runs.Run(self.run_dir).write_state(self.state)


def format_minutes(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ProgressEstimate(keras.callbacks.Callback):
    """Tell the user early how long the run takes: after ``after_steps`` steps (the first, which
    builds the graph, not counted), with a hint when it is over an hour; :class:`BudgetPlanner`
    says what was planned after the first epoch."""

    def __init__(self, config: TrainConfig, verbose: int = 1, after_steps: int = 5, out=None,
                 planner: BudgetPlanner | None = None):
        super().__init__()
        self.config, self.verbose, self.after_steps, self.out = config, verbose, after_steps, out
        self.planner = planner
        self.first_epoch = self.started = None
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == 1:
            self.started = time.monotonic()
        elif self.steps == 1 + self.after_steps:
            per_step = (time.monotonic() - self.started) / self.after_steps
            steps = (self.config.epochs - self.first_epoch) * self.config.steps_per_epoch
            self.report(per_step * steps, f"{per_step:.2f} s per step x {steps} steps, validation not included")

    def report(self, seconds: float, basis: str) -> None:
        if not self.verbose or self.planner is not None and self.planner.planned:
            return  # the plan, printed already, says more
        limit = self.config.max_minutes * 60.0
        line = f"estimated training time: {format_minutes(seconds)} ({basis})"
        if limit and seconds > limit:
            line += (f"; the run is planned to fit --max-minutes {self.config.max_minutes:g} after its first epoch"
                     if self.planner is not None and not self.planner.fixed
                     else f"; --max-minutes stops it after {format_minutes(limit)}")
        elif seconds > 3600:
            line += ("\nhint: over an hour on this machine; --preset cpu trains a smaller network in about "
                     "30 min, --max-minutes bounds the time, and a GPU (pip install '.[gpu]') is far faster")
        print(line, file=self.out or sys.stderr, flush=True)


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the batch after ``minutes`` of wall time from ``started``
    (a ``time.monotonic()`` value; now by default)."""

    def __init__(self, minutes: float, started: float | None = None):
        super().__init__()
        self.deadline = (time.monotonic() if started is None else started) + 60.0 * minutes
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() > self.deadline:
            self.model.stop_training = self.stopped = True


def fit_epochs(config: TrainConfig, state: dict) -> int:
    """The epochs Keras' ``fit`` is given: the plan's where there is one, the configured ones for a
    fixed schedule, else room to fill a budget (:data:`keras_unet.budget.FILL_LIMIT` times the
    configured epochs); :class:`BudgetPlanner` stops training after the planned last epoch."""
    from keras_unet.budget import FILL_LIMIT

    planned = state.get("plan", {}).get("epochs")
    if planned:
        return max(int(planned), config.epochs if config.fixed_schedule else 0)
    if config.max_minutes and not config.fixed_schedule:
        return config.epochs * FILL_LIMIT
    return config.epochs


def _gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(config: TrainConfig, channels: int, verbose: int = 0) -> str:
    """The precision a run trains in: ``config.precision`` unless ``auto``, which is bfloat16
    where the CPU computes it natively and a few training steps of this network, tile and batch
    measured faster in it (:func:`training_step_seconds`), else float32 (also on a GPU: ask for
    float16 there)."""
    if config.precision != "auto":
        return config.precision
    if _gpu() or not precision.native_bfloat16():
        return "float32"
    seconds = training_step_seconds(config, channels)
    chosen = "bfloat16" if seconds["bfloat16"] < seconds["float32"] else "float32"
    if verbose:
        print(f"precision: {chosen} (a training step measured {seconds['float32']:.3f} s in float32, "
              f"{seconds['bfloat16']:.3f} s in bfloat16 on this CPU; --precision overrides)", file=sys.stderr,
              flush=True)
    return chosen


def training_step_seconds(config: TrainConfig, channels: int, repeat: int = 3) -> dict:
    """Seconds per training step (best of ``repeat`` after the step that builds the graph) in
    float32 and in bfloat16, for this network, tile and batch on this machine; measured once and
    cached (``training_precision.json`` in the cache, by machine, architecture, tile and batch)."""
    from keras_unet.engines import machine_key
    from keras_unet.files import cache_root

    key = (f"{machine_key()} | depth {config.depth}, base {config.base_filters}, {channels} -> {config.n_classes}, "
           f"{config.padding}, bn {config.batch_norm} | tile {config.tile} x {config.batch_size}")
    path = cache_root() / "training_precision.json"
    known = runs.read_json(path)
    if key in known:
        return known[key]
    rng = np.random.default_rng(0)
    tiles = rng.uniform(0, 1, (config.batch_size, config.tile, config.tile, channels)).astype(np.float32)
    out = sizes.output_size(config.tile, config.depth, config.padding)
    targets = rng.integers(0, config.n_classes, (config.batch_size, out, out))
    seconds, policy = {}, keras.mixed_precision.global_policy()
    try:
        for name in ("float32", "bfloat16"):
            keras.mixed_precision.set_global_policy(precision.POLICIES[name])
            model = unet(depth=config.depth, base_filters=config.base_filters, in_channels=channels,
                         n_classes=config.n_classes, padding=config.padding, batch_norm=config.batch_norm,
                         input_range=None)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            model.train_on_batch(tiles, targets)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                model.train_on_batch(tiles, targets)
                times.append(time.perf_counter() - start)
            seconds[name] = min(times)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    runs.write_json(path, {**known, key: seconds})
    return seconds


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


def fit(config: TrainConfig, run_dir, verbose: int = 1, datasets=None, callbacks=()) -> dict:
    """Train a new run into ``run_dir`` (created; settings checked before anything is written).

    ``datasets``: an optional ``(train, validation)`` pair of :class:`keras_unet.data.Dataset`
    used instead of the configured folders. ``callbacks``: Keras callbacks added to the run's own.

    Returns the final state: ``{"epoch", "best", "best_epoch", "history", "model", "config", "time_limited"}``.
    Keras's global dtype policy (set by the run's ``precision``) is restored on return.
    """
    return _run(config.validated(), Path(run_dir), {"epoch": 0, "best": float("inf")}, False, verbose, datasets,
                callbacks)


def resume(run_dir, epochs: int | None = None, verbose: int = 1, datasets=None, callbacks=()) -> dict:
    """Continue the run in ``run_dir`` with the settings of its ``config.json``, from its
    ``last.keras`` (optimizer state included) or, where no epoch finished, from the start.

    ``epochs``: a new total number of epochs (to train longer than first planned).
    """
    run_dir = Path(run_dir)
    run = runs.Run(run_dir)
    if not run.started:
        raise ModelFileError(f"{run_dir}: not a run folder to resume (no config.json); start it anew with --out")
    config = TrainConfig.from_dict(run.settings())
    if epochs is not None and epochs != config.epochs:
        config = config.updated(epochs=epochs).validated()
        if is_chief():  # the run's record follows: a later --resume continues to the new total
            run.update(config=asdict(config))
    has_checkpoint = runs.run_file(run_dir, runs.LAST).is_file()
    state = {"epoch": 0, "best": float("inf")}
    if has_checkpoint and run.state():
        state = run.state()
    if epochs is not None:  # a new total: the run keeps exactly it (a plan of the old one no longer holds)
        state.pop("plan", None)
        config = config.updated(fixed_schedule=True)
    return _run(config.validated(), run_dir, state, has_checkpoint, verbose, datasets, callbacks)


def _run(config: TrainConfig, run_dir: Path, state: dict, from_checkpoint: bool, verbose: int, datasets,
         callbacks) -> dict:
    policy = keras.mixed_precision.global_policy()
    try:
        return _train(config, run_dir, state, from_checkpoint, verbose, datasets, list(callbacks))
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _train(config: TrainConfig, run_dir: Path, state: dict, resume: bool, verbose: int, datasets, extra) -> dict:
    started = time.monotonic()
    sizes.check_input_size(config.tile, config.depth, config.padding)
    keras.utils.set_random_seed(config.seed + state["epoch"])
    chief = is_chief()
    # The strategy before any TF op runs (loading the model of --from, the normalisation in
    # network_input): collective ops are configured at program start-up.
    strategy = distribution_strategy(config.strategy)
    # The model --from names, loaded once: its channels shape the data, its weights start the network.
    source = starting_point(config.init_from) if config.init_from and not resume else None
    prepared = _prepare_data(config, datasets, verbose, source)
    train_data, val_data = prepared.network_input()
    # the precision resolved once and recorded, so --resume trains on in the same one
    config = config.updated(precision=resolve_precision(config, train_data.channels, verbose))
    keras.mixed_precision.set_global_policy(precision.training_policy(config.precision, _gpu()))
    if chief:
        _start_folder(config, run_dir, resume, prepared, train_data, val_data)
    model = _model(config, run_dir, resume, strategy, train_data.channels, prepared.input_range, source)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    params = (augment.AugmentParams(stain=config.stain_jitter, zoom=config.zoom) if config.augment
              else augment.AugmentParams.none())
    train_ds = pipeline.training_dataset(train_data, config.tile, global_batch, config.depth, config.padding,
                                         params, prepared.value_range, seed=config.seed * 100_003 + state["epoch"],
                                         on_device=augment_on_device(config))
    callbacks, validation = _callbacks(config, run_dir, state, chief, val_data, prepared.min_object_size,
                                       prepared.percentiles, global_batch, resume, verbose, started)
    callbacks += extra
    history = {}
    if state["epoch"] < fit_epochs(config, state):
        history = model.fit(train_ds, epochs=fit_epochs(config, state), initial_epoch=state["epoch"],
                            steps_per_epoch=config.steps_per_epoch, callbacks=callbacks,
                            verbose=verbose if verbose == 1 else 0, shuffle=False).history
    time_limited = any(isinstance(c, TimeLimit) and c.stopped for c in callbacks)
    if chief:
        if not time_limited and validation is not None and validation.images:
            choose_postprocessing(run_dir, validation, prepared.min_object_size, verbose)
        write_report(run_dir, prepared.val if len(prepared.val) else prepared.train)
    return {**state, "history": history, "model": model, "config": config, "time_limited": time_limited}


@dataclass
class PreparedData:
    """What a run trains on, before normalisation (``train``, ``val``: raw values), and what it
    derives from it: the raw range, the per-image percentiles (None: the fixed range), the
    typical minimum object size."""

    train: data.Dataset
    val: data.Dataset
    raw_range: tuple
    percentiles: tuple | None
    min_object_size: int
    object_diameter: float | None = None  # px, median of the training objects (predict --diameter)

    @property
    def input_range(self):
        """The network's own input mapping: none where images are normalised by percentiles."""
        return None if self.percentiles else self.raw_range

    @property
    def value_range(self):
        """The range of the values the network sees (augmentation clips to it)."""
        return (0.0, 1.0) if self.percentiles else self.raw_range

    def network_input(self) -> tuple[data.Dataset, data.Dataset]:
        # Per-image percentiles: the images are normalised once, whole, and the network learns on
        # them; model.keras puts the same normalisation in front (model.inference_model). Fixed
        # range: the network's first layer maps raw_range to [0, 1], as in every run made before
        # per-image normalisation.
        return pipeline.network_input(self.train, self.percentiles), pipeline.network_input(self.val, self.percentiles)


def _prepare_data(config: TrainConfig, datasets, verbose: int, source=None) -> PreparedData:
    """The datasets (given, or the configured ones), checked against the tile, in the channels of
    the model the run starts from (``source``: :func:`starting_point`), with what the run derives
    from them."""
    train_data, val_data = datasets if datasets is not None else load_data(config)
    if source is not None:  # gray data for an RGB model: as R = G = B (tiling.gray_for_rgb)
        channels = source[1]["in_channels"]
        train_data, val_data = train_data.with_channels(channels), val_data.with_channels(channels)
    if verbose:
        for note in train_data.notes:
            print(f"note: {note}", file=sys.stderr)
    data.check_tile_fits(train_data, config.tile, config.depth, config.padding)
    # Objects smaller than this are noise: the default --min-size of predict and export for this run.
    areas = object_areas(train_data.targets) if object_split(config) else []  # labelled once for both
    min_object_size = typical_min_size(None, areas=areas)
    diameter = typical_diameter(None, areas=areas)
    percentiles = tuple(config.percentiles) if config.normalization == "percentile" else None
    return PreparedData(train_data, val_data, train_data.input_range(), percentiles, min_object_size, diameter)


def _start_folder(config: TrainConfig, run_dir: Path, resume: bool, prepared: PreparedData, train_data, val_data):
    """The run folder, cleared of temporaries a killed process left, and a new run's record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    if not resume:
        runs.Run(run_dir).start({"config": asdict(config), "input_range": prepared.raw_range,
                                 "min_object_size": prepared.min_object_size,
                                 "object_diameter": prepared.object_diameter, "versions": versions(),
                                 "data_notes": train_data.notes, "train_samples": train_data.sources,
                                 "val_samples": val_data.sources})


def _model(config: TrainConfig, run_dir: Path, resume: bool, strategy, channels: int, input_range,
           source=None) -> keras.Model:
    """The network to train: the run's last checkpoint, or a new one (from the weights of
    ``source``, :func:`starting_point` of ``init_from``)."""
    with strategy.scope():
        if resume:
            model = keras.models.load_model(runs.run_file(run_dir, runs.LAST))
        else:
            model = build_model(config, channels, input_range)
            if source is not None:
                start_from(model, source[0], config.init_from)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.num_replicas_in_sync > 1:
        keras_patches.patch_multiworker_fit(model)
    return model


# Validation's bounds: loss tiles, and whole images for the object scores (at most this many, and
# at most this many pixels in all: a few 1388 px DSB images would otherwise cost minutes).
VALIDATION_TILES = 16
VALIDATION_IMAGES = 16
VALIDATION_PIXELS = 4_000_000


def _callbacks(config: TrainConfig, run_dir: Path, state: dict, chief: bool, val_data, min_object_size: int,
               percentiles, batch_size: int, resume: bool, verbose: int, started: float):
    """The run's callbacks, in the order they must run, and its :class:`Validation` (or None)."""
    validation = None
    if len(val_data):
        val_tile = pipeline.validation_tile(val_data, config.tile, config.depth, config.padding, config.base_filters,
                                            batch_size)
        tiles = pipeline.validation_tiles(val_data, config.tile, config.depth, config.padding,
                                          max_tiles=VALIDATION_TILES, seed=config.seed)
        picks, pixels = [], 0
        for i in pipeline.spread_picks(len(val_data), VALIDATION_IMAGES):
            pixels += val_data.targets[i].size
            if picks and pixels > VALIDATION_PIXELS:
                break
            picks.append(i)
        objects = config.n_classes == 2 or config.target == "three_class"
        validation = Validation(tiles, [val_data.images[i] for i in picks] if objects else [],
                                [val_data.targets[i] for i in picks] if objects else [], val_tile, min_object_size,
                                batch_size, validate_at=state.get("plan", {}).get("validate_at") or (state["epoch"] + 1,),
                                split=object_split(config))
    select = selection_metric(config, validation is not None)
    planner = BudgetPlanner(config, state, validation, started, fixed=config.fixed_schedule or "plan" in state,
                            verbose=verbose)
    callbacks = [c for c in (validation, planner) if c is not None]  # first: later ones see their logs
    callbacks += [RunCheckpoint(run_dir, state, chief, select, percentiles), keras.callbacks.TerminateOnNaN(),
                  ProgressEstimate(config, verbose, planner=planner)]
    if verbose == 2:
        callbacks.append(EpochLine(planner))
    if chief:  # only the chief writes files; the other workers train in lockstep
        callbacks.append(keras.callbacks.CSVLogger(str(runs.run_file(run_dir, runs.LOG)), append=resume))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(patience=config.early_stopping,
                                                       monitor="val_loss" if validation else "loss"))
    if config.max_minutes:  # the plan fits the budget; this stops a schedule that cannot
        callbacks.append(TimeLimit(config.max_minutes, started))
    if config.tensorboard and chief:
        callbacks.append(keras.callbacks.TensorBoard(str(runs.run_file(run_dir, runs.TENSORBOARD))))
    return callbacks, validation


def choose_postprocessing(run_dir: Path, validation: Validation, min_object_size: int, verbose: int) -> dict:
    """Choose the objects' post-processing on the validation images with the best model
    (:func:`keras_unet.postprocess.search`) and record it in the run."""
    from keras_unet import postprocess

    model = inference.load_model(run_dir)
    probabilities = [tiling.predict_tiled(model, image, tile=validation.tile) for image in validation.images]
    chosen = postprocess.search(probabilities, validation.truths, typical_min_size=min_object_size,
                                split=validation.split)
    runs.update_record(run_dir, postprocessing=chosen)
    if verbose:
        threshold = "argmax" if chosen["threshold"] is None else f"p >= {chosen['threshold']:g}"
        print(f"post-processing chosen on {chosen['images']} validation images: {threshold}, objects under "
              f"{chosen['min_size']} px dropped, split {chosen['split']} (DSB score {chosen['value']:.3f}; "
              f"{chosen['default_value']:.3f} with argmax, split {validation.split})", file=sys.stderr, flush=True)
    return chosen


def write_report(run_dir: Path, dataset: data.Dataset, n_samples: int = 2) -> None:
    """``curves.png`` from the log and ``samples.png`` from the best model on ``dataset``."""
    log = runs.run_file(run_dir, runs.LOG)
    if log.is_file() and log.stat().st_size:
        plots.training_curves(log, runs.run_file(run_dir, runs.CURVES))
    try:
        model = inference.load_model(run_dir)  # model.keras, else last.keras
    except ModelFileError:
        return  # no epoch finished yet
    picks = list(range(min(n_samples, len(dataset))))
    probabilities = [tiling.predict_tiled(model, dataset.images[i]) for i in picks]
    plots.sample_predictions([dataset.images[i] for i in picks], [dataset.targets[i] for i in picks],
                             probabilities, runs.run_file(run_dir, runs.SAMPLES), titles=[Path(dataset.sources[i]).name for i in picks])
