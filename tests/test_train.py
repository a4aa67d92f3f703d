import json
from pathlib import Path

import numpy as np
import pytest

from keras_unet import train
from keras_unet.errors import ModelFileError

from conftest import child_env

TINY = dict(depth=3, base_filters=4, tile=68, batch_size=2, epochs=2, steps_per_epoch=3,
            synthetic_images=3, synthetic_size=64, optimizer="adam", learning_rate=1e-3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run for the tests that only read it: ``(run folder, fit's state)``."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    return run, train.fit(train.TrainConfig(**TINY), run, verbose=0)


def copy_of(tiny_run, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_run[0], tmp_path / "run"))


def test_fit_writes_the_run_folder(tiny_run):
    run, state = tiny_run
    for name in ("model.keras", "last.keras", "config.json", "state.json", "log.csv", "curves.png", "samples.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["tile"] == 68 and config["versions"]["tensorflow"]
    assert state["epoch"] == 2
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and len(log) == 3
    assert {"train_seconds", "val_seconds"} <= set(log[0].split(","))
    assert not list(run.glob("*.tmp*"))  # no temporary files left behind


def test_best_model_loads_without_keras_unet(tiny_run, tmp_path):
    """model.keras is an inference model: plain Keras opens it where keras_unet cannot be imported,
    and it predicts what the trained model predicts; last.keras keeps the optimizer."""
    import subprocess
    import sys

    import keras

    run, _ = tiny_run
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
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env())
    assert done.returncode == 0, done.stderr[-1500:]
    # the best network on the image as fit normalised it (numpy's percentiles of the whole image)
    best = keras.models.load_model(run / "model.keras").get_layer("unet")
    low, high = np.percentile(image[0].astype(np.float64), [1.0, 99.8])
    expected = best.predict_on_batch(((image[0] - low) / (high - low))[None].astype(np.float32))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
    assert (run / "model.keras").stat().st_size < 0.7 * (run / "last.keras").stat().st_size  # no Adam state
    assert keras.models.load_model(run / "last.keras", compile=True).optimizer is not None


def test_resume_continues_epochs_and_optimizer(tiny_run, tmp_path):
    import keras

    run = copy_of(tiny_run, tmp_path)
    iterations_before = int(keras.models.load_model(run / "last.keras").optimizer.iterations)
    assert iterations_before == 2 * TINY["steps_per_epoch"]
    state = train.resume(run, epochs=4, verbose=0)
    assert state["epoch"] == 4
    log = (run / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]  # continued, not restarted
    resumed = keras.models.load_model(run / "last.keras")
    assert int(resumed.optimizer.iterations) == 4 * TINY["steps_per_epoch"]
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 4  # the record follows


def test_resume_of_a_folder_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(ModelFileError, match="not a run folder to resume"):
        train.resume(tmp_path)


def test_a_budget_plans_the_schedule_to_finish_inside_it(tmp_path):
    """With --max-minutes and a schedule far too long, fit measures its costs in the first epoch,
    plans fewer epochs, decays the learning rate to its end, validates within its share of the
    time, and ends as completed, not stopped."""
    import keras

    # float32: on a bfloat16 CPU, precision auto first measures both (a few seconds of graph
    # building, rightly inside the budget), which leaves a 15 s budget only its minimum of 2 epochs
    config = train.TrainConfig(**{**TINY, "epochs": 10_000, "max_minutes": 0.25, "lr_schedule": "cosine",
                                  "precision": "float32"})
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))

    state = train.fit(config, tmp_path / "run", verbose=0, callbacks=[Rates()])
    plan = state["plan"]
    assert 2 <= plan["epochs"] < 10_000 and state["epoch"] == plan["epochs"] and not state["time_limited"]
    assert plan["seconds"] <= 15 and plan["validate_at"][-1] == plan["epochs"] and plan["validate_at"][0] == 1
    total = plan["epochs"] * plan["steps_per_epoch"]
    assert rates[0] == pytest.approx(TINY["learning_rate"], rel=1e-3)
    # the cosine decay reaches its end with the plan: the last step's rate, by hand
    assert rates[-1] == pytest.approx(0.5 * TINY["learning_rate"] * (1 + np.cos(np.pi * (total - 1) / total)),
                                      rel=1e-3, abs=1e-9)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    validated = np.flatnonzero(np.isfinite(log["val_loss"])) + 1
    assert list(validated) == plan["validate_at"]
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    assert saved["plan"]["epochs"] == plan["epochs"]
    assert "postprocessing" in json.loads((tmp_path / "run" / "config.json").read_text())


def test_a_budget_on_a_faster_machine_is_filled_with_more_epochs(tmp_path):
    """A budget is a budget: 2 configured epochs of tiny steps (well under a second each) in a
    1 min budget are planned up to the fill limit (4x: 8 epochs), trained to the plan's end (not to
    the budget's), and a resume keeps the plan. The budget leaves room on a slow, loaded machine."""
    from keras_unet.budget import FILL_LIMIT

    config = train.TrainConfig(**{**TINY, "epochs": 2, "max_minutes": 1.0, "lr_schedule": "cosine"})
    state = train.fit(config, tmp_path / "run", verbose=0)
    plan = state["plan"]
    assert plan["epochs"] == 2 * FILL_LIMIT and state["epoch"] == plan["epochs"] and not state["time_limited"]
    assert f"at most {FILL_LIMIT}x the configured epochs" in plan["reason"]
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert len(log) == plan["epochs"]
    resumed = train.resume(tmp_path / "run", verbose=0)
    assert resumed["epoch"] == plan["epochs"]  # the plan's end reached: nothing more trained
    fixed = train.fit(config.updated(fixed_schedule=True), tmp_path / "fixed", verbose=0)
    assert fixed["epoch"] == 2  # an explicit --epochs is kept as given


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

    state = train.fit(train.TrainConfig(**{**TINY, "epochs": 1, "precision": "float16", "strategy": "mirrored"}),
                      tmp_path / "run", verbose=0)
    import tensorflow as tf

    expected = "float16" if tf.config.list_physical_devices("GPU") else "bfloat16"  # what train.py picks
    assert state["model"].get_layer("enc1_conv1").compute_dtype == expected
    assert state["model"].output.dtype == "float32"
    assert np.isfinite(state["history"]["loss"][-1])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for the caller


# Kills its own process (SIGKILL: no clean-up runs) at the second step of the third epoch, after
# two epochs were written, as an out-of-memory kill would, but at a fixed point.
KILLED_RUN = """
import json, os, signal, sys
import keras
from keras_unet import train

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

train.fit(train.TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], verbose=0, callbacks=[Kill()])
"""


def test_sigkill_mid_epoch_then_resume(tmp_path):
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    config = {**TINY, "epochs": 40, "steps_per_epoch": 4}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(config), str(run)], env=child_env(),
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    state = train.resume(run, epochs=4, verbose=0)
    assert state["epoch"] == 4
    epochs = [int(row.split(",")[0]) for row in (run / "log.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3]  # continued after the two written epochs, not restarted


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


def test_fit_logs_the_object_f1_it_selects_on(tiny_run):
    run, state = tiny_run
    log = (run / "log.csv").read_text().splitlines()
    assert "val_object_f1" in log[0].split(",")
    scores = [float(line.split(",")[log[0].split(",").index("val_object_f1")]) for line in log[1:]]
    assert state["selected_on"] == "val_object_f1" and state["best_value"] == max(scores)
    saved = json.loads((run / "state.json").read_text())
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
    from keras_unet import inference, runs, synthetic, tiling

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
    assert runs.min_object_size(run) is None
