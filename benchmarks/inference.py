"""Inference and training speed on this CPU, against the matmul peak and a PyTorch peer.

    pip install torch            # the peer; optional, only for this benchmark
    python benchmarks/inference.py [--skip-memory]

Figures: the CPU's theoretical float32 peak (cores x FMA pipes x lanes x 2 x clock, from
/proc/cpuinfo) and the best measured matmul (numpy with the OpenBLAS kernel it picks, with
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset in a child process where the machine sets them, and TF);
network rates as fractions of both; FLOPs of the network computed from its
layers; seconds per 512x512 image for several tilings, batchings and XLA; achieved GFLOP/s;
forward and train-step time ratios keras-unet / PyTorch at base 32 and 64; peak RSS of
overlap-tile prediction of 2048^2 and 4096^2 images.
"""
import argparse
import subprocess
import sys

import numpy as np

from _common import best_of, write_table

THREADS = 2


NUMPY_MATMUL = """
import numpy as np, time
try:
    import threadpoolctl
    kernel = ",".join(str(i.get("architecture")) for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas")
except ImportError:
    kernel = "?"
n = 4096
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
best = min((lambda t: (a @ a, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(3))
print(2 * n**3 / best / 1e9, kernel or "?")
"""


def numpy_matmul(unset_coretype: bool) -> tuple[float, str]:
    """``(GFLOP/s, OpenBLAS kernel)`` of a float32 4096^2 matmul in a child process."""
    import os

    env = {k: v for k, v in os.environ.items()
           if not (unset_coretype and k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))}
    env.update(OPENBLAS_NUM_THREADS=str(THREADS))
    out = subprocess.run([sys.executable, "-c", NUMPY_MATMUL], capture_output=True, text=True, check=True, env=env)
    rate, kernel = out.stdout.split()
    return float(rate), kernel


def matmul_peak():
    import tensorflow as tf

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ta = tf.constant(a)
    tf_rate = 2 * n**3 / best_of(lambda: tf.matmul(ta, ta).numpy(), repeat=3) / 1e9
    return numpy_matmul(False), numpy_matmul(True), tf_rate


# float32 FLOPs per cycle and core: FMA pipes x lanes x 2. Zen 4 runs AVX-512 on two 256-bit FMA
# pipes; server Xeons with AVX-512 have two 512-bit FMA units (some Silver/Bronze parts one).
def theoretical_peak() -> tuple[float, str]:
    """``(GFLOP/s, how)`` from /proc/cpuinfo: cores x FLOPs/cycle x the nominal clock."""
    import os

    info = open("/proc/cpuinfo").read()
    field = lambda name: next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(name))
    flags, vendor, mhz = set(field("flags").split()), field("vendor_id"), float(field("cpu MHz"))
    family = int(field("cpu family"))
    if vendor == "AuthenticAMD":
        pipes, lanes = (2, 8) if family >= 23 else (2, 4)  # Zen 1-4: two FMA pipes, 256 bit (Zen 1: 128)
        if family == 23 and int(field("model")) < 0x30:
            lanes = 4
    elif "avx512f" in flags:
        pipes, lanes = 2, 16
    elif "fma" in flags:
        pipes, lanes = 2, 8
    else:
        pipes, lanes = 1, 4
    cores = os.cpu_count()
    per_cycle = pipes * lanes * 2
    return cores * per_cycle * mhz / 1e3, (f"{cores} cores x {pipes} FMA pipes x {lanes} float32 lanes x 2 x "
                                           f"{mhz / 1e3:.2f} GHz ({vendor}, family {family}; nominal clock, "
                                           "boost not counted)"), cores * per_cycle


def model_flops(model, size, upconv_as_dense=False):
    """Multiply-add FLOPs (2 per MAC) of one forward pass at ``size`` x ``size``, from the layers.

    A 2x2 up-convolution with stride 2 touches each output pixel with one kernel tap (c_in MACs);
    ``upconv_as_dense`` counts it as a dense 2x2 convolution (4 c_in MACs per output), the
    convention behind the often-quoted 334.6 GFLOP for a 572 tile.
    """
    import keras

    from keras_unet.model import conv_layers

    convs = conv_layers(model)
    probe = keras.Model(model.input, [layer.output for layer in convs])
    shapes = probe.compute_output_shape((1, size, size, model.input_shape[-1]))
    total = 0
    for layer, shape in zip(convs, shapes):
        k_h, k_w = layer.kernel_size
        c_in = layer.kernel.shape[-1] if isinstance(layer, keras.layers.Conv2DTranspose) else layer.kernel.shape[-2]
        per_output = k_h * k_w * c_in
        if isinstance(layer, keras.layers.Conv2DTranspose) and not upconv_as_dense:
            per_output //= layer.strides[0] * layer.strides[1]
        total += 2 * shape[1] * shape[2] * shape[3] * per_output
    return total


def keras_predict_variants(base, image):
    from keras_unet import tiling
    from keras_unet.model import unet

    model = unet(base_filters=base)
    rows = []
    for label, tile, batch, xla in [("one 700 tile", 700, 1, False), ("four 572 tiles, batch 1", 572, 1, False),
                                    ("four 572 tiles, batch 4", 572, 4, False), ("one 700 tile, XLA", 700, 1, True),
                                    ("four 572 tiles, batch 4, XLA", 572, 4, True)]:
        run = lambda: tiling.predict_tiled(model, image, tile=tile, batch_size=batch, jit_compile=xla,
                                          memory_mb=16384)  # noqa: E731
        run()  # warm-up and XLA compilation
        seconds = best_of(run, repeat=2)
        flops = tiling.count_tiles(image.shape, tile) * model_flops(model, tile)
        rows.append((label, seconds, flops))
    return rows, model


def keras_times(base, size=572):
    import keras

    from keras_unet import losses
    from keras_unet.model import unet

    model = unet(base_filters=base, dropout=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.99), loss=losses.WeightedCrossEntropy())
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 1)).astype(np.float32)
    y = np.ones((1, size - 184, size - 184, 2), np.float32)
    model.predict_on_batch(x)
    forward = best_of(lambda: model.predict_on_batch(x), repeat=3)
    model.train_on_batch(x, y)
    step = best_of(lambda: model.train_on_batch(x, y), repeat=3)
    return forward, step


def torch_times(base, size=572):
    import torch

    from torch_unet import UNet

    torch.set_num_threads(THREADS)
    model = UNet(base=base)
    x = torch.rand(1, 1, size, size) * 255
    y = torch.ones(1, size - 184, size - 184, dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99)
    model.eval()
    with torch.no_grad():
        model(x)
        forward = best_of(lambda: model(x), repeat=3)
    model.train()

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x / 255), y)
        loss.backward()
        optimizer.step()

    step()
    return forward, best_of(step, repeat=3)


MEMORY = """
import resource, sys, numpy as np
from keras_unet import tiling
from keras_unet.model import unet
size = int(sys.argv[1])
model = unet()
image = np.random.default_rng(0).integers(0, 256, (size, size)).astype(np.uint8)
tiling.predict_tiled(model, image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(size):
    done = subprocess.run([sys.executable, "-c", MEMORY, str(size)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    (numpy_peak, kernel), (numpy_free, free_kernel), tf_peak = matmul_peak()
    peak = max(numpy_peak, numpy_free, tf_peak)
    ceiling, how, flops_per_cycle = theoretical_peak()
    image = np.random.default_rng(0).integers(0, 256, (512, 512)).astype(np.float32)
    variants, model = keras_predict_variants(64, image)
    tile_flops = model_flops(model, 572)
    rows = [["theoretical float32 peak: " + how, "-", f"{ceiling:.0f}", "100% of theoretical"],
            [f"float32 matmul 4096^2, numpy (OpenBLAS kernel {kernel})", "-", f"{numpy_peak:.0f}",
             f"{100 * numpy_peak / ceiling:.0f}% of theoretical"],
            [f"float32 matmul 4096^2, numpy, OPENBLAS_CORETYPE/L2_SIZE unset (kernel {free_kernel})", "-",
             f"{numpy_free:.0f}", f"{100 * numpy_free / ceiling:.0f}% of theoretical"],
            ["float32 matmul 4096^2, TF (oneDNN)", "-", f"{tf_peak:.0f}", f"{100 * tf_peak / ceiling:.0f}% of theoretical"],
            ["clock the best matmul implies at the theoretical FLOPs per cycle", "-", "-",
             f"{peak / flops_per_cycle:.2f} GHz (a boost clock; the nominal one is the theoretical row's)"],
            ["paper network, one 572 tile forward", f"{tile_flops / 1e9:.1f} GFLOP", "-",
             f"{model_flops(model, 572, upconv_as_dense=True) / 1e9:.1f} GFLOP with up-convs counted as dense 2x2"]]
    for label, seconds, flops in variants:
        rate = flops / seconds / 1e9
        rows.append([f"512x512 image, base 64: {label}", f"{seconds:.2f} s/image", f"{rate:.0f}",
                     f"{100 * rate / ceiling:.0f}% of theoretical, {100 * rate / peak:.0f}% of best matmul"])
    if not args.skip_peer:
        for base in (32, 64):
            k_fwd, k_step = keras_times(base)
            t_fwd, t_step = torch_times(base)
            rows.append([f"forward 572 tile, base {base}: keras-unet / PyTorch", f"{k_fwd:.2f} s / {t_fwd:.2f} s",
                         f"{model_flops(model, 572) * (base / 64) ** 2 / k_fwd / 1e9:.0f}", f"ratio {k_fwd / t_fwd:.2f}"])
            rows.append([f"train step 572 tile, base {base}: keras-unet / PyTorch", f"{k_step:.2f} s / {t_step:.2f} s",
                         "-", f"ratio {k_step / t_step:.2f}"])
    if not args.skip_memory:
        small, large = peak_rss_mb(2048), peak_rss_mb(4096)
        rows.append(["peak RSS, overlap-tile predict 2048^2 (base 64, default tile)", f"{small:.0f} MB", "-", "-"])
        rows.append(["peak RSS, overlap-tile predict 4096^2 (base 64, default tile)", f"{large:.0f} MB", "-",
                     f"+{large - small:.0f} MB for 4x the pixels"])
    write_table("inference", "Inference and training speed on this CPU", "python benchmarks/inference.py",
                ["what", "time / size", "GFLOP/s", "ratio"], rows,
                f"{THREADS} threads for TF, numpy and PyTorch. The theoretical peak uses the nominal clock: "
                "boost clocks let a measured rate pass it (then the row says over 100%). "
                "GFLOP/s counts the FLOPs of every tile computed "
                "(2 per multiply-add, from the model's layers). Ratios below 1 mean keras-unet is faster.")


if __name__ == "__main__":
    main()
