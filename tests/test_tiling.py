import keras
import numpy as np
import pytest

from keras_unet import sizes, tiling
from keras_unet.model import unet


@pytest.mark.parametrize("shape,tile,n_tiles", [((203, 317), 204, 13 * 20), ((203, 317), 236, 5 * 7), ((61, 45), 252, 1)])
def test_tiled_equals_whole_image(tiny_model, rng, shape, tile, n_tiles):
    image = rng.uniform(0, 255, shape).astype(np.float32)
    whole = tiling.predict_whole(tiny_model, image)
    tiled = tiling.predict_tiled(tiny_model, image, tile=tile, batch_size=3)
    assert tiled.shape == shape + (2,)
    assert tiling.count_tiles(shape, tile) == n_tiles
    np.testing.assert_allclose(tiled, whole, atol=2e-5)


def test_too_small_tile_is_a_clear_error():
    with pytest.raises(sizes.InvalidSizeError, match="use a tile of at least 204 px"):
        sizes.prediction_plan(188)


def test_tile_steps_keep_pooling_aligned():
    plan = sizes.prediction_plan(572)
    assert (plan.output_size, plan.margin, plan.step) == (388, 92, 384)
    assert plan.step % 16 == 0


def test_multichannel_image(rng):
    model = unet(depth=3, base_filters=4, in_channels=3, n_classes=3, dropout=0.0)
    image = rng.uniform(0, 255, (70, 90, 3)).astype(np.float32)
    tiled = tiling.predict_tiled(model, image, tile=68)
    np.testing.assert_allclose(tiled, tiling.predict_whole(model, image), atol=2e-5)
    assert tiled.shape == (70, 90, 3)


@pytest.mark.parametrize("depth, tile, border", [(2, 64, 20), (3, 128, 30)])
def test_same_padding_tiles_equal_the_whole_image_away_from_its_border(rng, depth, tile, border):
    """With same padding a tile keeps its centre, a quarter of the tile of context on each side
    (16 px at 64, 32 px at 128). Where that context exceeds the network's receptive radius (about
    11 px at depth 2, 29 px at depth 3) the kept outputs equal one whole-image pass exactly; only
    within the receptive radius of the image border do they differ (zeros there, mirrored pixels
    here)."""
    keras.utils.set_random_seed(0)
    model = unet(depth=depth, base_filters=4, padding="same", dropout=0.0)
    image = rng.uniform(0, 255, (100, 130)).astype(np.float32)
    tiled = tiling.predict_tiled(model, image, tile=tile)
    whole = tiling.predict_whole(model, image)
    assert tiled.shape == (100, 130, 2) and whole[..., 1].std() > 0.01  # not a constant output
    inner = (slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-5)
    assert np.abs(tiled - whole).max() > 1e-3  # the border, where the two differ by design


def test_tta_averages_dihedral_views(tiny_model, rng):
    image = rng.uniform(0, 255, (50, 70)).astype(np.float32)
    single = tiling.predict_tta(tiny_model, image, n_transforms=1, tile=204)
    np.testing.assert_allclose(single, tiling.predict_tiled(tiny_model, image, tile=204), atol=1e-6)
    full = tiling.predict_tta(tiny_model, image, n_transforms=8, tile=204)
    np.testing.assert_allclose(full.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(full, single)
    # against an independent average: each of the 8 views (4 rotations, then the same of the
    # mirrored image) predicted in one whole-image pass, turned back and averaged
    views = [(k, mirrored) for mirrored in (False, True) for k in range(4)]
    for n in (2, 5, 8):
        total = np.zeros(image.shape + (2,), np.float32)
        for k, mirrored in views[:n]:
            view = np.rot90(np.fliplr(image) if mirrored else image, k)
            back = np.rot90(tiling.predict_whole(tiny_model, np.ascontiguousarray(view)), -k)
            total += np.fliplr(back) if mirrored else back
        np.testing.assert_allclose(tiling.predict_tta(tiny_model, image, n_transforms=n, tile=204), total / n,
                                   atol=1e-5)


def test_default_tile_respects_memory_and_image():
    assert sizes.default_tile((100, 100), base_filters=64) == 284  # output 100 covers the image
    assert sizes.default_tile((512, 512), base_filters=64) == 700  # one tile: fastest on a CPU
    small_budget = sizes.default_tile((4096, 4096), base_filters=64, memory_mb=512)
    assert sizes.estimate_tile_bytes(small_budget, 64) <= 512 * 2**20 < sizes.estimate_tile_bytes(small_budget + 16, 64)
    assert small_budget < sizes.default_tile((4096, 4096), base_filters=64, memory_mb=4096)


def test_xla_forward_matches(tiny_model, rng):
    image = rng.uniform(0, 255, (40, 50)).astype(np.float32)
    plain = tiling.predict_tiled(tiny_model, image, tile=220)
    compiled = tiling.predict_tiled(tiny_model, image, tile=220, jit_compile=True)
    np.testing.assert_allclose(compiled, plain, atol=1e-4)


def test_the_model_sees_one_batch_of_tiles_at_a_time(tiny_model, rng, monkeypatch):
    seen = []
    original = tiling.forward_function

    def recording(model, jit_compile=False, engine="tensorflow", precision="float32"):
        forward = original(model, jit_compile, engine, precision)
        return lambda tiles: seen.append(tiles.shape) or forward(tiles)

    monkeypatch.setattr(tiling, "forward_function", recording)
    tiling.predict_tiled(tiny_model, rng.uniform(0, 255, (300, 260)).astype(np.float32), tile=236, batch_size=3)
    assert len(seen) > 5 and max(shape[0] for shape in seen) <= 3
    assert {shape[1:3] for shape in seen} == {(236, 236)}  # the model never sees more than a batch of tiles
