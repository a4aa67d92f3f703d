import numpy as np
import pytest

from keras_unet import model as unet_model
from keras_unet import sizes


def test_paper_network_size():
    model = unet_model.unet()
    assert model.count_params() == 31_030_658
    convs = unet_model.conv_layers(model)
    assert len(convs) == 23
    assert model.compute_output_shape((1, 572, 572, 1)) == (1, 388, 388, 2)
    assert [model.get_layer(f"crop{i}").cropping[0] for i in (1, 2, 3, 4)] == [(88, 88), (40, 40), (16, 16), (4, 4)]
    assert model.get_layer("bottom_conv2").filters == 1024
    assert model.get_layer("dec1_up").filters == 64
    assert isinstance(model.get_layer("bottom_dropout"), __import__("keras").layers.Dropout)
    assert model.get_layer("enc1_conv1").kernel_initializer.__class__.__name__ == "HeNormal"


@pytest.mark.parametrize("size", [188, 204, 252])
def test_output_shape_any_valid_size(tiny_model, size):
    out = tiny_model.predict_on_batch(np.zeros((1, size, size + 32, 1), np.float32))
    assert out.shape == (1, size - 184, size + 32 - 184, 2)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_options_and_config_roundtrip():
    model = unet_model.unet(depth=3, base_filters=4, in_channels=3, n_classes=4, padding="same",
                            batch_norm=True, input_range=(0, 4095))
    assert model.output_shape == (None, None, None, 4)
    config = unet_model.unet_config(model)
    assert config == dict(depth=3, base_filters=4, in_channels=3, n_classes=4, padding="same",
                          batch_norm=True, input_range=pytest.approx((0.0, 4095.0)), percentiles=None)
    assert model.predict_on_batch(np.zeros((2, 64, 48, 3), np.float32)).shape == (2, 64, 48, 4)


def test_normalize_layer_scales_raw_pixels(tiny_model):
    layer = tiny_model.get_layer("normalize")
    np.testing.assert_allclose(np.asarray(layer(np.array([0.0, 255.0]))), [0.0, 1.0], atol=1e-6)


def test_he_normal_std():
    model = unet_model.unet(base_filters=64, depth=2)
    kernel = np.asarray(model.get_layer("enc1_conv2").kernel)
    expected = np.sqrt(2.0 / (9 * 64))
    assert abs(kernel.std() - expected) / expected < 0.1


def test_invalid_size_error_message():
    with pytest.raises(sizes.InvalidSizeError, match="use 188 or 204"):
        sizes.check_input_size(190)
