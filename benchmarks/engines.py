"""The engines side by side on this CPU: TensorFlow, ONNX Runtime and OpenVINO running the same network on
the same tiles, against the best measured GEMM of each library and a theoretical peak computed
from this CPU's topology and flags.

    python benchmarks/engines.py [--quick]

Each configuration runs in a fresh child process per thread count (TensorFlow fixes its thread
pools at start-up): base 16 and 64, the paper's 572 px tile and the 700 px tile that
``keras-unet predict`` picks for a 512x512 image, batch 1 and 4, one thread and all. Best of 3
after a warm-up. ``--quick``: batch 1 and all threads only.
"""
import argparse
import json
import os
import subprocess
import sys

from _common import write_table
from keras_unet.precision import bfloat16_flags

ENGINE_ROWS = ("tensorflow", "onnxruntime", "openvino", "tensorflow bfloat16", "openvino bfloat16")

CHILD = r"""
import json, os, sys, time
threads, base, tile, batch = (int(v) for v in sys.argv[1:5])
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras, onnxruntime
from keras_unet import engines
from keras_unet.model import unet
sys.path.insert(0, sys.argv[6])
from inference import model_flops

def best(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)

out = {}
if base == 0:  # the GEMMs: float32 2048^2
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flops = 2 * n ** 3
    out["numpy"] = flops / best(lambda: a @ a) / 1e9
    ta = tf.constant(a)
    out["tensorflow"] = flops / best(lambda: tf.matmul(ta, ta).numpy()) / 1e9
    import onnx
    from onnx import helper, TensorProto
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions(); options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out["onnxruntime"] = flops / best(lambda: session.run(["c"], {"a": a, "b": a})) / 1e9
else:
    keras.utils.set_random_seed(0)
    network = unet(base_filters=base, dropout=0.0, input_range=None)
    tiles = np.random.default_rng(0).uniform(0, 1, (batch, tile, tile, 1)).astype(np.float32)
    flops = batch * model_flops(network, tile)
    options = onnxruntime.SessionOptions(); options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(engines.onnx_file(network)), options, providers=["CPUExecutionProvider"])
    import openvino
    compiled = openvino.Core().compile_model(str(engines.onnx_file(network)), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    output = next(o for o in compiled.outputs if "probabilities" in o.get_names())
    runs = {"tensorflow": lambda: network.predict_on_batch(tiles),
            "onnxruntime": lambda: session.run(["probabilities"], {"image": tiles})[0],
            "openvino": lambda: compiled(tiles)[output]}
    # bfloat16 as keras_unet.engines runs it (emulated, and slow, on a CPU without native bf16)
    from keras_unet.precision import bfloat16_network
    bf16_network = bfloat16_network(network)
    bf16_compiled = openvino.Core().compile_model(str(engines.onnx_file(network)), "CPU",
                                                  {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads})
    bf16_output = next(o for o in bf16_compiled.outputs if "probabilities" in o.get_names())
    runs["tensorflow bfloat16"] = lambda: bf16_network.predict_on_batch(tiles)
    runs["openvino bfloat16"] = lambda: bf16_compiled(tiles)[bf16_output]
    seconds = {name: best(run) for name, run in runs.items()}
    reference = network.predict_on_batch(tiles)
    diff = {name: float(np.abs(run() - reference).max()) for name, run in runs.items()}
    out = {"seconds": seconds, "gflops": {k: flops / v / 1e9 for k, v in seconds.items()}, "max_diff": diff}
json.dump(out, open(sys.argv[5], "w"))
"""


def cpu_topology() -> dict:
    """Physical cores (SMT siblings counted once), vector width and FMA pipes from /proc/cpuinfo."""
    info = open("/proc/cpuinfo").read().strip().split("\n\n")
    fields = [dict(line.split(":", 1) for line in block.splitlines() if ":" in line) for block in info]
    fields = [{k.strip(): v.strip() for k, v in f.items()} for f in fields]
    logical = len(fields)
    cores = len({(f.get("physical id"), f.get("core id")) for f in fields}) or logical
    first = fields[0]
    flags, vendor, family = set(first["flags"].split()), first["vendor_id"], int(first["cpu family"])
    smt = "ht" in flags and int(first.get("siblings", logical)) > int(first.get("cpu cores", logical))
    note = ("SMT siblings counted once" if smt else
            "no SMT visible; a VM's vCPUs may still share physical cores, which no guest can tell")
    if "avx512f" in flags and vendor == "AuthenticAMD":  # Zen 4: AVX-512 as two 256-bit halves
        lanes, pipes, width = 8, 2, "AVX-512 executed as two 256-bit halves (Zen 4): 8 float32 lanes"
    elif "avx512f" in flags:
        lanes, pipes, width = 16, 2, "AVX-512, 16 float32 lanes (2 FMA units; some Xeon Silver/Bronze have 1)"
    elif "avx2" in flags and "fma" in flags:
        lanes, pipes, width = 8, 2, "AVX2 + FMA, 8 float32 lanes"
    else:
        lanes, pipes, width = 4, 1, "SSE, 4 float32 lanes"
    mhz = float(first["cpu MHz"])
    return {"model": first["model name"], "logical": logical, "cores": cores, "lanes": lanes, "pipes": pipes,
            "mhz": mhz, "peak": cores * pipes * lanes * 2 * mhz / 1e3,
            "how": f"{cores} cores ({logical} logical; {note}) x {pipes} FMA pipes x {width} x 2 x {mhz / 1e3:.2f} "
                   f"GHz nominal ({vendor}, family {family})"}


def child(threads: int, base: int, tile: int = 0, batch: int = 0) -> dict:
    out = f"/tmp/engines-{os.getpid()}.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", CHILD, str(threads), str(base), str(tile), str(batch), out, here],
                   check=True, env=env)
    with open(out) as fh:
        return json.load(fh)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--name", default="engines", help="the table's name under results/ (one per CPU kind)")
    args = parser.parse_args()
    cpu = cpu_topology()
    all_threads = len(os.sched_getaffinity(0))
    thread_counts = [all_threads] if args.quick else [1, all_threads]
    rows = [["theoretical float32 peak: " + cpu["how"], "-", "-", f"{cpu['peak']:.0f}", "-", "-"]]
    gemm = {}
    for threads in thread_counts:
        # the best of two GEMM runs, apart in time: one GEMM child of the first full run here measured
        # 100-126 GFLOP/s where the run before and the networks after reached 205-212
        first, second = child(threads, 0), child(threads, 0)
        gemm[threads] = {name: max(first[name], second[name]) for name in first}
        for name, rate in gemm[threads].items():
            rows.append([f"GEMM 2048^2 float32, {threads} thread(s)", name, "-", f"{rate:.0f}",
                         f"{rate / (cpu['peak'] * threads / all_threads):.0%} of the peak of {threads} thread(s)",
                         "-"])
    batches = [1] if args.quick else [1, 4]
    for threads in thread_counts:
        best_gemm = max(gemm[threads].values())
        for base in (16, 64):
            for tile in (572, 700):
                for batch in batches:
                    result = child(threads, base, tile, batch)
                    tf_s = result["seconds"]["tensorflow"]
                    for name in ENGINE_ROWS:
                        rate = result["gflops"][name]
                        rows.append([f"base {base}, tile {tile}, batch {batch}, {threads} thread(s)", name,
                                     f"{result['seconds'][name]:.3f}", f"{rate:.0f}",
                                     f"{rate / best_gemm:.0%} of the best GEMM",
                                     f"{tf_s / result['seconds'][name]:.2f}x TF (max |dp| "
                                     f"{result['max_diff'][name]:.1e})"])
                    print(*rows[-len(ENGINE_ROWS):], sep="\n", file=sys.stderr, flush=True)
    write_table(args.name, f"Engines on this CPU: {cpu['model']} (bfloat16 flags: {bfloat16_flags()})",
                "python benchmarks/engines.py"
                + (" --quick" if args.quick else "") + (f" --name {args.name}" if args.name != "engines" else ""),
                ["configuration", "engine", "s / batch", "GFLOP/s", "vs ceiling", "speed"], rows,
                "The same random network (valid padding, dropout off) and tiles for every engine; ONNX Runtime and "
                "OpenVINO (float32 precision hint) run the file keras_unet.engines converts and caches; the "
                "bfloat16 rows are TensorFlow's bfloat16 compute copy (keras_unet.precision) and OpenVINO's bf16 "
                "hint, emulated where the CPU has no native bfloat16. GFLOP/s counts 2 FLOPs per multiply-add from the "
                "layers (up-convolutions as one tap per output). The best measured GEMM is the practical ceiling; "
                "the theoretical peak, from the topology, flags and nominal clock, is a bound beside it (boost "
                "clocks can pass it).")


if __name__ == "__main__":
    main()
