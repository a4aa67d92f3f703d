"""PNG figures for people: training curves, sample predictions, augmented samples.

matplotlib with the Agg backend (no display needed); every file is written atomically.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from keras_unet.files import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        _pyplot().close(fig)
    return Path(path)


def read_log(csv_path) -> dict[str, list[float]]:
    """Columns of a Keras CSV training log as float lists."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):  # Keras writes "NA" for a metric missing in an epoch
            return None

    columns = {key: [number(r.get(key)) for r in rows] for key in (rows[0] if rows else {})}
    return {key: [v for v in values if v is not None] for key, values in columns.items() if any(v is not None for v in values)}


def training_curves(csv_path, png_path) -> Path:
    """Loss (log scale) and metric curves per epoch, training and validation side by side."""
    plt = _pyplot()
    log = read_log(csv_path)
    epochs = [int(e) + 1 for e in log.get("epoch", [])]
    metrics = [k for k in log if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        ax.plot(epochs, log[key], "o-", ms=3, label="training")
        if f"val_{key}" in log:
            ax.plot(epochs[: len(log[f"val_{key}"])], log[f"val_{key}"], "s-", ms=3, label="validation")
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch")
        if key == "loss" and min(log[key] + log.get("val_loss", [])) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.suptitle(f"Training of {Path(csv_path).parent.name}")
    return _save(fig, png_path)


def sample_predictions(images, truths, probabilities, png_path, titles=None) -> Path:
    """Rows of input | truth | foreground probability | prediction errors (red = missed, blue = extra)."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(13, 3.3 * n), squeeze=False)
    for i, (image, truth, probs) in enumerate(zip(images, truths, probabilities)):
        image = np.asarray(image)
        image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        prediction = np.argmax(probs, axis=-1)
        errors = np.zeros(truth.shape + (3,), np.float32) + 1.0
        errors[(truth > 0) & (prediction == 0)] = (0.85, 0.1, 0.1)
        errors[(truth == 0) & (prediction > 0)] = (0.1, 0.3, 0.9)
        error_rate = float(np.mean(prediction != truth))
        panels = [
            (image, "gray", "input"),
            (truth, "viridis", "truth"),
            (probs[..., 1] if probs.shape[-1] == 2 else prediction, "magma", "probability of class 1"),
            (errors, None, f"errors: {100 * error_rate:.1f}% of pixels"),
        ]
        for ax, (panel, cmap, title) in zip(axes[i], panels):
            ax.imshow(panel, cmap=cmap, interpolation="nearest")
            ax.set_title(title if not titles else f"{titles[i]}: {title}", fontsize=9)
            ax.axis("off")
    return _save(fig, png_path)


def augmented_grid(tiles, targets, png_path) -> Path:
    """Augmented input tiles over their label and weight maps (the tiles' centres)."""
    plt = _pyplot()
    n = len(tiles)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n, 8), squeeze=False)
    for i, (tile, y_true) in enumerate(zip(tiles, targets)):
        axes[0, i].imshow(np.asarray(tile)[..., 0], cmap="gray")
        axes[1, i].imshow(y_true[..., 0], cmap="viridis", vmin=0)
        im = axes[2, i].imshow(y_true[..., 1], cmap="inferno")
        fig.colorbar(im, ax=axes[2, i], fraction=0.046)
        for row, title in enumerate(("augmented tile", "label (output area)", "weight map")):
            axes[row, i].set_title(title, fontsize=8)
            axes[row, i].axis("off")
    return _save(fig, png_path)
