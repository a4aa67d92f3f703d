"""Weight-map speed: windowed distance transforms vs one full-image transform per object.

    python benchmarks/weightmap.py
"""
import numpy as np

from _common import best_of, write_table
from keras_unet import synthetic, weights


def main():
    rows = []
    for radius in (20, 16, 12):
        _, labels = synthetic.sample((512, 512), radius=radius, seed=1)
        n = int(labels.max())
        fast = best_of(lambda: weights.weight_map(labels), repeat=3)
        slow = best_of(lambda: weights.weight_map_reference(labels), repeat=1)
        diff = np.abs(weights.weight_map(labels)[1] - weights.weight_map_reference(labels)[1]).max()
        rows.append([n, f"{1000 * fast:.0f}", f"{1000 * slow:.0f}", f"{slow / fast:.1f}x", f"{diff:.1e}"])
    write_table("weightmap", "Weight map, 512x512 synthetic cells", "python benchmarks/weightmap.py",
                ["objects", "windowed (ms/image)", "full reference (ms/image)", "speed-up", "max abs difference"], rows,
                "Windowed: each object's distance transform only within the distance where the border term "
                "exceeds 1e-3 (w0 = 10, sigma = 5 px). Reference: one full-image EDT per object.")


if __name__ == "__main__":
    main()
