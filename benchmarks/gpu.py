"""The paper network on a GPU: training samples/s, segmentation time, peak memory, against the
card's dense peak. Backend-agnostic Keras: TensorFlow where it is installed (``[gpu]`` extra),
JAX where it is not (``KERAS_BACKEND=jax``; the lent GPU machines have JAX but no TensorFlow).

    KERAS_BACKEND=jax python benchmarks/gpu.py --out DIR      # writes DIR/gpu.md and DIR/gpu.json

Training: the paper's network (base 64, 572 px tiles, weighted cross-entropy, SGD momentum 0.99)
on fixed synthetic tiles, batch 1 and 4, float32 and mixed float16, compiled (XLA) and not.
Segmentation: overlap-tile prediction of a 512x512 and a 2048x2048 image (the paper: "less than a
second" for 512x512 on a 2015 GPU), after a warm-up of the same shapes.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import keras
import numpy as np

from keras_unet import losses, synthetic, tiling, weights
from keras_unet.model import unet

MEMORY_MB = 60_000  # the tile budget on a GPU of 80-141 GB
FORWARD_GFLOP_572 = 300.9  # benchmarks/results/inference.md: one 572 px tile, computed from the layers
# Dense tensor-core peaks (TFLOP/s) of the SXM cards, NVIDIA data sheets: bf16/fp16 and tf32.
PEAKS = {"H100": {"bf16": 989.4, "tf32": 494.7}, "H200": {"bf16": 989.4, "tf32": 494.7}}


def device_name() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else platform.processor()


def peak_memory_gb() -> float:
    if keras.backend.backend() == "jax":
        import jax

        return (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30


def training_batch(batch: int):
    """Raw-pixel 572 px tiles and (388, 388, 2) targets (class, weight) from the synthetic cells."""
    image, instances = synthetic.sample((572, 572), seed=0)
    target, w = weights.weight_map(instances)
    x = np.repeat(image[None, ..., None].astype(np.float32), batch, axis=0)
    y = np.stack([target[92:480, 92:480].astype(np.float32), w[92:480, 92:480]], -1)
    return x, np.repeat(y[None], batch, axis=0)


def train_rate(batch: int, policy: str, jit: bool, steps: int) -> float:
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = unet()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.99), loss=losses.get_loss("wce"), jit_compile=jit)
    x, y = training_batch(batch)
    for _ in range(3):
        model.train_on_batch(x, y)  # compile and warm up; returns the loss as a number: synchronous
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(loss)
    return batch * steps / seconds


def segment_seconds(model, size: int, max_tile: int, batch: int = 1) -> tuple[float, float, int]:
    """``(best seconds, first call's seconds (compile included), tile)`` of overlap-tile prediction.
    The tile is the largest within the memory budget, capped at ``max_tile``: XLA compiles each tile
    shape once, and a 2236 px shape compiled for minutes (the first run of this benchmark)."""
    image = synthetic.sample((size, size), seed=1)[0].astype(np.float32)
    tile = min(tiling.resolve_tile(model, image.shape, None, batch, MEMORY_MB), max_tile)
    run = lambda: tiling.predict_tiled(model, image, tile=tile, batch_size=batch, memory_mb=MEMORY_MB)
    first = _timed(run)  # warm-up: compiles this tile shape
    return min(_timed(run) for _ in range(3)), first, tile


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--parts", nargs="+", default=["train", "segment"], choices=["train", "segment"])
    parser.add_argument("--max-tile", type=int, default=1084, help="largest segmentation tile (px)")
    args = parser.parse_args()
    card = device_name()
    peaks = next((v for k, v in PEAKS.items() if k in card), None)
    results = {"device": card, "backend": keras.backend.backend(), "keras": keras.__version__, "train": [], "segment": []}
    rows = []
    configs = [(1, "float32", True), (4, "float32", True), (1, "mixed_float16", True), (4, "mixed_float16", True),
               (1, "float32", False)]
    for batch, policy, jit in configs if "train" in args.parts else []:
        rate = train_rate(batch, policy, jit, args.steps if jit else max(args.steps // 6, 5))
        tflops = rate * 3 * FORWARD_GFLOP_572 / 1000  # forward + backward ~ 3 forward passes
        peak = peaks["bf16" if policy != "float32" else "tf32"] if peaks else None
        results["train"].append({"batch": batch, "policy": policy, "xla": jit, "samples_per_s": rate, "tflops": tflops})
        rows.append([f"train, batch {batch}, {policy}, {'XLA' if jit else 'no XLA'}", f"{rate:.1f} tiles/s",
                     f"{tflops:.0f} TFLOP/s" + (f" ({100 * tflops / peak:.0f}% of {peak:.0f})" if peak else "")])
        print(rows[-1], flush=True)
    keras.utils.set_random_seed(0)
    model = unet()
    # Batch 1 only: XLA asked for 129 GiB compiling four 1084 px tiles at once on the H200 (2026-11-26).
    for size, batch in [(512, 1), (2048, 1)] if "segment" in args.parts else []:
        seconds, first, tile = segment_seconds(model, size, args.max_tile, batch)
        results["segment"].append({"size": size, "seconds": seconds, "first_call_seconds": first, "tile": tile,
                                   "batch": batch})
        tiles = tiling.count_tiles((size, size), tile)
        rows.append([f"segment {size}x{size} (float32, {tiles} tile(s) of {tile} px, batch {batch})",
                     f"{seconds:.3f} s (first call, compile included: {first:.1f} s)", "-"])
        print(rows[-1], flush=True)
    results["peak_memory_gb"] = peak_memory_gb()
    rows.append(["peak GPU memory (whole run)", f"{results['peak_memory_gb']:.1f} GB", "-"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    lines = [f"## The paper network on {card} (Keras {keras.__version__}, {keras.backend.backend()} backend)", "",
             f"`KERAS_BACKEND={keras.backend.backend()} python benchmarks/gpu.py` - {time.strftime('%Y-%m-%d')}", "",
             "| measurement | result | compute |", "|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Training FLOPs: 3 x 300.9 GFLOP per 572 px tile; peaks: dense tensor-core bf16/fp16 (mixed) "
              "or tf32 (float32) of the card's data sheet."]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
