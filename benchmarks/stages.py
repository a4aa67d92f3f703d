"""``keras-unet predict nuclei --format instances`` stage by stage, float32 TensorFlow against
``--precision auto`` (bfloat16 where the CPU has it), and end to end with process start.

    python benchmarks/stages.py [--images 120] [--name stages] [--repeat 3]

Images: the 106 held-out DSB2018 images of the shipped model's card (benchmarks/budget.py's split)
and, to make 120, the first of its training images by name; the object scores are over the 106.
Stages (seconds summed over the job, in-process through the CLI): reading, whole-image
normalisation, tiling (padding, cutting tiles, stitching), the network, instances (components,
holes, small objects, borders given back) and writing. Then the same two jobs end to end as a
user runs them, each in a fresh process (``keras-unet predict``), with the objects' F1 @ IoU 0.5
and DSB score against the true masks. ``--repeat N`` runs the three end-to-end jobs N times each,
taking turns (tensorflow float32, auto, auto after a conversion, again), and gives the median and
the range: one run each on a shared 2-core machine moved a ratio by 10 %.
"""
import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import write_table
from budget import split

JOBS = {"tensorflow float32": ["--engine", "tensorflow", "--precision", "float32"],
        "auto": ["--engine", "auto", "--precision", "auto"]}


def timed(seconds: dict, stage: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start
    return wrapper


def stage_seconds(folder: Path, options: list) -> dict:
    """Seconds per stage of one in-process ``predict`` of ``folder`` (the CLI, instrumented)."""
    from click.testing import CliRunner

    from keras_unet import data, engines, inference, normalize, postprocess, tiling
    from keras_unet.cli.main import main

    seconds = defaultdict(float)
    patches = [(data, "read_pages", "reading"), (normalize, "normalize_image", "normalisation"),
               (tiling, "run_tiles", "tiling + network"), (postprocess.PostProcessing, "objects", "instances"),
               (inference, "write_prediction", "writing")]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    forward = engines.forward_function
    try:
        for module, name, stage in patches:
            setattr(module, name, timed(seconds, stage, getattr(module, name)))

        def timed_forward(*args, **kwargs):
            return timed(seconds, "network", forward(*args, **kwargs))

        engines.forward_function = timed_forward
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = CliRunner().invoke(main, ["predict", "nuclei", str(folder), "--format", "instances", "--out", out,
                                               *options], catch_exceptions=False)
            seconds["whole job"] = time.perf_counter() - start
        assert result.exit_code == 0, result.output
        engine = result.output.split("tiles, ")[1].split(")")[0]
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
        engines.forward_function = forward
    seconds["tiling"] = seconds.pop("tiling + network") - seconds["network"]
    # reading ahead and writing behind run in background threads beside the network: the stages
    # can add up to more than the whole job, and then nothing is left for "other"
    seconds["other"] = max(seconds["whole job"] - sum(v for k, v in seconds.items() if k != "whole job"), 0.0)
    return {"engine": engine, **seconds}


def end_to_end(folder: Path, options: list, out: Path, cache: Path | None = None) -> float:
    """Wall seconds of ``keras-unet predict nuclei folder --format instances`` in a fresh process
    (``cache``: its own engine cache, e.g. an empty one)."""
    command = [str(Path(sys.executable).parent / "keras-unet"), "predict", "nuclei", str(folder), "--format",
               "instances", "--out", str(out), *options]
    env = {**os.environ, **({"KERAS_UNET_CACHE": str(cache)} if cache else {})}
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    print(done.stdout.splitlines()[0], file=sys.stderr)
    return time.perf_counter() - start


def scores(out: Path, tests: list) -> tuple[float, float]:
    from keras_unet import data, metrics

    rows = [metrics.evaluate_objects(data.read_image(out / f"{image.stem}_instances.tif").astype(np.int64),
                                     data.read_image(mask).astype(np.int64)) for image, mask in tests]
    return float(np.mean([r["f1"] for r in rows])), float(np.mean([r["dsb_score"] for r in rows]))


def convert_once() -> None:
    """What a job long enough to pay for a conversion leaves in the cache: the shipped model's
    network and its partner's converted to ONNX (keras_unet.engines) and recorded
    (keras_unet.converted), so auto measures OpenVINO and ONNX Runtime too, and a job after the
    measurement starts without TensorFlow."""
    from keras_unet import engines, predictor, tiling

    handle = predictor.Predictor.of("nuclei")
    engines.onnx_file(tiling.prediction_network(handle.model))
    predictor.remember_converted(handle.path, handle.model)
    handle.convert_partners()
    predictor._converted_model.cache_clear()  # the in-process job after it opens the model as a new process would


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--name", default="stages")
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs of each job, taking turns")
    args = parser.parse_args()
    from keras_unet.precision import bfloat16_flags

    train_pairs, tests = split()
    pairs = (tests + train_pairs)[: args.images]
    work = Path(tempfile.mkdtemp(prefix="stages-"))
    # a cache of the benchmark's own, empty at the start: what the user's cache holds (a network
    # converted by an earlier job) does not decide the auto column
    os.environ["KERAS_UNET_CACHE"] = str(work / "cache")
    folder = work / "images"
    folder.mkdir()
    for image, _ in pairs:
        (folder / image.name).symlink_to(image)
    rows, ends, stages = [], {}, {}
    try:
        # a first use on this machine: nothing measured or converted yet
        ends["cold"] = end_to_end(folder, JOBS["auto"], work / "cold", cache=work / "empty-cache")
        for name, options in JOBS.items():
            stages[name] = stage_seconds(folder, options)
            ends[name] = (end_to_end(folder, options, work / name.replace(" ", "_")),
                          *scores(work / name.replace(" ", "_"), tests))
        (work / "cache").mkdir(exist_ok=True)  # a job too short to measure leaves none
        shutil.copytree(work / "cache", work / "cache-measured")  # auto's cache before any conversion
        convert_once()
        ends["converted, first"] = end_to_end(folder, JOBS["auto"], work / "first")  # measures the converted engines
        stages["converted"] = stage_seconds(folder, JOBS["auto"])
        ends["converted"] = (end_to_end(folder, JOBS["auto"], work / "converted"), *scores(work / "converted", tests))
        names = ["tensorflow float32", "auto", "converted"]
        turns = {name: [ends[name][0]] for name in names}
        for turn in range(args.repeat - 1):  # taking turns, so a change in the machine's load falls on all three
            for name, options, cache in [(names[0], JOBS["tensorflow float32"], None),
                                         (names[1], JOBS["auto"], work / "cache-measured"),
                                         (names[2], JOBS["auto"], work / "cache")]:
                turns[name].append(end_to_end(folder, options, work / f"turn{turn}-{names.index(name)}", cache=cache))
        for name in names:
            ends[name] = (float(np.median(turns[name])), *ends[name][1:])
        order = ["reading", "normalisation", "tiling", "network", "instances", "writing", "other", "whole job"]
        f32 = stages["tensorflow float32"]
        for stage in order:
            ratios = [f"{f32[stage] / stages[n][stage]:.2f}x" if stages[n][stage] > 0 else "-" for n in names[1:]]
            rows.append([stage] + [f"{stages[n][stage]:.2f}" for n in names] + [" / ".join(ratios)])
        base = ends["tensorflow float32"][0]
        spread = (lambda n: f" ({min(turns[n]):.1f}-{max(turns[n]):.1f})") if args.repeat > 1 else (lambda n: "")
        rows.append([f"end to end, fresh process (s){f', median of {args.repeat} (range)' if args.repeat > 1 else ''}"]
                    + [f"{ends[n][0]:.1f}{spread(n)}" for n in names]
                    + [" / ".join(f"{base / ends[n][0]:.2f}x" for n in names[1:])])
        rows.append(["end to end, first use (s): empty cache / first job after the conversion", "",
                     f"{ends['cold']:.1f}", f"{ends['converted, first']:.1f}",
                     f"{base / ends['cold']:.2f}x / {base / ends['converted, first']:.2f}x"])
        rows.append([f"F1 @ IoU 0.5 / DSB score ({len(tests)} held-out)"]
                    + [f"{ends[n][1]:.4f} / {ends[n][2]:.4f}" for n in names]
                    + [" / ".join(f"F1 {ends[n][1] - ends[names[0]][1]:+.4f}" for n in names[1:])])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(args.name, f"predict nuclei --format instances on {len(pairs)} DSB2018 images, stage by stage",
                f"python benchmarks/stages.py --images {args.images}" + (f" --repeat {args.repeat}" if args.repeat > 1 else ""),
                ["stage", "tensorflow float32 (s)", f"auto: {stages['auto']['engine']} (s)",
                 f"auto, network converted before: {stages['converted']['engine']} (s)", "speed-up"], rows,
                f"bfloat16 flags of this CPU: {bfloat16_flags()}. In-process through the CLI (the model loaded and "
                "the engine chosen once per job), stage seconds summed over the job: tiling is padding, cutting and "
                "stitching tiles around the network; other is the CLI, model loading, checks, the engine choice and "
                "TensorFlow's graph building (0 where the stages overlap: the next file is read and the last one "
                "post-processed and written in background threads while the network runs, so stage sums can pass "
                "the whole job's time). auto: the engine and precision `--engine auto --precision auto` chose "
                "with this job's measurement cached and no conversion (the job's TensorFlow time is under the 60 s a "
                "conversion must pay for); converted before: after a longer job converted the networks once (the "
                "ONNX files cached and recorded, keras_unet.converted), so auto measured OpenVINO and ONNX Runtime "
                "too, and a fresh process runs them without importing TensorFlow. End to end: a fresh "
                "`keras-unet predict` process each, with the cache as the row says.")


if __name__ == "__main__":
    main()
