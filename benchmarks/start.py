"""A one-image ``keras-unet predict nuclei --format instances`` end to end in a fresh process, where
the process start is most of the job: TensorFlow float32, ``--engine openvino`` with the network
converted but the model file not recorded (the Keras model loaded, as before keras_unet.converted),
and ``--engine openvino`` / ``auto`` after a job recorded it (no TensorFlow imported); and ``auto``
where nothing was converted (a cache of its own, empty at the first turn: the job too short to
convert runs TensorFlow float32, its length timed at the first turn and kept for the next).

    python benchmarks/start.py [--repeat 3] [--name start]

One fluorescence DSB2018 image (the first held-out one of benchmarks/budget.py's split); each job
is run ``--repeat`` times taking turns, and the median is given with the range. The labels of every
job are compared with TensorFlow float32's.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_table
from budget import split

JOBS = {"tensorflow float32": ("--engine", "tensorflow", "--precision", "float32"),
        "auto, nothing converted": ("--engine", "auto", "--precision", "auto"),
        "openvino, converted, model loaded": ("--engine", "openvino", "--precision", "auto"),
        "openvino, converted and recorded": ("--engine", "openvino", "--precision", "auto"),
        "auto, converted and recorded": ("--engine", "auto", "--precision", "auto")}


def run(folder: Path, options, out: Path, cache: Path) -> tuple[float, str]:
    command = [str(Path(sys.executable).parent / "keras-unet"), "predict", "nuclei", str(folder), "--format",
               "instances", "--out", str(out), *options]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True,
                          env={**os.environ, "KERAS_UNET_CACHE": str(cache)})
    line = next(l for l in done.stdout.splitlines() if l.startswith("[1/1]"))
    return time.perf_counter() - start, line[line.rindex(", ") + 2:].rstrip(")")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="start")
    args = parser.parse_args()
    from keras_unet import data, engines, predictor, tiling

    _, tests = split()
    work = Path(tempfile.mkdtemp(prefix="start-"))
    try:
        folder = work / "image"
        folder.mkdir()
        image = next(p for p, _ in tests if data.read_image(p).mean() < 100)  # a dark background: nuclei takes it
        (folder / image.name).symlink_to(image)
        converted, recorded, plain = work / "converted", work / "recorded", work / "plain"
        os.environ["KERAS_UNET_CACHE"] = str(converted)
        handle = predictor.Predictor.of("nuclei")
        engines.onnx_file(tiling.prediction_network(handle.model))  # converted, nothing recorded
        shutil.copytree(converted, recorded)
        predictor.remember_converted(handle.path, handle.model)  # what a converted job records
        shutil.move(str(converted / "models"), str(recorded / "models"))
        times, engine, labels = {name: [] for name in JOBS}, {}, {}
        for turn in range(args.repeat):
            for number, (name, options) in enumerate(JOBS.items()):
                cache = (converted if "loaded" in name or name.startswith("tensorflow") else
                         plain if "nothing" in name else recorded)
                out = work / f"out{turn}-{number}"
                seconds, engine[name] = run(folder, options, out, cache)
                times[name].append(seconds)
                labels[name] = data.read_image(next(out.iterdir()))
            shutil.rmtree(converted / "models", ignore_errors=True)  # stays "not recorded"
        base = float(np.median(times["tensorflow float32"]))
        rows = [[name, engine[name], f"{np.median(times[name]):.2f} ({min(times[name]):.2f}-{max(times[name]):.2f})",
                 f"{base / np.median(times[name]):.2f}x",
                 "same" if np.array_equal(labels[name], labels["tensorflow float32"]) else
                 f"{np.mean(labels[name] != labels['tensorflow float32']):.2%} of pixels differ"] for name in JOBS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(args.name, "One-image predict nuclei end to end, fresh process: the start with and without TensorFlow",
                f"python benchmarks/start.py --repeat {args.repeat}",
                ["job", "ran", f"seconds, median of {args.repeat} (range)", "vs tensorflow float32",
                 "labels against tensorflow float32"], rows,
                f"{image.name}, {data.read_image(image).shape[1]}x{data.read_image(image).shape[0]} px. Converted: "
                "the network's ONNX file cached; recorded: a job on a converted engine also left the model file's "
                "record (keras_unet.converted), so the process imports neither TensorFlow nor Keras. Nothing converted: a "
                "cache of its own, empty at the first turn.")


if __name__ == "__main__":
    main()
