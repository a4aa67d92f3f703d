"""Every export format of one trained model, in one run: file size, accuracy against the Keras
model on real EM tiles, and time per 572 px tile.

    python benchmarks/export.py RUN_DIR        # e.g. the run benchmarks/isbi2012.py trained

Accuracy: max |p_export - p_keras| and the share of pixels whose label flips, over 572 px tiles of
ISBI 2012 slices 25-29 (mirror-padded from 512 px). Time: best of 3 for one 572 px tile on this
machine's CPU (TF, ai-edge-litert with XNNPack, onnxruntime; each with the process's default threads).
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import best_of, write_table
from keras_unet import data, export, inference

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "train" / "image"
TILE = 572


def tiles() -> np.ndarray:
    pad = (TILE - 512) // 2
    images = [data.read_image(DATA / f"{i}.png").astype(np.float32) for i in range(25, 30)]
    return np.stack([np.pad(im, pad, mode="reflect")[..., None] for im in images])


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    args = parser.parse_args()
    model = inference.load_model(args.run)
    batch = tiles()
    expected = np.concatenate([np.asarray(model.predict_on_batch(t[None])) for t in batch])
    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    rows = []
    try:
        runners = {"keras (reference)": (None, lambda x: np.asarray(model.predict_on_batch(x)))}
        start = time.perf_counter()
        saved = export.export_savedmodel(model, work / "sm", tile=TILE)
        seconds = {"savedmodel": time.perf_counter() - start}
        import tensorflow as tf

        serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
        runners["SavedModel serving_default"] = (saved, lambda x: serve(image=tf.constant(x))["probabilities"].numpy())
        from ai_edge_litert.interpreter import Interpreter

        for quantize in ("none", "float16", "dynamic"):
            start = time.perf_counter()
            path = export.export_tflite(model, work, name=f"unet_{quantize}", quantize=quantize, tile=TILE)
            seconds[quantize] = time.perf_counter() - start
            runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
            runners[f"TFLite {quantize}"] = (path, lambda x, r=runner: r(image=x)["probabilities"])
        start = time.perf_counter()
        onnx_paths = export.export_onnx(model, work / "onnx", tile=TILE)
        seconds["onnx"] = time.perf_counter() - start
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_paths[0]))
        runners["ONNX (onnxruntime)"] = (onnx_paths[0], lambda x: session.run(["probabilities"], {"image": x})[0])
        start = time.perf_counter()
        package = export.export_bioimageio(model, work / "bio", tile=TILE)
        rows_bio = [["bioimage.io package (SavedModel inside)", f"{size_of(package) / 2**20:.1f}", "as SavedModel",
                     "as SavedModel", "as SavedModel", f"{time.perf_counter() - start:.0f}"]]
        for name, (path, run) in runners.items():
            got = np.concatenate([run(t[None]) for t in batch])
            diff = float(np.max(np.abs(got - expected)))
            flips = float(np.mean(got.argmax(-1) != expected.argmax(-1)))
            per_tile = best_of(lambda: run(batch[:1]), repeat=3)
            key = "savedmodel" if "SavedModel" in name else "onnx" if "ONNX" in name else name.split()[-1]
            rows.append([name, f"{size_of(path) / 2**20:.1f}" if path else "-", f"{diff:.2e}", f"{100 * flips:.3f}",
                         f"{per_tile:.2f}", f"{seconds[key]:.0f}" if key in seconds else "-"])
        rows += rows_bio
    finally:
        shutil.rmtree(work, ignore_errors=True)
    config_line = f"base {model.get_layer('enc1_conv1').filters} filters"
    write_table("export", f"Export formats of one trained U-Net ({config_line}), 572 px tiles of ISBI slices 25-29",
                f"python benchmarks/export.py {args.run}",
                ["format", "size (MB)", "max abs dp vs Keras", "labels flipped (%)", "s / 572 tile", "export (s)"], rows,
                "Tolerances checked by --verify: SavedModel 1e-5, ONNX 1e-4, TFLite float32 1e-4, float16 1e-2, "
                "dynamic-range 0.1 (probabilities). Times on this machine's 2 CPU cores, batch 1.")


if __name__ == "__main__":
    main()
