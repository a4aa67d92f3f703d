"""The shipped nuclei model, fine-tuning from a model (fit --from), gray images for RGB models and
the three-class target (background / interior / boundary)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

import keras_unet
from keras_unet import data, inference, metrics, runs, synthetic, tiling, weights
from keras_unet.cli.main import main
from keras_unet.instances import instances_from_probabilities
from keras_unet.model import unet_config
from keras_unet.predictor import Predictor

from conftest import child_env, shared_data


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- the shipped model ------------------------------------------------------------------------


def test_models_lists_the_shipped_model_with_its_card():
    assert "nuclei" in runs.shipped_models()
    result = run("models")
    assert result.exit_code == 0, result.output
    for text in ("nuclei:", "training data: DSB2018", "licence:", "input:", "held-out images", "recipe:"):
        assert text in result.output
    card = runs.card("nuclei")
    assert card["scores"]["all"]["images"] >= 100
    size_mb = sum(f.stat().st_size for f in runs.SHIPPED.rglob("*") if f.is_file()) / 2**20
    assert size_mb <= 20, size_mb  # every shipped file together


def test_the_shipped_model_opens_in_plain_keras(tmp_path):
    path = runs.SHIPPED / "nuclei" / "model.keras"
    script = f"""
import sys
sys.modules["keras_unet"] = None  # any import of keras_unet now fails
import keras
model = keras.models.load_model({str(path)!r})
print(model.input_shape, model.output_shape)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(),
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "(None, None, None, 3) (None, None, None, 2)" in done.stdout


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    """The classical baseline: Otsu threshold, distance-transform watershed (scikit-image)."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    gray = image[..., 0] if image.ndim == 3 else image
    mask = ndimage.binary_fill_holes(gray > threshold_otsu(gray))
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=4, labels=ndimage.label(mask)[0], exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def held_out_fluorescence(count: int = 8) -> list:
    """Held-out DSB2018 fluorescence images (every fifth of the kind, as the recipe holds them out)."""
    root = shared_data("dsb2018-train")
    pairs = []
    for path in sorted((root / "images").glob("*.png")):
        image = data.read_image(path)
        if np.array_equal(image[..., 0], image[..., 1]) and np.median(image) <= 127:
            pairs.append((image, data.read_image(root / "masks" / f"{path.stem}.tif").astype(np.int64)))
    return pairs[4::5][:count]


def test_the_shipped_model_beats_otsu_watershed_on_held_out_nuclei_as_library_and_cli_alike(tmp_path):
    """The library caller (keras_unet.pretrained + the run's post-processing) and ``keras-unet
    predict nuclei`` give the same objects, and they score above the classical baseline."""
    pairs = held_out_fluorescence()
    model = keras_unet.pretrained("nuclei")
    chosen = runs.record("nuclei")["postprocessing"]  # the record as written, not read through our value
    ours, classical = [], []
    for i, (image, truth) in enumerate(pairs):
        found = instances_from_probabilities(inference.predict_probabilities(model, image),
                                             threshold=chosen["threshold"], min_size=chosen["min_size"],
                                             split=chosen["split"])
        ours.append(metrics.evaluate_objects(found, truth)["dsb_score"])
        classical.append(metrics.evaluate_objects(otsu_watershed(image), truth)["dsb_score"])
        if i == 0:  # the CLI, from a folder where no file is called nuclei, on the gray page
            data.write_image(tmp_path / "gray.png", image[..., 0])
            result = CliRunner().invoke(main, ["predict", "nuclei", str(tmp_path / "gray.png"), "--format",
                                               "instances", "--out", str(tmp_path / "out")], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            np.testing.assert_array_equal(data.read_image(tmp_path / "out" / "gray_instances.tif"), found)
            np.testing.assert_array_equal(keras_unet.segment("nuclei", image[..., 0]), found)  # the one-call API
    assert np.mean(ours) > np.mean(classical) + 0.05, (np.mean(ours), np.mean(classical))


def test_nuclei_hands_held_out_stained_images_to_its_partner_and_they_score_higher(tmp_path):
    """``predict nuclei`` on H&E images: nuclei-stained takes them (said per file), with its own
    recorded post-processing, and the objects score above nuclei's own on held-out images."""
    root = shared_data("dsb2018-train")
    stained = [p for p in sorted((root / "images").glob("*.png"))
               if not np.array_equal(*(data.read_image(p)[..., c] for c in (0, 1)))][4::5][:3]
    partner = runs.record("nuclei-stained")["postprocessing"]
    alone, paired = [], []
    for path in stained:
        image, truth = data.read_image(path), data.read_image(root / "masks" / f"{path.stem}.tif").astype(np.int64)
        own = instances_from_probabilities(inference.predict_probabilities(keras_unet.pretrained("nuclei-stained"),
                                                                           image),
                                           threshold=partner["threshold"], min_size=partner["min_size"],
                                           split=partner["split"])
        np.testing.assert_array_equal(keras_unet.segment("nuclei", image), own)
        paired.append(metrics.evaluate_objects(own, truth)["dsb_score"])
        alone.append(metrics.evaluate_objects(Predictor.of("nuclei", by_kind=False).segment(image), truth)["dsb_score"])
    assert np.mean(paired) > np.mean(alone) + 0.05, (paired, alone)
    result = run("predict", "nuclei", stained[0], "--out", tmp_path / "out")
    assert result.exit_code == 0 and "nuclei-stained, light background" in result.output, result.output


def test_an_unknown_model_name_is_a_one_line_error(tmp_path):
    data.write_image(tmp_path / "a.png", np.zeros((40, 40), np.uint8))
    result = run("predict", "nucleii", tmp_path / "a.png", "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert "nucleii: no such model file, run folder or shipped model (nuclei, nuclei-stained)" in result.output
    with pytest.raises(Exception, match="no shipped model of that name"):
        keras_unet.pretrained("cells")


def test_a_shipped_model_is_not_calibrated_in_place(tmp_path):
    root = tmp_path / "d"
    data.write_image(root / "images" / "a.png", np.zeros((64, 64), np.uint8))
    data.write_image(root / "masks" / "a.png", np.zeros((64, 64), np.uint8))
    before = (runs.SHIPPED / "nuclei" / "config.json").read_bytes()
    result = run("evaluate", "nuclei", root, "--calibrate")
    assert result.exit_code == 2 and "a shipped model is not changed" in result.output
    assert (runs.SHIPPED / "nuclei" / "config.json").read_bytes() == before


# -- gray images for RGB models --------------------------------------------------------------


def test_a_gray_image_on_an_rgb_model_is_the_image_as_r_g_b(model_file, tmp_path):
    import keras

    from keras_unet.model import inference_model, unet

    keras.utils.set_random_seed(5)
    rgb_model = inference_model(unet(depth=3, base_filters=4, in_channels=3, dropout=0.0, input_range=None),
                                (1.0, 99.8))
    gray = np.random.default_rng(0).integers(0, 255, (70, 90)).astype(np.uint8)
    as_rgb = np.stack([gray] * 3, axis=-1)
    np.testing.assert_array_equal(tiling.predict_tiled(rgb_model, gray, tile=108),
                                  tiling.predict_tiled(rgb_model, as_rgb, tile=108))
    config = {"in_channels": 3, "percentiles": (1.0, 99.8), "input_range": None}
    assert inference.check_image(gray, config, "g.png") == []
    with pytest.raises(data.DataError, match="two.png: image has 2 channel"):
        inference.check_image(np.zeros((8, 8, 2)), config, "two.png")


# -- fine-tuning -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "run"
    result = run("fit", "--depth", 3, "--base-filters", 4, "--tile", 68, "--epochs", 1, "--steps", 2, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def write_cells(root, count: int = 3, size: int = 128, seed: int = 4):
    for i in range(count):
        image, labels = synthetic.sample((size, size), seed=seed + i)
        data.write_image(root / "images" / f"c{i}.png", image)
        data.write_image(root / "masks" / f"c{i}.tif", labels.astype(np.uint16))
    return root


def network_weights(path):
    return tiling.network_of(inference.load_model(path)).get_weights()


def test_fit_from_starts_from_the_models_weights_with_its_architecture(source_run, tmp_path):
    folder = write_cells(tmp_path / "mine")
    out = tmp_path / "tuned"
    # a learning rate that moves nothing: what the run ends with is what it started from
    result = run("fit", "--from", source_run, "--data", folder, "--epochs", 1, "--steps", 1, "--lr", 1e-12,
                 "--tile", 68, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"starting from {source_run}" in result.output
    record = runs.record(out)["config"]
    assert (record["depth"], record["base_filters"], record["init_from"]) == (3, 4, str(source_run))
    assert record["learning_rate"] == 1e-12 and record["optimizer"] == "adam"  # the finetune preset, --lr on top
    for theirs, ours in zip(network_weights(source_run / "last.keras"), network_weights(out / "last.keras")):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    scratch = tmp_path / "scratch"
    result = run("fit", "--data", folder, "--depth", 3, "--base-filters", 4, "--epochs", 1, "--steps", 1, "--lr",
                 1e-12, "--tile", 68, "--out", scratch)
    assert result.exit_code == 0, result.output
    assert not np.allclose(network_weights(scratch / "last.keras")[0], network_weights(source_run / "last.keras")[0])


def test_fit_from_refuses_a_contradicting_architecture_before_writing(source_run, tmp_path):
    folder = write_cells(tmp_path / "mine", count=2)
    result = run("fit", "--from", source_run, "--data", folder, "--base-filters", 8, "--out", tmp_path / "x")
    assert result.exit_code == 2
    assert "--base-filters 8 contradicts" in result.output and "which has 4" in result.output
    assert not (tmp_path / "x").exists()
    result = run("fit", "--from", tmp_path / "missing", "--data", folder, "--out", tmp_path / "y")
    assert result.exit_code == 2 and "no such model file, run folder or shipped model" in result.output


def test_gray_data_fine_tunes_the_rgb_shipped_model(tmp_path):
    folder = write_cells(tmp_path / "gray", count=2, size=192)
    out = tmp_path / "tuned"
    result = run("fit", "--from", "nuclei", "--data", folder, "--epochs", 1, "--steps", 1, "--tile", 188,
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert unet_config(inference.load_model(out))["in_channels"] == 3
    image = data.read_image(folder / "images" / "c0.png")
    assert image.ndim == 2 and inference.predict_probabilities(inference.load_model(out), image).shape[-1] == 2


# -- the three-class target --------------------------------------------------------------------


def brute_force_rims(instances: np.ndarray, width: int) -> np.ndarray:
    """Object pixels with a different label (background included) within ``width`` px, the image
    edge not counting: pixel by pixel."""
    out = np.zeros(instances.shape, bool)
    for y, x in zip(*np.nonzero(instances)):
        window = instances[max(0, y - width) : y + width + 1, max(0, x - width) : x + width + 1]
        out[y, x] = np.any(window != instances[y, x])
    return out


def test_three_class_target_against_brute_force_and_back_to_the_objects():
    instances = np.zeros((40, 50), np.int32)
    instances[5:20, 5:20], instances[5:20, 20:33], instances[25:38, 10:45] = 1, 2, 3  # 1 and 2 touch
    instances[0:6, 44:50] = 4  # at the image corner
    target, w = weights.three_class_target(instances, width=2)  # 2 px: the rule shows more
    np.testing.assert_array_equal(target == 2, brute_force_rims(instances, 2))
    np.testing.assert_array_equal(target == 1, (instances > 0) & ~brute_force_rims(instances, 2))
    totals = [w[target == k].sum() for k in range(3)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)  # balanced: each class the same total weight
    back = instances_from_probabilities(np.eye(3, dtype=np.float32)[target], split="boundary")
    assert metrics.evaluate_objects(back, instances)["dsb_score"] == 1.0
    with pytest.raises(Exception, match="split 'boundary' is for a three-class model"):
        instances_from_probabilities(np.eye(2, dtype=np.float32)[target.clip(0, 1)], split="boundary")


def test_three_class_round_trip_on_real_nuclei():
    """Real DSB2018 masks through the target (1 px rims) and back: only nuclei too thin for an
    interior are lost; the paper's two-class target and its borders given back do no better."""
    root = shared_data("dsb2018-train")
    scores, paper = [], []
    for path in sorted((root / "masks").glob("*.tif"))[:20]:
        truth = data.read_image(path).astype(np.int64)
        target, _ = weights.three_class_target(truth)
        back = instances_from_probabilities(np.eye(3, dtype=np.float32)[target], split="boundary")
        scores.append(metrics.evaluate_objects(back, truth)["dsb_score"])
        two = instances_from_probabilities(np.eye(2, dtype=np.float32)[weights.binary_target(truth, 1)])
        paper.append(metrics.evaluate_objects(two, truth)["dsb_score"])
    assert np.mean(scores) > 0.97 and np.mean(scores) >= np.mean(paper), (np.mean(scores), np.mean(paper))


def test_fit_three_class_records_the_boundary_post_processing(tmp_path):
    out = tmp_path / "three"
    result = run("fit", "--target", "three_class", "--depth", 3, "--base-filters", 4, "--tile", 68, "--epochs", 1,
                 "--steps", 2, "--out", out)
    assert result.exit_code == 0, result.output
    record = runs.record(out)
    chosen = Predictor.of(out).postprocessing
    assert record["config"]["n_classes"] == 3 and chosen.chosen
    assert chosen.split == record["postprocessing"]["split"]  # what the search chose, read back as recorded
    # the search tried the boundary split against none, and said what it chose
    assert f"split {chosen.split} (DSB score" in result.output and "with argmax, split boundary)" in result.output
    # a three-class run's default, where nothing was chosen, is its boundary class (two-class: none)
    runs.update_record(out, postprocessing={})
    default = Predictor.of(out).postprocessing
    assert default.split == "boundary" and not default.chosen
    bad = run("fit", "--target", "three_class", "--classes", 2, "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--classes must be 3 for --target three_class" in bad.output
    json.dumps(record)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_the_shipped_model_exports_by_name_with_its_verification(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="the [onnx] extra (in the test extras) is not installed")
    result = run("export", "nuclei", "--format", fmt, "--tile", 252, "--out", tmp_path / "out", "--name", "nuclei")
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "out").rglob("*.pb" if fmt == "savedmodel" else "*.onnx"))
    assert "this export is nuclei alone (export nuclei-stained for those images)" in result.output


def test_a_runs_settings_are_the_recorded_ones_and_equal_what_the_layers_say(source_run):
    """load_model gives a run's model the settings its run recorded (runs.architecture); they
    agree with reading them back from the layers, for a fresh run and the shipped model."""
    from keras_unet.model import _read_unet_config

    for path in (source_run, "nuclei"):
        model = inference.load_model(path)
        recorded = {**runs.architecture(path), "in_channels": int(model.input_shape[-1])}
        assert unet_config(model) == recorded
        read = _read_unet_config(model)
        assert {**read, "input_range": read["input_range"] and tuple(read["input_range"])} == recorded


def test_the_cached_model_is_loaded_again_when_its_file_changes(model_file, tmp_path):
    """The napari loop (predict, correct, train on, predict again) must not keep the old weights."""
    import os
    import shutil

    from keras_unet import inference

    path = tmp_path / "model.keras"
    shutil.copy(model_file, path)
    first = inference.load_model_cached(path)
    assert inference.load_model_cached(str(path)) is first
    shutil.copy(model_file, path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert inference.load_model_cached(path) is not first


def test_diameter_resizes_large_nuclei_to_what_the_model_learned(tmp_path):
    """Nuclei 4x larger than those it trained on (a real DSB2018 crop, enlarged): the shipped model
    fails on them as they are and, told their diameter, finds them as in the original, through
    the library and predict --diameter alike."""
    root = shared_data("dsb2018-train")
    name = "547ef286ee5f4e5dce533e982e6992ada67b7d727fdd3cfa6576f24c631a7ae6"
    image = data.read_image(root / "images" / f"{name}.png")[:256, :256]
    truth = data.read_image(root / "masks" / f"{name}.tif").astype(np.int64)[:256, :256]
    areas = np.bincount(truth.ravel())[1:]
    diameter = float(np.median(np.sqrt(4 * areas[areas > 0] / np.pi)))  # 22 px
    original = metrics.evaluate_objects(keras_unet.segment("nuclei", image), truth)["f1"]
    big, big_truth = np.kron(image, np.ones((4, 4, 1), image.dtype)), np.kron(truth, np.ones((4, 4), truth.dtype))
    plain = metrics.evaluate_objects(keras_unet.segment("nuclei", big), big_truth)["f1"]
    sized = keras_unet.segment("nuclei", big, diameter=4 * diameter)
    f1 = metrics.evaluate_objects(sized, big_truth)["f1"]
    assert original > 0.7 and plain < 0.4 and f1 > original - 0.05, (original, plain, f1)
    data.write_image(tmp_path / "big.png", big)
    result = CliRunner().invoke(main, ["predict", "nuclei", str(tmp_path / "big.png"), "--format", "instances",
                                       "--diameter", str(4 * diameter), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "images resized by 0.229" in result.output
    np.testing.assert_array_equal(data.read_image(tmp_path / "out" / "big_instances.tif"), sized)


def test_diameter_scales_the_runs_minimum_size_and_needs_a_recorded_diameter(model_file, tmp_path):
    own = Predictor.of("nuclei").postprocessing
    halved = Predictor.of("nuclei", diameter=2 * 20.2).postprocessing
    assert own.scale == 1.0 and halved.scale == pytest.approx(0.5)
    assert halved.min_size == 4 * own.min_size and halved.threshold == own.threshold
    assert Predictor.of("nuclei", diameter=40.4, min_size=5).postprocessing.min_size == 5  # given: kept
    data.write_image(tmp_path / "cells.png", synthetic.sample(shape=(96, 96))[0])
    result = CliRunner().invoke(main, ["predict", str(model_file), str(tmp_path / "cells.png"), "--diameter", "30",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "records no object diameter" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_fit_records_the_training_objects_diameter(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--depth", "3", "--base-filters", "4", "--tile", "68", "--epochs", "1",
                                       "--steps", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    recorded = runs.record(tmp_path / "run")["object_diameter"]
    cells = [synthetic.sample(seed=s)[1] for s in range(3)]
    areas = np.concatenate([np.bincount(c.ravel())[1:] for c in cells])
    assert 0.6 < recorded / np.median(np.sqrt(4 * areas[areas > 0] / np.pi)) < 1.1  # borders take a rim off


def test_evaluate_with_diameter_scores_what_predict_with_diameter_makes(tmp_path):
    """evaluate --diameter measures predict --diameter's objects (the same resizing), and is refused
    with --calibrate, whose sizes belong to the model's own scale."""
    root = shared_data("dsb2018-train")
    name = "547ef286ee5f4e5dce533e982e6992ada67b7d727fdd3cfa6576f24c631a7ae6"
    image = data.read_image(root / "images" / f"{name}.png")[:128, :160]
    truth = data.read_image(root / "masks" / f"{name}.tif").astype(np.uint16)[:128, :160]
    big, big_truth = np.kron(image, np.ones((3, 3, 1), image.dtype)), np.kron(truth, np.ones((3, 3), truth.dtype))
    data.write_image(tmp_path / "set" / "images" / "a.png", big)
    data.write_image(tmp_path / "set" / "masks" / "a.tif", big_truth)
    expected = metrics.evaluate_objects(keras_unet.segment("nuclei", big, diameter=66), big_truth.astype(np.int64))
    result = CliRunner().invoke(main, ["evaluate", "nuclei", str(tmp_path / "set"), "--diameter", "66", "--out",
                                       str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"][0]
    assert row["object_f1"] == pytest.approx(expected["f1"]) and row["object_f1"] > 0.5
    refused = CliRunner().invoke(main, ["evaluate", "nuclei", str(tmp_path / "set"), "--diameter", "66",
                                        "--calibrate"])
    assert refused.exit_code == 2 and "leave out --diameter" in refused.output
