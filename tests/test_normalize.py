"""Per-image percentile normalisation: against numpy's percentiles, its two implementations (Keras
ops in model.keras, TF ops in exports) against each other, and the promises made to users: a
dimmed image predicts the same, tiling does not change the answer, training sees what prediction
sees, and runs saved before it still load and predict as before."""
import json

import keras
import numpy as np
import pytest

from keras_unet import normalize, pipeline, synthetic, tiling
from keras_unet.model import exported_forward, inference_model, network_of, percentiles_of, unet, unet_config
from keras_unet.settings import TrainConfig


def reference(image, low=1.0, high=99.8):
    """numpy's percentiles (linear interpolation), per channel."""
    p_low, p_high = np.percentile(image, [low, high], axis=(0, 1))
    return (image - p_low) / np.maximum(p_high - p_low, normalize.EPSILON)


@pytest.mark.parametrize("shape", [(37, 53, 1), (64, 64, 3), (1, 1, 1), (203, 317, 2)])
def test_both_implementations_equal_numpy_percentiles(shape, rng):
    image = rng.gamma(2.0, 30.0, shape).astype(np.float32)
    image[0, 0] = 1e5  # a hot pixel: beyond the 99.8th percentile, it moves nothing
    expected = reference(image.astype(np.float64))
    np.testing.assert_allclose(normalize.normalize_image(image), expected, rtol=1e-4, atol=1e-4)
    graph = np.asarray(normalize.percentile_normalize_tf(image[None]))[0]
    assert graph.shape == expected.shape
    np.testing.assert_allclose(graph, expected, rtol=1e-4, atol=1e-4)  # the hot pixel too (relative)


def test_per_image_in_a_batch_and_per_channel(rng):
    batch = rng.uniform(0, 1, (2, 20, 30, 2)).astype(np.float32)
    batch[0, ..., 1] = batch[0, ..., 1] ** 2  # channels of different distributions
    batch[1] = batch[0] * 200.0 + 50.0  # the same image, brighter and offset
    out = np.asarray(normalize.percentile_normalize(batch))
    for i in range(2):
        np.testing.assert_allclose(out[i], reference(batch[i].astype(np.float64)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)  # scale and offset taken out


def test_constant_and_saturated_images():
    assert np.all(normalize.normalize_image(np.full((30, 40), 7.0)) == 0.0)
    saturated = np.full((50, 50), 255.0, np.float32)
    saturated[:25] = 40.0
    out = normalize.normalize_image(saturated)[..., 0]
    np.testing.assert_allclose(out[:25], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[25:], 1.0, atol=1e-6)


def test_bad_percentiles_are_refused():
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        normalize.check_percentiles((99.8, 1.0))


@pytest.fixture(scope="module")
def percentile_model():
    keras.utils.set_random_seed(5)
    return inference_model(unet(base_filters=4, dropout=0.0, input_range=None), (1.0, 99.8))


def test_a_dimmed_image_predicts_the_same(percentile_model):
    image = synthetic.sample((203, 317), seed=3)[0].astype(np.float32)
    bright = tiling.predict_tiled(percentile_model, image, tile=220)
    dim = tiling.predict_tiled(percentile_model, image * 0.15, tile=220)
    np.testing.assert_allclose(dim, bright, atol=1e-4)
    # ... which the fixed 0-255 range does not give: the same network sees a tenth of the contrast
    fixed = unet(base_filters=4, dropout=0.0, input_range=(0.0, 255.0))
    fixed.set_weights(network_of(percentile_model).get_weights())
    assert np.abs(tiling.predict_tiled(fixed, image * 0.15, tile=220) - tiling.predict_tiled(fixed, image, tile=220)).max() > 1e-3


def test_tiling_normalises_the_whole_image(percentile_model):
    image = np.random.default_rng(1).gamma(2.0, 30.0, (150, 230)).astype(np.float32)
    image[:, :100] *= 0.1  # a dim half: per-tile statistics would differ from the image's
    tiled = tiling.predict_tiled(percentile_model, image, tile=220)
    # independent of the library's normaliser and tiler: numpy's percentiles of the whole image,
    # then the bare network once on the whole mirror-padded image (output = input - 184)
    normalised = reference(image[..., None].astype(np.float64)).astype(np.float32)
    height, width = image.shape
    tall, wide = 16 * -(-(height + 184 - 60) // 16) + 60, 16 * -(-(width + 184 - 60) // 16) + 60
    padded = np.pad(normalised, ((92, tall - height - 92), (92, wide - width - 92), (0, 0)), mode="reflect")
    direct = np.asarray(network_of(percentile_model).predict_on_batch(padded[None]))[0, :height, :width]
    np.testing.assert_allclose(tiled, direct, atol=2e-5)
    # per-tile statistics would not: the Keras model itself on one tile of the dim half
    tile = np.pad(image[..., None], ((92, 92), (92, 92), (0, 0)), mode="reflect")[:220, :220]
    assert np.abs(np.asarray(percentile_model.predict_on_batch(tile[None]))[0] - tiled[:36, :36]).max() > 1e-3


def test_training_tiles_see_what_prediction_sees():
    """fit's images are normalised as numpy's percentiles of the whole image say."""
    dataset = synthetic.as_dataset(2, (96, 96), 0, __import__("keras_unet").data.WeightParams())
    normalised = pipeline.network_input(dataset, (1.0, 99.8))
    for raw, seen in zip(dataset.images, normalised.images):
        np.testing.assert_allclose(seen, reference(raw.astype(np.float64)), rtol=1e-4, atol=1e-4)
    assert pipeline.network_input(dataset, None) is dataset


def test_model_records_its_normalisation(percentile_model, tmp_path):
    assert percentiles_of(percentile_model) == (1.0, 99.8)
    path = tmp_path / "m.keras"
    percentile_model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    config = unet_config(loaded)
    assert config["percentiles"] == (1.0, 99.8) and config["input_range"] is None and config["base_filters"] == 4
    image = np.random.default_rng(2).uniform(0, 255, (1, 220, 220, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(image)), np.asarray(percentile_model(image)), atol=1e-6)
    # exported graphs normalise with TF ops: the same numbers as the Keras model
    exported = exported_forward(loaded)
    np.testing.assert_allclose(np.asarray(exported(image)), np.asarray(loaded(image)), atol=1e-5)


def test_old_runs_keep_their_fixed_range(tmp_path):
    """A config.json from before per-image normalisation has no normalisation setting: it resumes with the fixed range
    and its model (a Rescaling first layer) predicts as it did."""
    old = TrainConfig.from_dict({"base_filters": 4, "epochs": 3})
    assert old.normalization == "range" and old.select_on == "loss"
    assert TrainConfig().normalization == "percentile"
    keras.utils.set_random_seed(2)
    model = unet(base_filters=4, dropout=0.0, input_range=(0.0, 255.0))
    assert percentiles_of(model) is None and unet_config(model)["input_range"] == (0.0, 255.0)
    image = np.random.default_rng(3).uniform(0, 255, (150, 170)).astype(np.float32)
    got = tiling.predict_tiled(model, image, tile=220)
    np.testing.assert_allclose(got, tiling.predict_whole(model, image), atol=1e-5)
    # the raw values reach the network (no percentile step): a dimmed image predicts differently
    assert np.abs(tiling.predict_tiled(model, image * 0.15, tile=220) - got).max() > 1e-3
    assert json.loads(json.dumps(old.percentiles)) == [1.0, 99.8]
