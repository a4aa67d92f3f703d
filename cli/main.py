"""``keras-unet``: a thin click layer over the library.

Every library error about the user's input becomes a one-line message naming the file and the
problem (exit code 2), never a traceback.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from keras_unet import __version__
from keras_unet.instances import SPLITS


class InputError(click.ClickException):
    """Bad input (file, size, setting): one line on stderr, exit code 2."""

    exit_code = 2


def user_errors(fn):
    """Turn the library's user-input errors (:mod:`keras_unet.errors`) and OS errors (missing,
    unreadable, unwritable files) into click's one-line errors; any other exception is a bug and
    keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from keras_unet.errors import UserInputError, user_message

        try:
            return fn(*args, **kwargs)
        except (UserInputError, OSError) as err:
            raise InputError(user_message(err)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keras-unet")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's start-up and log messages.")
def main(verbose):
    """U-Net (Ronneberger et al., 2015) for microscopy segmentation: train, predict, evaluate, export."""
    if not verbose and not {"-h", "--help"} & set(sys.argv):
        import_tensorflow_quietly()


def import_tensorflow_quietly() -> None:
    """Have TensorFlow imported, whenever something first imports it, with its start-up banners
    (absl and oneDNN lines, written by C++ to the process's stderr before any log level applies)
    kept off the terminal; numerics unchanged. Only the import is silenced: errors and warnings
    after it still reach stderr. Not imported here: a job on a converted network never needs it
    (:mod:`keras_unet.converted`), and importing it takes 3-4 s."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.meta_path.insert(0, _QuietTensorFlow())


class _QuietTensorFlow:
    """A finder for the first import of ``tensorflow`` only (it leaves ``sys.meta_path`` then):
    TensorFlow's own spec, with its loader run with stderr closed (:class:`_QuietLoader`)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader:
    """TensorFlow's loader, its module run with file descriptor 2 pointed at /dev/null."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
        module.get_logger().setLevel("ERROR")

    def __getattr__(self, name):  # everything else of the loader (resources, source) as it is
        return getattr(self.loader, name)


# -- fit ---------------------------------------------------------------------------------------

FIT_OPTIONS = [
    ("--val-data", "val_data", click.Path(exists=True, file_okay=False), "Validation folder (default: a split of --data)."),
    ("--val-fraction", "val_fraction", float, "Fraction of samples held out for validation [0.2]."),
    ("--epochs", "epochs", int, "Epochs [paper preset 50]."),
    ("--steps", "steps_per_epoch", int, "Batches per epoch [100]."),
    ("--tile", "tile", int, "Input tile size, px (valid sizes: 16k+60 for depth 5) [572]."),
    ("--batch-size", "batch_size", int, "Tiles per batch [1, the paper's]."),
    ("--depth", "depth", int, "Resolution levels [5]."),
    ("--base-filters", "base_filters", int, "Filters of the first level [64]."),
    ("--classes", "n_classes", int, "Output classes [2]."),
    ("--padding", "padding", click.Choice(["valid", "same"]), "Convolution padding [valid]."),
    ("--dropout", "dropout", float, "Dropout at the end of the contracting path [0.5]."),
    ("--optimizer", "optimizer", click.Choice(["sgd", "adam"]), "Optimizer [sgd, momentum 0.99]."),
    ("--lr", "learning_rate", float, "Learning rate [0.01]."),
    ("--momentum", "momentum", float, "SGD momentum [0.99]."),
    ("--lr-schedule", "lr_schedule", click.Choice(["constant", "cosine"]), "Learning-rate schedule [constant]."),
    ("--loss", "loss", click.Choice(["wce", "dice", "wce+dice"]), "Loss [wce: weighted cross-entropy]."),
    ("--w0", "w0", float, "Border weight w0 of the weight map [10]."),
    ("--sigma", "sigma", float, "Border width sigma of the weight map, px [5]."),
    ("--mask-kind", "mask_kind", click.Choice(["auto", "binary", "instance", "classes"]), "How to read masks [auto]."),
    ("--target", "target", click.Choice(["borders", "three_class"]),
     "What the network learns of object masks: borders (the paper's two classes, separation borders and weight "
     "maps) or three_class (background / interior / boundary; 3 classes) [borders]."),
    ("--early-stopping", "early_stopping", int, "Patience in epochs; 0 = off [0]."),
    ("--max-minutes", "max_minutes", float, "Stop after this many minutes; 0 = no limit."),
    ("--normalization", "normalization", click.Choice(["percentile", "range"]),
     "Input normalisation: each image by its percentiles, or the data's fixed range (0-255 -> 0-1) "
     "where absolute intensity matters [percentile]."),
    ("--augment-on", "augment_on", click.Choice(["auto", "host", "device"]),
     "Where augmentation runs: the host's tf.data workers, or the accelerator on batches of windows "
     "[auto: device where a GPU is]."),
    ("--stain-jitter", "stain_jitter", float,
     "Jitter the stains of colour images (H&E and others) by this much optical density, as a colour "
     "augmentation: 0.05 light, 0.2 strong; gray images stay gray [0: off]."),
    ("--zoom", "zoom", float,
     "Scale augmentation: each training tile zoomed by a factor log-uniform in [1/Z, Z], so the model "
     "meets objects larger and smaller than the training images hold; 1.25-1.5 moderate [1: off]."),
    ("--select-on", "select_on", click.Choice(["auto", "object_f1", "iou", "loss"]),
     "Validation measure that picks model.keras [auto: object F1 for 2 classes, else IoU]."),
    ("--seed", "seed", int, "Random seed [0]."),
    ("--strategy", "strategy", click.Choice(["default", "mirrored", "multiworker"]), "tf.distribute strategy."),
]


def fit_options(fn):
    for flag, dest, kind, help_text in reversed(FIT_OPTIONS):
        fn = click.option(flag, dest, type=kind, default=None, help=help_text)(fn)
    return fn


@main.command()
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset folder (images/ + masks/). Without it: synthetic cells and a small demo model.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder [runs/<date-time>].")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this folder from its last completed epoch (settings from its config.json).")
@fit_options
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None,
              help="Compute precision: auto is bfloat16 where the CPU has it natively (AMX, AVX512_BF16) and a "
                   "training step measured faster in it, else float32; float16 is a GPU's mixed_float16 "
                   "(bfloat16 on a CPU). The loss, weight map and softmax stay float32 [auto].")
@click.option("--mixed-precision", is_flag=True, default=None,
              help="Old name of --precision float16 (float16 on a GPU, bfloat16 on a CPU).")
@click.option("--no-augment", is_flag=True, default=False, help="Train without augmentation.")
@click.option("--tensorboard", is_flag=True, default=None, help="Also write TensorBoard logs.")
@click.option("--batch-norm", is_flag=True, default=None, help="Batch normalisation after each conv (not in the paper).")
@click.option("--percentiles", type=(click.FloatRange(0, 100), click.FloatRange(0, 100)), default=None,
              help="Low and high percentile of --normalization percentile [1 99.8].")
@click.option("--preset", type=click.Choice(["paper", "cpu", "finetune", "demo"]), default=None,
              help="Starting settings: paper (about 4-5 h on 2 CPU cores), cpu (about 30 min), finetune (10 min, "
                   "with --from), demo (2-3 min) [finetune with --from, paper with --data, demo without].")
@click.option("--paper", is_flag=True, help="Same as --preset paper.")
@click.option("--from", "from_model", metavar="MODEL", default=None,
              help="Start from this model's weights (a run folder, a .keras file or a shipped model: "
                   "keras-unet models) with its architecture; the finetune preset (10 min) unless --preset.")
@user_errors
def fit(data_dir, out_dir, resume_dir, no_augment, paper, preset, from_model, mixed_precision, **options):
    """Train a U-Net; writes a run folder (model, config, log, plots)."""
    from keras_unet import runs, settings, train
    from keras_unet.files import ensure_writable_folder, remove_stale_temporaries

    chosen = {k: v for k, v in options.items() if v is not None}
    if mixed_precision:
        if chosen.get("precision", "float16") != "float16":
            raise InputError(f"--mixed-precision is --precision float16; it contradicts --precision "
                             f"{chosen['precision']}: give one")
        chosen["precision"] = "float16"
    if resume_dir:
        others = sorted(set(chosen) - {"epochs"}) + (["--preset"] if preset or paper else []) + (["--data"] if data_dir else []) + (["--out"] if out_dir else []) + (["--from"] if from_model else [])
        if others:
            raise InputError(f"--resume continues with the run's own settings; only --epochs may change (got {', '.join(others)})")
        run_dir = Path(resume_dir)
        click.echo(f"Resuming {run_dir}")
        state = train.resume(run_dir, epochs=chosen.get("epochs"), verbose=_verbosity())
    else:
        if paper and preset not in (None, "paper"):
            raise InputError(f"--paper and --preset {preset} contradict each other; give one")
        name = preset or ("paper" if paper else "finetune" if from_model else "paper" if data_dir else "demo")
        fixed = "epochs" in chosen or "steps_per_epoch" in chosen  # the user's own schedule: kept, not planned
        if from_model:
            chosen = train.inherited_settings(from_model, chosen)
        config = settings.preset(name, **chosen, data=data_dir, augment=not no_augment, fixed_schedule=fixed)
        run_dir = Path(out_dir) if out_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        remove_stale_temporaries(run_dir)
        if not run_dir.exists():
            ensure_writable_folder(run_dir.parent)
        if runs.Run(run_dir).started:
            raise InputError(f"{run_dir}: holds a run already; continue it with --resume {run_dir} or use another --out")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"{run_dir}: folder exists and is not empty; use another --out")
        what = (data_dir or "the embedded synthetic cells") + (f", starting from {from_model}" if from_model else "")
        click.echo(f"Training on {what} ({name} preset): base {config.base_filters} filters, tile {config.tile} px, "
                   f"{config.epochs} epochs x {config.steps_per_epoch} steps -> {run_dir}")
        state = train.fit(config, run_dir, verbose=_verbosity())
    if state["time_limited"]:
        config = state["config"]
        click.echo(f"Stopped by the time limit (--max-minutes {config.max_minutes:g}) after epoch {state['epoch']} "
                   f"of {config.epochs}; continue with --resume {run_dir}")
    chosen_by = state.get("selected_on", "val_loss")
    best = state.get("best_value", state["best"])
    click.echo(f"Done: {state['epoch']} epochs; model.keras is the best by {chosen_by} "
               + (f"({best:.4f}, epoch {state['best_epoch']})" if "best_epoch" in state else "(no epoch scored)")
               + f". Files in {run_dir}:")
    scores = state.get("best_logs", {})
    if "val_object_f1" in scores:
        click.echo(f"  validation: object F1 {scores['val_object_f1']:.3f}, DSB score {scores['val_object_dsb']:.3f}, "
                   f"pixel error {scores['val_pixel_error']:.3f} (model.keras, argmax)")
    for name in runs.SHOWN:
        if runs.run_file(run_dir, name).exists():
            click.echo(f"  {runs.run_file(run_dir, name)}")


def _verbosity() -> int:
    return 1 if sys.stdout.isatty() else 2


# -- predict -----------------------------------------------------------------------------------


def engine_option(fn):
    """``--engine`` and ``--precision``: what runs the network, chosen together."""
    from keras_unet.engines import ENGINES
    from keras_unet.precision import PRECISIONS

    fn = click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                      help="The network's compute precision: bfloat16 runs several times faster on CPUs that "
                           "have it natively (AMX, AVX512_BF16) with the same objects; auto: bfloat16 only there "
                           "and where measured faster, else float32 (ONNX Runtime: float32 only).")(fn)
    return click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
                        help="What runs the network: TensorFlow, or ONNX Runtime ([onnx] extra) or OpenVINO "
                             "([openvino] extra) on the network converted once and cached; auto: the fastest "
                             "installed here, measured on first use of a job long enough to pay for the "
                             "conversion.")(fn)


class Diameter(click.ParamType):
    """``--diameter``: a size in px (at least 1) or ``auto``."""

    name = "PX|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto" or isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a size in px nor auto", param, ctx)
        if number < 1.0:
            self.fail(f"{value} px: give at least 1 px, or auto", param, ctx)
        return number


DIAMETER = Diameter()


def predictor_of(model_path, threshold=None, min_size=None, split=None, diameter=None, announce: bool = False):
    """The model's handle (:class:`keras_unet.predictor.Predictor`) with the post-processing
    options given, said in one line where ``announce``; and the resize for ``--diameter``."""
    from keras_unet.predictor import Predictor

    predictor = Predictor.of(model_path, threshold=threshold, min_size=min_size, split=split, diameter=diameter)
    chosen = predictor.postprocessing
    if announce:
        click.echo(f"objects: {chosen.described('; --threshold, --min-size, --split override')}")
    if diameter == "auto":
        click.echo(f"objects' diameter measured in each image; images resized so that they have the "
                   f"{predictor.object_diameter:g} px the model learned")
    elif diameter is not None:
        click.echo(f"images resized by {chosen.scale:.3g} for the network: objects of {diameter:g} px to the "
                   f"{chosen.scale * diameter:.3g} px it learned")
    return predictor


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="predictions", show_default=True)
@click.option("--tile", type=int, default=None, help="Input tile size, px [largest within --memory-mb].")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Tiles per forward pass.")
@click.option("--memory-mb", type=int, default=4096, show_default=True,
              help="Memory budget (MB) that picks the default tile: the largest within it that the image needs.")
@click.option("--tta", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Average over this many rotations/flips (test-time augmentation).")
@click.option("--format", "kind", type=click.Choice(["png", "tif", "probabilities", "instances"]), default="png",
              show_default=True, help="Class map (PNG, 0/255 for two classes; TIFF, class indices), float32 "
              "probability TIFF, or objects: uint16 instance-label TIFF (0 = background, 1..N; one page per class "
              "of a multi-class model, per page of a stack).")
@click.option("--min-size", type=click.IntRange(min=0), default=None,
              help="Instances: drop objects smaller than this (px) [the run's choice on its validation data, "
                   "else its min_object_size from its training objects, else 0].")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Instances: also split objects that still touch (distance-transform watershed); boundary: a "
                   "three-class model's interiors grown over their boundary [the run's choice, else none, or "
                   "boundary for a three-class model].")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Two classes: object where p >= threshold [the run's choice on its validation data, else argmax].")
@engine_option
@click.option("--diameter", type=DIAMETER, default=None,
              help="Typical diameter (px) of the objects in these images: each is resized so that its objects "
                   "have the size the model learned (keras-unet models says it), and the results back; auto: "
                   "measured image by image (a search over scales) [as they are].")
@click.option("--block", type=click.IntRange(min=16), default=None,
              help="Predict block by block (px, a multiple of 16) into an OME-Zarr store: memory set by the block, "
                   "not the image [1024 for OME-Zarr inputs; TIFFs only when given].")
@click.option("--channel", type=click.IntRange(min=0), default=None, help="OME-Zarr/TIFF: the channel to take [all].")
@click.option("--z", type=click.IntRange(min=0), default=None, help="OME-Zarr/TIFF: the z plane [the only one].")
@click.option("--t", type=click.IntRange(min=0), default=None, help="OME-Zarr/TIFF: the time point [the only one].")
@click.option("--ngff", type=click.Choice(["0.4", "0.5"]), default="0.5", show_default=True,
              help="NGFF version of the OME-Zarr stores written.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run the blocks and images as tasks on this dask.distributed cluster [local].")
@click.option("--skip-done", is_flag=True, default=False,
              help="Skip inputs whose output is complete (to continue a job that was stopped).")
@user_errors
def predict(model_path, inputs, out_dir, tile, batch_size, memory_mb, tta, kind, min_size, split, threshold, engine,
            precision, diameter, block, channel, z, t, ngff, scheduler, skip_done):
    """Segment images of any size with overlap-tile prediction (each page of a stack); OME-Zarr and
    big TIFFs block by block, on a Dask cluster with --scheduler."""
    from keras_unet import data, inference, jobs
    from keras_unet.files import ensure_writable_folder, remove_stale_temporaries
    from keras_unet.predictor import Options

    ensure_writable_folder(out_dir)
    remove_stale_temporaries(out_dir)  # what a stopped job was writing: redone below
    predictor = predictor_of(model_path, threshold, min_size, split, diameter, announce=kind == "instances")
    request = jobs.Request(out_dir=out_dir, kind=kind, postprocessing=predictor.postprocessing, block=block,
                           channel=channel, z=z, t=t, ngff=ngff, skip_done=skip_done,
                           options=Options(tile=tile, batch_size=batch_size, memory_mb=memory_mb, tta=tta,
                                           engine=engine, precision=precision))
    files = [f for path in inputs for f in data.find_images(path)]
    big = [f for f in files if jobs.is_big(f, block)]
    if diameter and (big or scheduler):
        from keras_unet.errors import SettingsError

        raise SettingsError("--diameter is for images predicted whole; resize big images and cluster jobs first")
    if big or scheduler:
        client = jobs.connect(scheduler)
        try:
            files = _predict_big_and_distributed(predictor, client, files, big, request)
        finally:
            if client is not None:
                client.close()
        if not files:
            return
    done = {f for f in files if request.done(f)}
    # each file read ahead and written behind in background threads while the network runs on the next
    upcoming = predictor.jobs([f for f in files if f not in done], request.options)
    failed = []
    with inference.Finisher() as finisher:
        for number, path in enumerate(files, start=1):
            if path in done:
                click.echo(f"[{number}/{len(files)}] {path.name}: done before, skipped")
                continue
            _, job, problem = next(upcoming)
            if problem is not None:  # named now and in the summary; the collection goes on
                click.echo(f"[{number}/{len(files)}] error: {problem}", err=True)
                failed.append(problem)
                continue
            for warning in job.warnings:
                click.echo(f"warning: {warning}", err=True)
            sized = f"objects ~{job.diameter:g} px, " if job.diameter else ""
            chosen = f"{job.model_note}, " if job.model_note else ""
            label = (f"[{number}/{len(files)}] {path.name} ({len(job.pages)} page{'s' * (len(job.pages) > 1)}, "
                     f"{chosen}{sized}tiles, {job.engine} {job.precision})")
            with click.progressbar(length=job.total_tiles, label=label, show_pos=True) as bar:
                probabilities = list(job.probabilities(bar.update))
            written = finisher.submit(job, probabilities, Path(out_dir), kind)
            click.echo(f"  -> {written}")
    _fail_partly(failed, len(files))


class PartlyFailed(click.ClickException):
    """Some inputs of a collection could not be used (each named): exit code 3, apart from a
    usage error's 2, once every good one is done."""

    exit_code = 3


def _fail_partly(failed: list, total: int) -> None:
    """The summary of a collection's bad inputs, one line each, then exit code 3; nothing without any.
    When no input could be used it is a plain input error (exit code 2): the one problem, or the list."""
    if not failed:
        return
    if len(failed) == total == 1:
        raise InputError(failed[0])
    click.echo(f"{len(failed)} of {total} input(s) could not be used:", err=True)
    for problem in failed:
        click.echo(f"  {problem}", err=True)
    if len(failed) == total:
        raise InputError(f"none of the {total} input(s) could be used (listed above)")
    raise PartlyFailed(f"{len(failed)} of {total} input(s) failed (listed above); the others are done")


def _predict_big_and_distributed(predictor, client, files: list, big: list, request) -> list:
    """predict's Dask part (``request``: a :class:`keras_unet.jobs.Request`): big images block by
    block, and on a cluster (``client``) the small ones as tasks; returns the files left for the
    local loop."""
    import dataclasses

    from keras_unet import jobs
    from keras_unet.files import remove_stale_temporaries

    # a shipped model's partners for the tasks (loaded here, not for every local job: the local
    # loop loads a partner when an image of its kind comes)
    request = dataclasses.replace(request, partners=tuple((kind, str(h.path), h.postprocessing)
                                                          for kind, h in predictor.partner_handles().items()))
    for number, path in enumerate(big, start=1):
        out = request.output(path)
        if request.done(path):
            click.echo(f"[{number}/{len(big)}] {path.name}: {out} is complete, skipped")
            continue
        source = request.source(path)
        image = source.open()
        shape = image.shape
        # a shipped model's partner for the image's kind, chosen here so the line can say which
        model_path, chosen, note = jobs.big_image_partner(predictor.path, image, request)
        with click.progressbar(length=jobs.block_count(shape, request.block or jobs.DEFAULT_BLOCK), show_pos=True,
                               label=f"[{number}/{len(big)}] {path.name} ({shape[0]}x{shape[1]}, blocks"
                                     + (f", {note})" if note else ")")) as bar:
            written = jobs.predict_big(model_path, source, out,
                                       dataclasses.replace(request, postprocessing=chosen, partners=()),
                                       client=client, progress=bar.update)
        click.echo(f"  -> {written}")
    files = [f for f in files if f not in big]
    if client is not None and files:
        done = [f for f in files if request.done(f)]
        todo = [f for f in files if f not in done]
        where = getattr(client.scheduler, "address", "the cluster")
        with click.progressbar(length=len(todo), show_pos=True,
                               label=f"{len(todo)} image(s) on {where} ({len(done)} done before)") as bar:
            written = jobs.predict_files(predictor.path, todo, request, client=client, progress=bar.update)
        click.echo(f"  -> {len(written)} file(s) in {request.out_dir}")
        remove_stale_temporaries(request.out_dir)  # what a lost worker was writing (its file was redone)
        return []
    return files


# -- models ------------------------------------------------------------------------------------


@main.command()
def models():
    """The models shipped with the package: give the name where a model path goes."""
    from keras_unet import runs

    names = runs.shipped_models()
    if not names:
        click.echo("no models are shipped with this installation")
    for name in names:
        card = runs.card(name)
        click.echo(f"{name}: {card.get('description', '')}")
        for key in ("training_data", "licence", "input", "trained", "held_out", "recipe", "elsewhere"):
            if key in card:
                click.echo(f"  {key.replace('_', ' ')}: {card[key]}")
        for kind, score in card.get("scores", {}).items():
            click.echo(f"  {kind} ({score['images']} held-out images): F1 @ IoU 0.5 {score['f1_iou50']:.3f}, "
                       f"DSB score {score['dsb_score']:.3f}")
        for kind, partner in runs.partners(name).items():
            click.echo(f"  images of a {kind} background (keras_unet.kinds) go to {partner}; give {partner} by name "
                       "to use it on every image")
        click.echo(f"  folder: {runs.SHIPPED / name}")


# -- evaluate ----------------------------------------------------------------------------------


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Write metrics.csv and metrics.json here.")
@click.option("--tile", type=int, default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--tta", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Two classes: object where p >= threshold [argmax]. Choose it on validation data.")
@click.option("--sweep", is_flag=True, default=False,
              help="Also the ISBI challenge's protocol: each challenge metric's best over thresholds 0.0-1.0 "
                   "(picked on these labels: an upper bound, reported apart as swept_*).")
@click.option("--min-size", type=click.IntRange(min=0), default=None,
              help="Object metrics: drop predicted objects smaller than this (px) [the run's choice, else its "
                   "min_object_size, else 0].")
@click.option("--split", type=click.Choice(SPLITS), default=None,
              help="Object metrics: also split objects that still touch; boundary for a three-class model [the "
                   "run's choice].")
@click.option("--calibrate", is_flag=True, default=False,
              help="First choose the post-processing (threshold, min size, split) that scores best on these "
                   "labelled images and write it into the run folder, as fit does on its validation images.")
@engine_option
@click.option("--diameter", type=DIAMETER, default=None,
              help="Typical diameter (px) of the objects in these images: resized to what the model learned, as "
                   "predict --diameter does [as they are].")
@user_errors
def evaluate(model_path, data_dir, out_dir, tile, batch_size, tta, threshold, sweep, min_size, split, calibrate,
             engine, precision, diameter):
    """Pixel error, ISBI 2012 Rand / warping error, V_Rand, V_Info, adapted Rand, IoU, Dice, SEG."""
    from keras_unet import data, inference, runs
    from keras_unet.files import ensure_writable_folder

    if calibrate and diameter:
        raise InputError("--calibrate records sizes at the model's own scale; leave out --diameter (or fine-tune "
                         "on these images with fit --from)")
    if diameter == "auto":
        raise InputError("evaluate takes --diameter in px (the same for every image); --diameter auto is for "
                         "predict, the widget and keras_unet.segment")
    if out_dir:
        ensure_writable_folder(out_dir)
    predictor = predictor_of(model_path, threshold, min_size, split, diameter)
    model, scale = predictor.model, predictor.postprocessing.scale
    pairs = data.find_pairs(data_dir)
    asked = engine, precision

    def backend(handle, rest):
        """One engine and precision for each network of the evaluation, resolved on the first of
        ``rest`` (the pairs from its first image on)."""
        return inference.job_backend(handle.model, [image for image, _ in rest], tile=tile, batch_size=batch_size,
                                     tta=tta, engine=asked[0], precision=asked[1],
                                     scale=handle.postprocessing.scale)

    engine, precision = backend(predictor, pairs)
    backends = {predictor.name: (engine, precision)}  # a partner's resolved when it takes its first image
    failed = []  # pairs that cannot be used: each named, the rest evaluated
    pages = None  # predicted once for the search and the scores where --calibrate needs both
    if calibrate:
        run = predictor.calibration_run(model_path)  # refused before any work where there is none
        with click.progressbar(pairs, label="predicting") as bar:
            pages = [page for pair in bar
                     for page in inference.predicted_pages(model, [pair], tile, batch_size, tta, engine=engine,
                                                           scale=scale, precision=precision, problems=failed)]
        chosen = predictor.calibrate(pages, data_dir)
        click.echo(f"calibrated on {chosen['images']} page(s) of {data_dir}: DSB score {chosen['value']:.4f} "
                   f"({chosen['default_value']:.4f} with argmax) -> {runs.run_file(run.folder, runs.CONFIG)}")
        predictor = predictor_of(model_path, threshold, min_size, split)  # the options given over the new choice
    chosen = predictor.postprocessing
    threshold, min_size, split = chosen.threshold, chosen.min_size, chosen.split
    rows, partners_used = [], {}
    with click.progressbar(pairs if pages is None else pages, label="evaluating") as bar:
        for i, item in enumerate(bar):
            # a shipped model's partner takes the images of its kind, as in predict
            handle = predictor if pages is not None else predictor.for_file(item[0])
            if handle is not predictor:
                partners_used[handle.name] = handle
                if handle.name not in backends:
                    backends[handle.name] = backend(handle, pairs[i:])
            engine, precision = backends[handle.name]
            for page in ([item] if pages is not None else
                         inference.predicted_pages(handle.model, [item], tile, batch_size, tta, engine=engine,
                                                   scale=handle.postprocessing.scale, precision=precision,
                                                   problems=failed)):
                rows.append(inference.evaluate_page(page, handle.postprocessing, sweep=sweep,
                                                    warn=lambda message: click.echo(f"\nwarning: {message}", err=True)))
    if not rows:
        _fail_partly(failed, len(pairs))
    rows.append(inference.mean_row(rows))
    keys = [k for k in rows[0] if k != "image"]
    click.echo(f"protocol: {'argmax' if threshold is None else f'object where p >= {threshold:g}'}, {tta} view(s), "
               f"objects under {min_size} px dropped, split {split}"
               + ("; swept_*: best over thresholds 0.0-1.0 on these labels (the challenge's protocol)" if sweep else ""))
    for partner in partners_used.values():
        click.echo(f"images of a {next(k for k, n in predictor.partners.items() if n == partner.name)} background: "
                   f"{partner.name}, {partner.postprocessing.described()}")
    width = max(len(r["image"]) for r in rows)
    click.echo(f"{'image':<{width}}  " + "  ".join(f"{k:>13}" for k in keys))
    for row in rows:
        click.echo(f"{row['image']:<{width}}  " + "  ".join(f"{row[k]:>13.5f}" for k in keys))
    if out_dir:
        settings = {"tile": tile, "tta": tta, "threshold": threshold, "batch_size": batch_size, "sweep": sweep,
                    "min_size": min_size, "split": split}
        written = inference.write_metrics(Path(out_dir), rows, model=model_path, data=data_dir, settings=settings)
        click.echo("  -> " + ", ".join(str(p) for p in written))
    _fail_partly(failed, len(pairs))


# -- inspect-data ------------------------------------------------------------------------------


@main.command("inspect-data")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("--out", "png_path", type=click.Path(dir_okay=False), default="augmented.png", show_default=True,
              help="PNG grid of augmented samples with their weight maps.")
@click.option("--tile", type=int, default=252, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mask-kind", type=click.Choice(["auto", "binary", "instance", "classes"]), default="auto",
              show_default=True, help="How to read masks (as for fit).")
@click.option("--classes", "n_classes", type=click.IntRange(min=2), default=2, show_default=True)
@click.option("--stain-jitter", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Draw the samples with fit's --stain-jitter (colour images' stains jittered).")
@click.option("--zoom", type=click.FloatRange(1.0, 4.0), default=1.0, show_default=True,
              help="Draw the samples with fit's --zoom (tiles zoomed by up to this factor either way).")
@user_errors
def inspect_data(data_dir, png_path, tile, samples, seed, mask_kind, n_classes, stain_jitter, zoom):
    """Check a dataset (counts, sizes, mask kinds, class frequencies, what fit would refuse) and
    draw augmented samples."""
    from keras_unet import augment, data, pipeline, plots, synthetic
    from keras_unet.files import ensure_writable_folder

    ensure_writable_folder(Path(png_path).parent)
    params = data.WeightParams(mask_kind=mask_kind, n_classes=n_classes)
    dataset = data.load_dataset(data_dir, params) if data_dir else synthetic.as_dataset()
    for line in dataset.summary() if len(dataset) else []:
        click.echo(line)
    for problem in dataset.problems:
        click.echo(f"problem: {problem}")
    if dataset.problems:
        raise InputError(f"{len(dataset.problems)} problem(s) found: keras-unet fit would refuse this dataset")
    data.check_tile_fits(dataset, tile)
    batch = next(iter(pipeline.training_dataset(dataset, tile, samples, params=augment.AugmentParams(stain=stain_jitter, zoom=zoom),
                                                value_range=dataset.input_range(), seed=seed)))
    path = plots.augmented_grid(batch[0].numpy(), batch[1].numpy(), png_path)
    click.echo(f"no problems found; augmented samples -> {path}")


# -- export ------------------------------------------------------------------------------------


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "tflite", "onnx", "bioimageio"]), required=True,
              help="TF Serving SavedModel, TFLite file, ONNX files (tiles and any-size; [onnx] extra) or a "
                   "bioimage.io package for deepImageJ / ilastik / napari ([bioimageio] extra).")
@click.option("--sample", type=click.Path(exists=True, dir_okay=False), default=None,
              help="bioimage.io: an image for the package's test tensors and cover [a synthetic one].")
@click.option("--author", "authors", multiple=True, help="bioimage.io: author name(s) [your user name].")
@click.option("--license", "license_id", default="CC-BY-4.0", show_default=True, help="bioimage.io: SPDX licence id.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="exported", show_default=True)
@click.option("--name", default="unet", show_default=True, help="Model name (TF Serving folder).")
@click.option("--version", "version", type=int, default=None, help="TF Serving version [next free number].")
@click.option("--quantize", type=click.Choice(["none", "float16", "dynamic"]), default="none", show_default=True)
@click.option("--tile", type=int, default=None, help="Tile size of the whole-image signature / fixed TFLite input.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Reload the export in a fresh process and compare with the Keras model.")
@user_errors
def export(model_path, fmt, out_dir, name, version, quantize, tile, verify, sample, authors, license_id):
    """Export a trained model: TF Serving SavedModel, TFLite file or ONNX files."""
    from keras_unet import export as exporters
    from keras_unet import sizes
    from keras_unet.files import ensure_writable_folder, remove_stale_temporaries
    from keras_unet.model import unet_config

    model_file = exporters.resolve_model(model_path)  # a missing model is named before anything else
    form = exporters.FORMATS[fmt]
    form.require()  # a missing extra is named before any work
    predictor = predictor_of(model_file)  # once: the checks, the export and its verification use it
    model, chosen = predictor.keras_model, predictor.postprocessing  # exporters read the Keras model
    if tile is not None:  # before any folder is made
        config = unet_config(model)
        sizes.check_input_size(tile, config["depth"], config["padding"])
    ensure_writable_folder(out_dir)
    for folder in (Path(out_dir), Path(out_dir) / name):
        remove_stale_temporaries(folder)  # left by an export that was killed
    if form.objects and chosen.in_tf_ops():  # its objects made in TF ops, as predict's with the run's choice
        click.echo(f"warning: {chosen.in_tf_ops()}", err=True)
    for kind, partner in predictor.partners.items():  # predict's per-image choice is not in the exported file
        click.echo(f"note: predict {predictor.name} hands images of a {kind} background to {partner}; this export "
                   f"is {predictor.name} alone (export {partner} for those images)", err=True)
    settings = exporters.Settings(name=name, version=version, tile=tile, quantize=quantize, postprocessing=chosen,
                                  sample=_read_sample(sample), authors=list(authors) or None, license=license_id)
    path = exporters.export(model, fmt, out_dir, settings)
    click.echo(f"exported -> {', '.join(map(str, path)) if isinstance(path, list) else path}")
    if verify and form.check is not None:
        click.echo(form.check(path))
        return
    if verify:
        report = exporters.verify(model, path, fmt, quantize, tile=tile, postprocessing=chosen)
        tolerance = report.pop("tolerance")
        for check, (diff, flips) in report.items():
            if check.startswith("instances"):
                click.echo(f"verified in a fresh process: {check}: the objects of predict --format instances, "
                           f"{flips} pixel(s) differ")
                continue
            click.echo(f"verified in a fresh process: {check}: max |export - keras| = {diff:.2e} "
                       f"(tolerance {tolerance:.0e}), {flips} label(s) differ")


def _read_sample(path):
    """bioimage.io's --sample image, read (None without one)."""
    from keras_unet import data

    return data.read_image(path) if path else None


if __name__ == "__main__":
    main()
