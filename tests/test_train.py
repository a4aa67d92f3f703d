import json

import numpy as np
import pytest

from keras_unet import train
from keras_unet.errors import ModelFileError
from keras_unet.normalize import normalize_image

TINY = dict(depth=3, base_filters=4, tile=68, batch_size=2, epochs=2, steps_per_epoch=3,
            synthetic_images=3, synthetic_size=64, optimizer="adam", learning_rate=1e-3)


def test_fit_writes_the_run_folder(tmp_path):
    state = train.fit(train.TrainConfig(**TINY), tmp_path / "run", verbose=0)
    run = tmp_path / "run"
    for name in ("model.keras", "last.keras", "config.json", "state.json", "log.csv", "curves.png", "samples.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["tile"] == 68 and config["versions"]["tensorflow"]
    assert state["epoch"] == 2
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and len(log) == 3
    assert not list(run.glob("*.tmp*"))  # no temporary files left behind


def test_best_model_loads_without_keras_unet(tmp_path):
    """model.keras is an inference model: plain Keras opens it where keras_unet cannot be imported,
    and it predicts what the trained model predicts; last.keras keeps the optimizer."""
    import subprocess
    import sys

    import keras

    state = train.fit(train.TrainConfig(**{**TINY, "epochs": 1}), tmp_path / "run", verbose=0)
    run = tmp_path / "run"
    image = np.random.default_rng(0).uniform(0, 255, (1, 68, 68, 1)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    script = f"""
import sys
sys.modules["keras_unet"] = None  # any import of keras_unet now fails
import numpy as np, keras
model = keras.models.load_model({str(run / 'model.keras')!r})
assert getattr(model, "optimizer", None) is None
np.save({str(tmp_path / 'out.npy')!r}, model.predict_on_batch(np.load({str(tmp_path / 'image.npy')!r})))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    # the trained network on the image as fit normalised it (the whole image by its percentiles)
    expected = state["model"].predict_on_batch(normalize_image(image[0])[None])
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
    assert (run / "model.keras").stat().st_size < 0.7 * (run / "last.keras").stat().st_size  # no Adam state
    assert keras.models.load_model(run / "last.keras", compile=True).optimizer is not None


def test_resume_continues_epochs_and_optimizer(tmp_path):
    run = tmp_path / "run"
    train.fit(train.TrainConfig(**{**TINY, "epochs": 4, "max_minutes": 0}), run, verbose=0)
    full_log = (run / "log.csv").read_text().splitlines()
    # A run interrupted after 2 epochs, resumed to 4:
    interrupted = tmp_path / "interrupted"
    train.fit(train.TrainConfig(**{**TINY, "epochs": 2}), interrupted, verbose=0)
    config = json.loads((interrupted / "config.json").read_text())
    config["config"]["epochs"] = 4
    (interrupted / "config.json").write_text(json.dumps(config))
    import keras

    iterations_before = int(keras.models.load_model(interrupted / "last.keras").optimizer.iterations)
    state = train.resume(interrupted, verbose=0)
    assert iterations_before == 2 * TINY["steps_per_epoch"]
    assert state["epoch"] == 4
    log = (interrupted / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]
    assert len(log) == len(full_log)
    resumed = keras.models.load_model(interrupted / "last.keras")
    assert int(resumed.optimizer.iterations) == 4 * TINY["steps_per_epoch"]


def test_resume_of_a_folder_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(ModelFileError, match="not a run folder to resume"):
        train.resume(tmp_path)


def test_time_limit_stops_early(tmp_path):
    state = train.fit(train.TrainConfig(**{**TINY, "epochs": 50, "max_minutes": 1e-4}), tmp_path / "run", verbose=0)
    assert state["epoch"] < 50


@pytest.mark.slow
def test_training_learns_the_synthetic_cells(tmp_path):
    config = train.TrainConfig(depth=4, base_filters=8, tile=172, batch_size=4, epochs=8, steps_per_epoch=25,
                               optimizer="adam", learning_rate=2e-3, synthetic_images=6, synthetic_size=192)
    train.fit(config, tmp_path / "run", verbose=0)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert log["val_pixel_error"][-1] < 0.2
    assert log["loss"][-1] < log["loss"][0]


def test_mixed_precision_and_mirrored_strategy(tmp_path):
    import keras

    state = train.fit(train.TrainConfig(**{**TINY, "epochs": 1, "mixed_precision": True, "strategy": "mirrored"}),
                      tmp_path / "run", verbose=0)
    assert state["model"].get_layer("enc1_conv1").compute_dtype == "bfloat16"  # CPU: bfloat16 compute
    assert state["model"].output.dtype == "float32"
    assert np.isfinite(state["history"]["loss"][-1])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for the caller


def test_sigkill_mid_epoch_then_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    config = {**TINY, "epochs": 40, "steps_per_epoch": 4}
    script = ("import json, sys; from keras_unet import train; "
              "train.fit(train.TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], verbose=0)")
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(config), str(run)],
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if (run / "state.json").is_file() and json.loads((run / "state.json").read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads((run / "state.json").read_text())["epoch"]
    assert 2 <= killed_at < 40
    config_file = json.loads((run / "config.json").read_text())
    config_file["config"]["epochs"] = killed_at + 2
    (run / "config.json").write_text(json.dumps(config_file))
    state = train.resume(run, verbose=0)
    assert state["epoch"] == killed_at + 2
    epochs = [int(row.split(",")[0]) for row in (run / "log.csv").read_text().splitlines()[1:]]
    assert epochs[-2:] == [killed_at, killed_at + 1]  # continued, not restarted


def test_best_model_is_chosen_on_validation_object_f1(tmp_path):
    """model.keras follows the selection metric (higher F1 is better), not the loss."""
    import keras

    from keras_unet.model import unet

    state = {"epoch": 0, "best": float("inf")}
    checkpoint = train.RunCheckpoint(tmp_path, state, select="val_object_f1", percentiles=(1.0, 99.8))
    checkpoint.set_model(unet(depth=3, base_filters=2, input_range=None))
    for epoch, (loss, f1) in enumerate([(0.5, 0.3), (0.2, 0.1), (0.4, 0.6), (0.1, 0.5)]):
        checkpoint.on_epoch_end(epoch, {"val_loss": loss, "val_object_f1": f1})
    assert state["best_epoch"] == 3 and state["best_value"] == 0.6 and state["selected_on"] == "val_object_f1"
    assert keras.models.load_model(tmp_path / "model.keras").name == "unet_percentile_normalized"
    config = train.TrainConfig(**TINY)
    assert train.selection_metric(config, True) == "val_object_f1"
    assert train.selection_metric(config.updated(n_classes=3), True) == "val_iou"
    assert train.selection_metric(config.updated(select_on="loss"), True) == "val_loss"
    assert train.selection_metric(config, False) == "loss"


def test_fit_logs_the_object_f1_it_selects_on(tmp_path):
    state = train.fit(train.TrainConfig(**TINY), tmp_path / "run", verbose=0)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "val_object_f1" in log[0].split(",")
    scores = [float(line.split(",")[log[0].split(",").index("val_object_f1")]) for line in log[1:]]
    assert state["selected_on"] == "val_object_f1" and state["best_value"] == max(scores)
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["selected_on"] == "val_object_f1"


@pytest.mark.parametrize("per_step, expected", [(0.5, "estimated training time: 2.1 min"), (3.0, "hint: over an hour")])
def test_time_estimate_after_the_first_steps(per_step, expected, monkeypatch):
    import io

    now = [0.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    config = train.TrainConfig(epochs=25, steps_per_epoch=10 if per_step < 1 else 100)
    estimate = train.ProgressEstimate(config, verbose=1, after_steps=5, out=out)
    estimate.on_epoch_begin(0)
    for step in range(6):
        now[0] += per_step
        estimate.on_train_batch_end(step)
    assert expected in out.getvalue(), out.getvalue()
    quiet = train.ProgressEstimate(config, verbose=0, out=(silent := io.StringIO()))
    quiet.on_epoch_begin(0)
    for step in range(8):
        quiet.on_train_batch_end(step)
    assert silent.getvalue() == ""


def test_a_run_folder_from_before_normalisation_loads_predicts_and_resumes(tmp_path):
    """A run made before per-image normalisation: fixed 0-255 range in the model's first layer, a config.json without
    the new settings. It predicts as before (raw values through its Rescaling layer) and resumes
    with its own settings, not the new defaults."""
    from keras_unet import inference, synthetic, tiling

    run = tmp_path / "old"
    train.fit(train.TrainConfig(**TINY, normalization="range", select_on="loss"), run, verbose=0)
    saved = json.loads((run / "config.json").read_text())
    for key in ("normalization", "percentiles", "select_on", "augment_on"):
        saved["config"].pop(key)
    saved.pop("min_object_size")
    (run / "config.json").write_text(json.dumps(saved))
    model = inference.load_model(run)
    assert model.get_layer("normalize") is not None and inference.unet_config(model)["percentiles"] is None
    image = synthetic.sample((90, 70), seed=2)[0].astype(np.float32)
    # as before: raw values mapped by 0-255 -> [0, 1], nothing per image
    from keras_unet.model import unet

    bare = unet(depth=3, base_filters=4, input_range=None)
    bare.set_weights(model.get_weights())
    np.testing.assert_allclose(tiling.predict_tiled(model, image), tiling.predict_tiled(bare, image / 255.0), atol=1e-5)
    state = train.resume(run, epochs=3, verbose=0)
    assert state["epoch"] == 3 and state["selected_on"] == "val_loss"
    resumed = inference.load_model(run / "last.keras")
    assert inference.unet_config(resumed)["percentiles"] is None and resumed.get_layer("normalize")
    assert inference.run_min_size(run) is None
