"""Long jobs under faults, too long for the test suite (tests/test_faults.py and
tests/test_bigimages.py have the short ones):

1. a Dask worker lost mid-job: on a LocalCluster of 2 worker processes, one is SIGKILLed by its
   pid while blocks (a big OME-Zarr image) and files (a collection) are in flight; the job must
   finish on the other and equal a clean run pixel for pixel;
2. the whole ``keras-unet predict`` killed (SIGKILL) at random moments during a collection and a
   big image, then run again with ``--skip-done`` until it finishes: equal to a clean run, no
   temporary or partial left;
3. what a kill at 90% of a big image costs: the resumed run against the run from zero (what
   ``predict`` did before finished blocks counted: the partial store removed).

    python benchmarks/faults.py [--size 3072] [--block 512] [--kills 3]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_table
from bigimages import tiny_model, write_mosaic

CLI = [sys.executable, "-m", "keras_unet.cli.main"]


def outputs_equal(a: Path, b: Path) -> tuple[bool, str]:
    """Every output of folder ``a`` equals ``b``'s (TIFFs pixel for pixel, stores array by
    array), and neither holds a temporary or partial."""
    import zarr

    from keras_unet import data

    names_a = sorted(p.name for p in a.iterdir())
    names_b = sorted(p.name for p in b.iterdir())
    if names_a != names_b:
        return False, f"files differ: {sorted(set(names_a) ^ set(names_b))}"
    for name in names_a:
        if name.startswith("."):
            return False, f"left behind: {name}"
        if name.endswith(".zarr"):
            for array in ("0", "labels/instances/0"):
                left, right = (np.asarray(zarr.open_array(str(f / array), mode="r")) for f in (a / name, b / name))
                if not np.array_equal(left, right):
                    return False, f"{name}/{array} differs"
        elif not np.array_equal(data.read_image(a / name), data.read_image(b / name)):
            return False, f"{name} differs"
    return True, "equal"


def predict(model: Path, inputs: list, out: Path, *extra) -> list:
    return CLI + ["predict", str(model), *map(str, inputs), "--format", "instances", "--tile", "220",
                  "--engine", "tensorflow", "--precision", "float32", "--out", str(out), *map(str, extra)]


def lost_worker(model: Path, big: Path, files: Path, work: Path, block: int) -> list:
    """Rows of part 1: a worker SIGKILLed once tasks are running, on the big image and the files."""
    from distributed import Client, LocalCluster

    rows = []
    for label, inputs, extra in [("big image", [big], ["--block", block]), ("collection", [files], [])]:
        clean = work / f"clean-{label}"
        subprocess.run(predict(model, inputs, clean, *extra), check=True, capture_output=True)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            client = Client(cluster)
            out = work / f"lost-{label}"
            job = subprocess.Popen(predict(model, inputs, out, *extra, "--scheduler", cluster.scheduler_address),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            pids = list(client.run(os.getpid).values())
            busy = time.monotonic() + 600
            while time.monotonic() < busy and not any(client.processing().values()):
                time.sleep(0.05)
            time.sleep(1.0)  # tasks in flight, some finished
            os.kill(pids[0], signal.SIGKILL)
            output, _ = job.communicate(timeout=1800)
            client.close()
        same, why = outputs_equal(clean, out) if job.returncode == 0 else (False, output.strip().splitlines()[-1])
        rows.append([f"worker {pids[0]} SIGKILLed mid-job ({label}, 2 workers)", job.returncode,
                     "yes" if same else f"NO: {why}"])
    return rows


def killed_at_random(model: Path, inputs: list, clean: Path, out: Path, kills: int, extra: list,
                     seed: int) -> tuple[int, bool, str, float]:
    """``predict`` SIGKILLed ``kills`` times at random moments, then run to the end with --skip-done."""
    rng = random.Random(seed)
    start = time.monotonic()
    full = subprocess.run(predict(model, inputs, clean, *extra), check=True, capture_output=True)
    clean_seconds = time.monotonic() - start
    del full
    done = 0
    for _ in range(kills):
        job = subprocess.Popen(predict(model, inputs, out, *extra, "--skip-done"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, 1.0) * clean_seconds)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            done += 1
        job.wait()
    final = subprocess.run(predict(model, inputs, out, *extra, "--skip-done"), capture_output=True, text=True)
    same, why = outputs_equal(clean, out) if final.returncode == 0 else (False, final.stdout[-200:])
    return done, same, why, clean_seconds


def kill_at(model: Path, big: Path, out: Path, block: int, share: float, n_blocks: int) -> None:
    """Run predict on ``big`` and SIGKILL it once ``share`` of its blocks are finished."""
    from keras_unet import jobs

    partial = jobs.partial_path(jobs.result_path(out, big))
    job = subprocess.Popen(predict(model, [big], out, "--block", block), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    markers = partial / jobs.MARKERS
    while job.poll() is None:
        if markers.is_dir() and len(list(markers.iterdir())) >= share * n_blocks:
            os.killpg(job.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    job.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=3072, help="side of the big image (px)")
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    from keras_unet import data, jobs, synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_model(work / "tiny.keras")
        big = write_mosaic(work / "big.ome.zarr", args.size, block=args.block)
        files = work / "files"
        for seed in range(args.files):
            data.write_image(files / f"cells{seed:03d}.png", synthetic.sample((384, 384), seed=seed)[0])
        rows += lost_worker(model, big, files, work, args.block)
        for label, inputs, extra in [("collection", [files], []), ("big image", [big], ["--block", args.block])]:
            kills, same, why, _ = killed_at_random(model, inputs, work / f"clean-r-{label}", work / f"killed-{label}",
                                                   args.kills, extra, seed=len(rows))
            rows.append([f"`predict` SIGKILLed {kills} time(s) at random moments ({label}), then --skip-done", 0,
                         "yes" if same else f"NO: {why}"])
        n_blocks = jobs.block_count((args.size, args.size), args.block)
        times = {}
        for how in ("from its finished blocks", "from zero (partial removed: before blocks counted)"):
            out = work / f"ninety-{len(times)}"
            kill_at(model, big, out, args.block, 0.9, n_blocks)
            if how.startswith("from zero"):
                shutil.rmtree(jobs.partial_path(jobs.result_path(out, big)))
            start = time.monotonic()
            subprocess.run(predict(model, [big], out, "--block", args.block, "--skip-done"), check=True,
                           capture_output=True)
            times[how] = time.monotonic() - start
        start = time.monotonic()
        subprocess.run(predict(model, [big], work / "whole", "--block", args.block), check=True, capture_output=True)
        whole = time.monotonic() - start
        for how, seconds in times.items():
            rows.append([f"a kill at 90% of {n_blocks} blocks, resumed {how}", 0,
                         f"{seconds:.1f} s = {seconds / whole:.2f} of the uninterrupted job ({whole:.1f} s)"])
    notes = (f"Big image: {args.size}x{args.size} px synthetic cells (OME-Zarr), --block {args.block}; collection: "
             f"{args.files} images of 384x384; a depth-5 base-4 network, --tile 220, TensorFlow float32, instances. "
             "'equal': every output pixel for pixel and no temporary or partial left. Process start and the "
             "TensorFlow import (a few seconds) are in every time.")
    path = write_table("faults", "Long jobs under faults", " ".join(["python benchmarks/faults.py"] + sys.argv[1:]),
                       ["fault", "exit code", "outputs equal to a clean run"], rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
