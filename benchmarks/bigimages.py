"""Big images: peak memory and time against image size for block-by-block prediction of an
OME-Zarr mosaic (probabilities and objects, stitched), the share of the stitching, and images per
minute on a LocalCluster of 1 and 2 workers.

    python benchmarks/bigimages.py --sizes 4096 8192 16384 [--block 1024] [--images 16]

Each size runs in a fresh process (``keras-unet predict MODEL mosaic.ome.zarr --format
instances --block B`` through the library, timed in its two phases) whose resident memory is
sampled every 0.1 s by psutil; the mosaic is written band by band (never whole in memory) from
synthetic cells. The model is the real network at 4 base filters (random weights), so the
numbers are about the machinery, not the network's cost, which scales with pixels either way.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_table

CHILD = r"""
import json, sys, time
from keras_unet import jobs
from keras_unet.postprocess import PostProcessing
from keras_unet.predictor import Options
request = jobs.Request(out_dir=".", kind="instances", block=int(sys.argv[3]), postprocessing=PostProcessing(min_size=10),
                       options=Options(tile=int(sys.argv[4]), engine="tensorflow", precision="float32"))
start, timings = time.perf_counter(), {}
jobs.predict_big(sys.argv[1], jobs.Source(sys.argv[2]), sys.argv[5], request, timings=timings)
print(json.dumps({**timings, "total": time.perf_counter() - start}))
"""


def tiny_model(path: Path) -> Path:
    import keras

    from keras_unet.model import inference_model, unet

    keras.utils.set_random_seed(3)
    inference_model(unet(base_filters=4, dropout=0.0, input_range=None), (1.0, 99.8)).save(path)
    return path


def write_mosaic(path: Path, size: int, block: int = 1024) -> Path:
    """A ``size`` x ``size`` uint8 OME-Zarr (NGFF 0.5) of synthetic cells, written band by band."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    from keras_unet import synthetic

    tiles = [synthetic.sample((block, block), seed=s)[0] for s in range(4)]  # uint8 already
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = root.create_array("0", shape=(size, size), chunks=(block, block), dtype="uint8")
    for r in range(0, size, block):
        band = np.concatenate([tiles[(r // block + c // block) % 4] for c in range(0, size, block)], axis=1)
        array[r : r + block] = band[: min(block, size - r)]
    write_multiscales_metadata(root, datasets=[{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 1.0]}]}], fmt=FormatV05(), axes=["y", "x"])
    return path


def peak_rss(command: list) -> tuple[float, str]:
    """``(peak resident MB of the process and its children, its stdout)``."""
    import psutil

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(True)))
        except psutil.Error:
            pass
        time.sleep(0.1)
    return peak / 2**20, process.stdout.read()


def per_minute(model: Path, folder: Path, workers: int, out: Path) -> float:
    from distributed import LocalCluster

    from keras_unet import jobs
    from keras_unet.predictor import Options

    def instances(out: Path) -> jobs.Request:
        return jobs.Request(out_dir=str(out), kind="instances", options=Options(engine="tensorflow", precision="float32"))

    files = sorted(folder.glob("*.png"))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        client = jobs.connect(cluster.scheduler_address)
        jobs.predict_files(model, files[:workers], instances(out / "warm"), client=client)
        start = time.perf_counter()
        jobs.predict_files(model, files, instances(out / str(workers)), client=client)
        seconds = time.perf_counter() - start
        client.close()
    return 60 * len(files) / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=540)
    parser.add_argument("--images", type=int, default=16, help="images (512 px) for the images-per-minute rows")
    parser.add_argument("--work", default=None, help="scratch folder [a temporary one]")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bigimages-"))
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model(work / "tiny.keras")
    rows = []
    for size in args.sizes:
        mosaic = write_mosaic(work / f"mosaic{size}.ome.zarr", size, args.block)
        out = work / f"out{size}.ome.zarr"
        peak, printed = peak_rss([sys.executable, "-c", CHILD, str(model), str(mosaic), str(args.block),
                                  str(args.tile), str(out)])
        timings = json.loads(printed.strip().splitlines()[-1])
        rows.append([f"{size} x {size}", f"{size * size / 1e6:.0f}", f"{peak:.0f}", f"{timings['predict']:.0f}",
                     f"{timings['stitch']:.0f}", f"{timings['stitch'] / timings['predict']:.2f}",
                     f"{size * size / 1e6 / timings['total'] * 60:.0f}"])
        print(rows[-1], file=sys.stderr, flush=True)
        import shutil

        shutil.rmtree(mosaic), shutil.rmtree(out)
    from keras_unet import data, synthetic

    folder = work / "images"
    for i in range(args.images):
        data.write_image(folder / f"img{i:03d}.png", synthetic.sample((512, 512), seed=100 + i)[0])
    scaling = {w: per_minute(model, folder, w, work) for w in (1, 2)}
    notes = (f"Block {args.block} px, tile {args.tile}, a depth-5 network of 4 base filters (random weights). "
             f"Peak memory: the whole process (TensorFlow's ~0.5 GB included), sampled every 0.1 s. "
             f"Images per minute, {args.images} images of 512 px, one task each, LocalCluster with threads_per_worker=1: "
             f"1 worker {scaling[1]:.1f}, 2 workers {scaling[2]:.1f} ({scaling[2] / scaling[1]:.2f}x). The tasks are "
             "independent (no data moves but paths), so on N machines images per minute scale with the machines "
             "as long as the store they read and write keeps up.")
    write_table("bigimages", "Big images block by block: memory and time against size",
                f"python benchmarks/bigimages.py --sizes {' '.join(map(str, args.sizes))} --block {args.block}",
                ["image", "Mpx", "peak RSS, MB", "predict, s", "stitch, s", "stitch / predict", "Mpx / min"], rows,
                notes)


if __name__ == "__main__":
    main()
