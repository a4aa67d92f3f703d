"""Shared fixtures and helpers of the suite.

Nothing here depends on the caller's environment: TensorFlow's C++ log level is set for this
process only (the tests read no TensorFlow log), and every subprocess a test starts gets an
explicit environment from :func:`child_env`. Real data under ``../shared/data`` is reached
through :func:`shared_data`: a skip with the reason where it is absent, a failure under CI, which
has it.
"""
import os
import sys
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # this process only; children get child_env()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def child_env(**extra) -> dict:
    """An explicit environment for a subprocess: this interpreter's folder first on PATH, HOME,
    quiet TensorFlow, no GPU, no TF_CONFIG or PYTHONPATH inherited; ``extra`` on top."""
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
           "HOME": os.environ.get("HOME", "/tmp"), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if "KERAS_UNET_CACHE" in os.environ:  # the test's own cache (see _weight_cache)
        env["KERAS_UNET_CACHE"] = os.environ["KERAS_UNET_CACHE"]
    return {**env, **{k: str(v) for k, v in extra.items()}}


def shared_data(*parts) -> Path:
    """A path under ``../shared/data``; where it is missing the test is skipped with the reason
    (a fresh clone without the data), and under CI (``CI`` set), which has it, it fails."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real data not present: {path} (the tests that read ../shared/data need it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 (each holds a TensorFlow of 1-2 GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


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


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """What fit saves by default, small: per-image percentile normalisation in front of a depth-5,
    base-4 network (random weights, seed 3)."""
    import keras

    from keras_unet.model import inference_model, unet

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    inference_model(unet(base_filters=4, dropout=0.0, input_range=None), (1.0, 99.8)).save(path)
    return path


@pytest.fixture(scope="session")
def served(model_file, tmp_path_factory):
    """One SavedModel for the session, exported as a user exports it: ``keras-unet export
    --format savedmodel --tile 220`` with its verification. ``(version folder, CLI output)``."""
    from click.testing import CliRunner

    from keras_unet.cli.main import main

    out = tmp_path_factory.mktemp("serving")
    result = CliRunner().invoke(main, ["export", str(model_file), "--format", "savedmodel", "--out", str(out),
                                       "--name", "cells", "--tile", "220", "--version", "1"])
    assert result.exit_code == 0, result.output
    return out / "cells" / "1", result.output
