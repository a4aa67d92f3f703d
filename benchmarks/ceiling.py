"""What the targets can represent: each true DSB2018 mask made into a training target and back
into objects by the post-processing, as if the network predicted its target perfectly. The DSB
score this reaches is the ceiling of a model trained on that target (a lever of the nuclei issue:
is 0.48 against the goal of 0.60 lost in the representation or in the network?).

    python benchmarks/ceiling.py

The 106 held-out images of :func:`budget.split`, per kind. Two classes: 1 inside objects, 0 on
background and on the separation borders between touching objects (weights.binary_target,
1 px each side), back through :class:`keras_unet.postprocess.PostProcessing` (components, holes
filled, borders given back, objects under ``min_size`` dropped). Three classes: interiors and 1 px
boundary rims (weights.three_class_target), back through the ``boundary`` split. ``min_size`` 0 and
the shipped model's 36 px. No network runs.
"""
import numpy as np

from _common import write_table
from budget import kind, split
from keras_unet import data, metrics, weights
from keras_unet.postprocess import PostProcessing

TARGETS = {"two classes, separation borders": lambda truth: np.eye(2, dtype=np.float32)[weights.binary_target(truth)],
           "three classes, 1 px rims": lambda truth: np.eye(3, dtype=np.float32)[weights.three_class_target(truth)[0]]}


def main():
    _, tests = split()
    truths = [(data.read_image(mask).astype(np.int64), kind(data.read_image(image))) for image, mask in tests]
    kinds = sorted({k for _, k in truths}) + ["all"]
    rows = []
    for name, target in TARGETS.items():
        split_of = "boundary" if name.startswith("three") else "none"
        for min_size in (0, 36):
            post = PostProcessing(threshold=None, min_size=min_size, split=split_of)
            scores = {k: [] for k in kinds}
            for truth, k in truths:
                found = post.objects(target(truth)).astype(np.int64)
                score = metrics.evaluate_objects(found, truth)
                scores[k].append(score), scores["all"].append(score)
            rows.append([name, min_size] + [f"{np.mean([s['f1'] for s in scores[k]]):.3f} / "
                                            f"{np.mean([s['dsb_score'] for s in scores[k]]):.3f}" for k in kinds])
    counts = {k: sum(1 for _, x in truths if x == k or k == "all") for k in kinds}
    write_table("ceiling", "What the targets can represent: true masks through target and post-processing",
                "python benchmarks/ceiling.py", ["target", "min_size (px)"]
                + [f"{k} ({counts[k]}): F1 / DSB" for k in kinds], rows,
                "Held-out DSB2018 images of budget.split. Each true mask made into the target, taken as the network's "
                "probabilities (one-hot), made into objects as predict does, scored against the mask. The shipped "
                "model (two classes, p >= 0.7, 36 px) scores 0.826 / 0.481 on these images (errors.md).")


if __name__ == "__main__":
    main()
