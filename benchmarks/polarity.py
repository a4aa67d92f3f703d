"""Inverted polarity at prediction time, a lever of the nuclei issue for stained and brightfield
images: the shipped ``nuclei`` model on the held-out colour and brightfield DSB2018 images as they
are and with their gray values inverted (dark nuclei on a light background made light on dark, as
the fluorescence images it mostly learned).

    python benchmarks/polarity.py

Images: the held-out images of :func:`budget.split` that :func:`budget.kind` calls colour or
brightfield (the fluorescence ones are left out). Objects by the model's own post-processing
(:meth:`keras_unet.predictor.Predictor.segment`), scored against the true masks.
"""
import numpy as np

from _common import write_table
from budget import kind, split
from keras_unet import data, metrics, predictor


def inverted(image: np.ndarray) -> np.ndarray:
    """Gray values turned upside down within the image's type (its maximum for floats)."""
    top = np.iinfo(image.dtype).max if image.dtype.kind in "ui" else image.max()
    return top - image


def main():
    _, tests = split()
    model = predictor.Predictor.of("nuclei")
    scores = {}
    for image_path, mask_path in tests:
        image = data.read_image(image_path)
        image = image[..., :3] if image.ndim == 3 and image.shape[-1] == 4 else image
        what = kind(image)
        if what == "fluorescence":
            continue
        truth = data.read_image(mask_path).astype(np.int64)
        for name, view in (("as they are", image), ("inverted", inverted(image))):
            found = metrics.evaluate_objects(np.asarray(model.segment(view)).astype(np.int64), truth)
            scores.setdefault((what, name), []).append((found["f1"], found["dsb_score"]))
    rows = [[what, name, len(v), f"{np.mean(v, axis=0)[0]:.3f}", f"{np.mean(v, axis=0)[1]:.3f}"]
            for (what, name), v in sorted(scores.items())]
    write_table("polarity", "Inverted polarity at prediction time: the shipped nuclei model on stained and "
                "brightfield images", "python benchmarks/polarity.py",
                ["kind", "given to the model", "images", "F1 @ IoU 0.5", "DSB score"], rows,
                "Held-out DSB2018 images of budget.split. Rejected as a lever: the model learned stained and "
                "brightfield images in their own polarity (they are in its training set), and inverting them "
                "loses most of what it finds.")


if __name__ == "__main__":
    main()
