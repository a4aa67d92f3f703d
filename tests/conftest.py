import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _weight_cache(tmp_path, monkeypatch):
    """Every test gets its own weight-map cache."""
    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_model():
    """A random depth-5 U-Net with 4 base filters (valid padding, 1 channel, 2 classes)."""
    import keras

    from keras_unet.model import unet

    keras.utils.set_random_seed(1)
    return unet(base_filters=4, dropout=0.0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
