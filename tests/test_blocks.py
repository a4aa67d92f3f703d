"""Block-by-block prediction and objects (keras_unet.blocks) against the whole-image path."""
import numpy as np
import pytest

from keras_unet import blocks, metrics, synthetic, tiling
from keras_unet.errors import SettingsError
from keras_unet.instances import instances_from_probabilities
from keras_unet.normalize import percentile_values


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True where two label images split the pixels alike, whatever the numbers."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("shape, block", [((300, 250), 128), ((200, 520), 160), ((96, 96), 64)])
def test_blocked_probabilities_equal_the_whole_image_prediction(model_file, shape, block):
    from keras_unet.inference import load_model

    model = load_model(model_file)
    image = synthetic.sample(shape, seed=2)[0]
    whole = tiling.predict_tiled(model, image, tile=220)
    grid = blocks.block_grid(image.shape, block)
    stack = image[..., None]
    normalization = percentile_values(stack, (1.0, 99.8))
    out = np.zeros_like(whole)
    for rows, cols in grid.cores():
        out[rows, cols] = blocks.predict_block(model, stack, rows, cols, normalization, tile=220)
    assert np.abs(out - whole).max() < 1e-5


def test_read_window_mirrors_as_the_whole_image_is_padded(rng):
    image = rng.integers(0, 255, (37, 23, 2))
    padded = np.pad(image, ((30, 45), (17, 50), (0, 0)), mode="reflect")
    window = blocks.read_window(image, range(-30, 37 + 45), range(-17, 23 + 50))
    np.testing.assert_array_equal(window, padded)


def cut_objects(shape=(260, 300), seed=0):
    """Probabilities of touching cells, with objects across every block face of 96 px blocks."""
    labels = synthetic.cell_instances(shape, seed=seed)
    from keras_unet import weights

    target = weights.binary_target(labels, 1)
    p = np.where(target == 1, 0.9, 0.1).astype(np.float32)
    p[5:12, 5:12] = 0.95  # a speck under the minimum size
    return labels, np.stack([1 - p, p], axis=-1)


@pytest.mark.parametrize("block, min_size", [(96, 0), (96, 60), (128, 30), (64, 60)])
def test_blocked_objects_equal_the_whole_image_objects(block, min_size):
    truth, probabilities = cut_objects()
    ring = probabilities.copy()  # an object with a hole (filled on the whole image)
    ring[150:170, 90:110, 1], ring[150:170, 90:110, 0] = 0.9, 0.1
    ring[157:162, 97:102, 1], ring[157:162, 97:102, 0] = 0.1, 0.9
    for p in (probabilities, ring):
        whole = instances_from_probabilities(p, min_size=min_size)
        grid = blocks.block_grid(p.shape, block)
        work, out = np.zeros(p.shape[:2], np.uint32), np.zeros(p.shape[:2], np.uint32)
        count = blocks.instances_blocked(p, work, out, grid, min_size=min_size)
        assert count == whole.max()
        assert any(np.any((out[r] == out[r - 1]) & (out[r] > 0)) for r in grid.faces()[0])  # objects cross faces
        assert same_partition(out, whole)
        assert metrics.evaluate_objects(out, whole)["f1"] == 1.0


def test_three_class_objects_across_blocks():
    from keras_unet import weights

    labels = synthetic.cell_instances((200, 230), seed=3)
    target, _ = weights.three_class_target(labels)
    p = np.eye(3, dtype=np.float32)[target]
    whole = instances_from_probabilities(p, split="boundary")
    grid = blocks.block_grid(p.shape, 64)
    work, out = np.zeros(p.shape[:2], np.uint32), np.zeros(p.shape[:2], np.uint32)
    blocks.instances_blocked(p, work, out, grid, split="boundary")
    assert same_partition(out, whole)


def test_block_sizes_and_splits_that_cannot_work_are_refused():
    with pytest.raises(SettingsError, match="multiple of 16 .* use 96"):
        blocks.block_grid((100, 100), 100)
    with pytest.raises(SettingsError, match="not offered for images predicted block by block"):
        blocks.instances_blocked(np.zeros((32, 32, 2)), np.zeros((32, 32), np.uint32), np.zeros((32, 32), np.uint32),
                                 blocks.block_grid((32, 32), 16), split="watershed")
