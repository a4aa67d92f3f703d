import json

import numpy as np
import pytest
from click.testing import CliRunner

from keras_unet import data
from keras_unet.cli.main import main
from keras_unet.model import unet


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def threshold_model(path, dark: bool = False):
    """A depth-1 'U-Net' whose weights make it predict class 1 exactly where the pixel > 127.5
    (``dark``: < 127.5)."""
    model = unet(depth=1, base_filters=1, dropout=0.0)
    for name in ("bottom_conv1", "bottom_conv2"):
        kernel = np.zeros((3, 3, 1, 1), np.float32)
        kernel[1, 1] = 1.0
        model.get_layer(name).set_weights([kernel, np.zeros(1, np.float32)])
    sign = -1.0 if dark else 1.0
    model.get_layer("logits").set_weights([np.array([[[[-200.0 * sign, 200.0 * sign]]]], np.float32),
                                           np.array([100.0 * sign, -100.0 * sign], np.float32)])
    model.save(path)
    return path


def test_help_and_version():
    assert "fit" in run("--help").output and "export" in run("--help").output
    from importlib.metadata import version

    assert run("--version").output.strip().endswith(version("unet-paper-keras"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One tiny run made through the CLI for the tests that start from a finished run:
    ``(run folder, fit's output)``. Tests that change it work on a copy (:func:`copy_run`)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("fit", "--depth", 3, "--base-filters", 4, "--tile", 68, "--epochs", 1, "--steps", 2, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def copy_run(cli_run, tmp_path):
    import shutil

    return shutil.copytree(cli_run[0], tmp_path / "run")


def test_fit_tiny_writes_run_folder(cli_run, tmp_path):
    out = copy_run(cli_run, tmp_path)
    assert "embedded synthetic cells" in cli_run[1] and "validation: object F1" in cli_run[1]
    for name in ("model.keras", "config.json", "log.csv", "curves.png", "samples.png"):
        assert (out / name).is_file()
    again = run("fit", "--depth", 3, "--out", out)
    assert again.exit_code == 2 and "holds a run already; continue it with --resume" in again.output
    longer = run("fit", "--resume", out, "--epochs", 2)
    assert longer.exit_code == 0, longer.output
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + epochs 1 and 2
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 2  # the record follows
    other = run("fit", "--resume", out, "--tile", 84)
    assert other.exit_code == 2 and "only --epochs may change" in other.output


@pytest.mark.parametrize("option, value, message", [
    ("--steps", 0, "--steps must be >= 1"), ("--batch-size", 0, "--batch-size must be >= 1"),
    ("--base-filters", 0, "--base-filters must be >= 1"), ("--classes", 1, "--classes must be >= 2"),
    ("--dropout", 1.5, "--dropout must be in [0, 1)"), ("--epochs", 0, "--epochs must be >= 1")])
def test_fit_settings_out_of_range_are_refused_before_anything_is_written(tmp_path, option, value, message):
    out = tmp_path / "run"
    result = run("fit", option, value, "--out", out)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_run_stopped_before_its_first_epoch_resumes_from_the_start(cli_run, tmp_path):
    out = copy_run(cli_run, tmp_path)
    for name in ("last.keras", "model.keras", "state.json", "log.csv"):
        (out / name).unlink()  # as if stopped (Ctrl-C) during epoch 1: config.json only
    (out / f".last.keras.{2**22 + 12345}.tmp.keras").write_bytes(b"half")  # a killed writer's leftover
    resumed = run("fit", "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert (out / "last.keras").is_file() and not list(out.glob(".*.tmp*"))


def test_fit_invalid_tile_is_one_line_error(tmp_path):
    result = run("fit", "--tile", 500, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "Error: input size 500 px is not valid" in result.output and "use 492 or 508" in result.output
    assert "Traceback" not in result.output


def test_predict_stack_and_evaluate_perfect(tmp_path):
    model = threshold_model(tmp_path / "threshold.keras")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    data.write_image(tmp_path / "one_page.tif", image[None], pages=True)  # a 1-page stack
    result = run("predict", model, tmp_path / "one_page.tif", "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    predicted = data.read_image(tmp_path / "pred" / "one_page.png")
    np.testing.assert_array_equal(predicted, np.where(image > 127, 255, 0))

    stack = rng.integers(0, 256, (3, 40, 30)).astype(np.uint8)
    data.write_image(tmp_path / "stack.tif", stack, pages=True)
    result = run("predict", model, tmp_path / "stack.tif", "--out", tmp_path / "pred", "--format", "probabilities")
    assert result.exit_code == 0, result.output
    probabilities = np.stack(data.read_pages(tmp_path / "pred" / "stack_probabilities.tif"))
    assert probabilities.shape == (3, 40, 30, 2) and probabilities.dtype == np.float32

    data.write_image(tmp_path / "ds" / "images" / "a.png", image)
    data.write_image(tmp_path / "ds" / "masks" / "a.png", np.where(image > 127, 255, 0).astype(np.uint8))
    result = run("evaluate", model, tmp_path / "ds", "--out", tmp_path / "metrics", "--sweep", "--tta", 2)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert report["settings"] == {"tile": None, "tta": 2, "threshold": None, "batch_size": 1, "sweep": True,
                                  "min_size": 0, "split": "none"}
    mean = report["rows"][-1]
    assert mean["image"] == "mean"
    assert mean["pixel_error"] == 0 and mean["isbi2012_rand_error"] == 0 and mean["warping_error"] == 0
    assert mean["v_rand"] == 1 and mean["v_info"] == 1 and mean["iou"] == 1
    assert mean["swept_v_rand"] == 1 and 0 <= mean["swept_v_rand_threshold"] <= 1
    assert "the challenge's protocol" in result.output
    result = run("evaluate", model, tmp_path / "ds", "--threshold", 1.5)
    assert result.exit_code == 2 and "--threshold" in result.output
    assert (tmp_path / "metrics" / "metrics.csv").read_text().startswith("image,pixel_error")


def test_predict_multichannel(tmp_path):
    model = unet(depth=2, base_filters=2, in_channels=3, dropout=0.0)
    model.save(tmp_path / "rgb.keras")
    image = np.random.default_rng(1).integers(0, 256, (45, 61, 3)).astype(np.uint8)
    data.write_image(tmp_path / "rgb.png", image)
    result = run("predict", tmp_path / "rgb.keras", tmp_path / "rgb.png", "--out", tmp_path / "pred", "--format", "tif")
    assert result.exit_code == 0, result.output
    assert data.read_image(tmp_path / "pred" / "rgb.tif").shape == (45, 61)


def test_bad_inputs_give_one_line_errors(tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    (tmp_path / "img.png").write_bytes(b"garbage")
    result = run("predict", tmp_path / "broken.keras", tmp_path / "img.png")
    assert result.exit_code == 2 and "broken.keras: cannot load model" in result.output
    model = threshold_model(tmp_path / "ok.keras")
    result = run("predict", model, tmp_path / "img.png", "--out", tmp_path / "pred")
    assert result.exit_code == 2 and "img.png: cannot read image" in result.output
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())
    (tmp_path / "empty").mkdir()
    result = run("evaluate", model, tmp_path / "empty")
    assert result.exit_code == 2 and "no image/mask pairs found" in result.output


def test_inspect_data_writes_grid(tmp_path):
    from keras_unet import synthetic

    synthetic.write_dataset(tmp_path / "ds", n=2, shape=(96, 96))
    result = run("inspect-data", tmp_path / "ds", "--out", tmp_path / "grid.png", "--samples", 2, "--tile", 188)
    assert result.exit_code == 0, result.output
    assert "samples: 2" in result.output and "masks: instance" in result.output
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    stained = run("inspect-data", tmp_path / "ds", "--out", tmp_path / "stained.png", "--samples", 2, "--tile", 188,
                  "--stain-jitter", 0.1)
    assert stained.exit_code == 0 and (tmp_path / "stained.png").is_file(), stained.output


# Runs the CLI with a banner written to file descriptor 2 while TensorFlow is imported, as
# TensorFlow's C++ start-up does (absl and oneDNN lines, before any log level applies): what the
# user sees then depends on the CLI alone, not on which banners this machine's TensorFlow prints.
BANNER_CLI = r"""
import importlib.abc, importlib.machinery, os, sys

class BannerLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):  # while the module runs, as TensorFlow's C++ start-up writes
        os.write(2, b"BANNER from the tensorflow import\n")
        self.loader.exec_module(module)

class Banner(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = BannerLoader(spec.loader)
        return spec

sys.meta_path.insert(0, Banner())
sys.argv = ["keras-unet"] + sys.argv[1:]
from keras_unet.cli.main import main
main()
"""


@pytest.mark.parametrize("log_level", [None, "0"])
def test_cli_errors_are_one_line_and_verbose_shows_the_import(tmp_path, log_level):
    """A user sees exactly the error line, whatever TF_CPP_MIN_LOG_LEVEL the caller set: the
    import's output is kept off stderr; with --verbose it is not."""
    import subprocess
    import sys

    from conftest import child_env

    (tmp_path / "broken.keras").write_bytes(b"")
    data.write_image(tmp_path / "img.png", np.zeros((8, 8), np.uint8))
    env = child_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    arguments = ["predict", str(tmp_path / "broken.keras"), str(tmp_path / "img.png")]
    done = subprocess.run([sys.executable, "-c", BANNER_CLI, *arguments], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [f"Error: {tmp_path / 'broken.keras'}: cannot load model (the file is empty)"]
    if log_level is not None:
        return  # --verbose once
    verbose = subprocess.run([sys.executable, "-c", BANNER_CLI, "--verbose", *arguments], capture_output=True,
                             text=True, env=env)
    assert verbose.returncode == 2
    assert "BANNER from the tensorflow import" in verbose.stderr.splitlines()
    assert verbose.stderr.splitlines()[-1] == done.stderr.splitlines()[0]


def test_explicit_tile_is_checked_against_the_memory_budget(tmp_path):
    model = threshold_model(tmp_path / "m.keras")
    data.write_image(tmp_path / "img.png", np.zeros((64, 64), np.uint8))
    result = run("predict", model, tmp_path / "img.png", "--tile", 5004, "--memory-mb", 64, "--out", tmp_path / "p")
    assert result.exit_code == 2 and "--tile 5004" in result.output and "use --tile" in result.output
    assert not (tmp_path / "p").exists()


def test_a_predicted_stack_reads_back_whole(tmp_path):
    import tifffile

    model = threshold_model(tmp_path / "m.keras")
    stack = np.random.default_rng(0).integers(0, 256, (3, 40, 30)).astype(np.uint8)
    data.write_image(tmp_path / "stack.tif", stack, pages=True)
    assert run("predict", model, tmp_path / "stack.tif", "--out", tmp_path / "p", "--format", "tif").exit_code == 0
    labels = tifffile.imread(tmp_path / "p" / "stack.tif")
    assert labels.shape == (3, 40, 30)
    np.testing.assert_array_equal(labels, (stack > 127).astype(np.uint8))


def _dataset(root, images, masks):
    for name, image in images.items():
        data.write_image(root / "images" / name, image)
    for name, mask in masks.items():
        data.write_image(root / "masks" / name, mask)
    return root


def _blobs(dtype=np.uint8, high=200):
    image = np.full((80, 80), 20, dtype)
    image[20:50, 20:50] = high
    mask = np.zeros((80, 80), np.uint8)
    mask[20:50, 20:50] = 255
    return image, mask


@pytest.mark.parametrize("case", ["mixed_depths", "all_empty", "binary_kind_many_values", "classes_on_binary", "nan"])
def test_inspect_data_and_fit_refuse_what_training_would_get_wrong(tmp_path, case):
    image, mask = _blobs()
    images, masks, options = {"a.png": image, "b.png": image}, {"a.png": mask, "b.png": mask}, []
    expected = {"mixed_depths": "images mix bit depths", "all_empty": "every mask is empty",
                "binary_kind_many_values": "--mask-kind binary takes two", "classes_on_binary": "--classes 3 wants",
                "nan": "NaN or infinite"}[case]
    if case == "mixed_depths":
        images["b.png"] = _blobs(np.uint16, 3000)[0]
    elif case == "all_empty":
        masks = {k: np.zeros_like(mask) for k in masks}
    elif case == "binary_kind_many_values":
        masks["b.png"] = np.array([0, 1, 2, 7], np.uint8)[np.arange(80 * 80).reshape(80, 80) % 4]
        options = ["--mask-kind", "binary"]
    elif case == "classes_on_binary":
        options = ["--classes", "3"]
    elif case == "nan":
        images = {"a.tif": image.astype(np.float32), "b.tif": np.where(image > 100, np.nan, image).astype(np.float32)}
        masks = {"a.tif": mask, "b.tif": mask}
    root = _dataset(tmp_path / "ds", images, masks)
    inspected = run("inspect-data", root, "--out", tmp_path / "grid.png", "--tile", 188, *options)
    assert inspected.exit_code == 2 and expected in inspected.output and "no problems found" not in inspected.output
    fitted = run("fit", "--data", root, "--tile", 188, "--base-filters", 2, "--epochs", 1, "--steps", 1,
                 "--out", tmp_path / "run", *options)
    assert fitted.exit_code == 2 and expected in fitted.output  # the same words
    assert not (tmp_path / "run" / "last.keras").exists()


def test_images_without_masks_and_empty_masks_are_reported(tmp_path):
    image, mask = _blobs()
    root = _dataset(tmp_path / "ds", {"a.png": image, "b.png": image, "c.png": image},
                    {"a.png": mask, "b.png": np.zeros_like(mask)})
    result = run("inspect-data", root, "--out", tmp_path / "grid.png", "--tile", 188, "--samples", 1)
    assert result.exit_code == 0, result.output
    assert "1 image(s) without a mask, not used: c.png" in result.output
    assert "1 mask(s) without any object: b.png" in result.output


def test_predict_names_the_file_for_images_the_model_cannot_take(tmp_path):
    model = threshold_model(tmp_path / "gray.keras")
    data.write_image(tmp_path / "rgb.png", np.zeros((40, 40, 3), np.uint8))
    result = run("predict", model, tmp_path / "rgb.png", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "rgb.png: image has 3 channel(s) but the model takes 1" in result.output
    data.write_image(tmp_path / "deep.tif", np.full((40, 40), 3000, np.uint16))
    result = run("predict", model, tmp_path / "deep.tif", "--out", tmp_path / "p")
    assert result.exit_code == 0 and "deep.tif: values up to 3000 exceed the range the model was trained on" in result.output
    data.write_image(tmp_path / "nan.tif", np.full((40, 40), np.nan, np.float32))
    result = run("predict", model, tmp_path / "nan.tif", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "nan.tif: image has NaN" in result.output


def test_an_unusable_out_is_refused_before_the_work(tmp_path):
    model = threshold_model(tmp_path / "m.keras")
    data.write_image(tmp_path / "img.png", np.zeros((40, 40), np.uint8))
    (tmp_path / "somefile").write_text("x")
    for args in (["predict", model, tmp_path / "img.png", "--out", tmp_path / "somefile" / "sub"],
                 ["export", model, "--format", "savedmodel", "--out", tmp_path / "somefile" / "sub"],
                 ["inspect-data", "--out", tmp_path / "somefile" / "grid.png"]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert "somefile: is a file, not a folder" in result.output and "Traceback" not in result.output


def test_export_with_an_invalid_tile_leaves_nothing(tmp_path):
    model = tmp_path / "m.keras"
    unet(base_filters=2, dropout=0.0).save(model)
    for fmt in ("tflite", "savedmodel"):
        result = run("export", model, "--format", fmt, "--tile", 500, "--out", tmp_path / fmt)
        assert result.exit_code == 2 and "input size 500 px is not valid" in result.output
        assert not (tmp_path / fmt).exists()


def test_a_planar_rgb_tiff_reads_as_channels_last(tmp_path):
    import tifffile

    planar = np.random.default_rng(0).integers(0, 256, (3, 20, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    (page,) = data.read_pages(tmp_path / "planar.tif")
    np.testing.assert_array_equal(page, np.moveaxis(planar, 0, -1))


def test_predict_instances_and_evaluate_objects(tmp_path):
    import tifffile

    model = threshold_model(tmp_path / "m.keras")
    image = np.zeros((60, 70), np.uint8)
    truth = np.zeros((60, 70), np.uint16)
    for label, (r, c) in enumerate([(5, 5), (5, 40), (35, 20)], start=1):
        image[r : r + 15, c : c + 20] = 200
        truth[r : r + 15, c : c + 20] = label
    image[50:52, 60:62] = 200  # a 4-px speck
    data.write_image(tmp_path / "ds" / "images" / "a.png", image)
    data.write_image(tmp_path / "ds" / "masks" / "a.tif", truth)
    result = run("predict", model, tmp_path / "ds" / "images" / "a.png", "--out", tmp_path / "p",
                 "--format", "instances", "--min-size", 10)
    assert result.exit_code == 0, result.output
    labels = tifffile.imread(tmp_path / "p" / "a_instances.tif")
    assert labels.dtype == np.uint16 and labels.max() == 3 and labels[51, 61] == 0
    result = run("evaluate", model, tmp_path / "ds", "--out", tmp_path / "metrics")
    assert result.exit_code == 0, result.output
    mean = json.loads((tmp_path / "metrics" / "metrics.json").read_text())["rows"][-1]
    assert mean["object_objects_true"] == 3 and mean["object_objects_found"] == 4  # the speck counts here
    assert mean["object_recall"] == 1 and mean["object_precision"] == 0.75 and mean["object_seg"] == 1
    result = run("evaluate", model, tmp_path / "ds", "--out", tmp_path / "metrics10", "--min-size", 10)
    assert result.exit_code == 0 and "objects under 10 px dropped" in result.output, result.output
    mean = json.loads((tmp_path / "metrics10" / "metrics.json").read_text())["rows"][-1]
    assert mean["object_objects_found"] == 3 and mean["object_precision"] == 1  # as predict drops the speck
    assert run("predict", model, tmp_path / "ds" / "images" / "a.png", "--format", "instances",
               "--min-size", -1).exit_code == 2


def test_evaluate_warns_about_masks_without_objects_and_a_hyperstack_is_checked(tmp_path):
    import tifffile

    model = threshold_model(tmp_path / "m.keras")
    data.write_image(tmp_path / "ds" / "images" / "a.png", np.full((40, 40), 200, np.uint8))
    data.write_image(tmp_path / "ds" / "masks" / "a.png", np.zeros((40, 40), np.uint8))
    result = run("evaluate", model, tmp_path / "ds")
    assert result.exit_code == 0 and "a.png: the mask has no object" in result.output
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((1, 2, 40, 40, 3), np.uint8))  # a 5-D stack of RGB pages
    result = run("predict", model, tmp_path / "five.tif", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "five.tif: image has 3 channel(s) but the model takes 1" in result.output


def test_predict_instances_defaults_to_the_runs_min_object_size(tmp_path):
    """Without --min-size, instances drop what the run found too small to be an object."""
    import tifffile

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    threshold_model(run_dir / "model.keras")
    (run_dir / "config.json").write_text(json.dumps({"config": {}, "min_object_size": 10}))
    image = np.zeros((60, 70), np.uint8)
    image[5:20, 5:25] = 200
    image[50:52, 60:62] = 200  # a 4-px speck
    data.write_image(tmp_path / "a.png", image)
    result = run("predict", run_dir, tmp_path / "a.png", "--out", tmp_path / "p", "--format", "instances")
    assert result.exit_code == 0, result.output
    assert "under 10 px dropped" in result.output
    labels = tifffile.imread(tmp_path / "p" / "a_instances.tif")
    assert labels.max() == 1 and labels[51, 61] == 0
    result = run("predict", run_dir, tmp_path / "a.png", "--out", tmp_path / "q", "--format", "instances",
                 "--min-size", 0)
    assert tifffile.imread(tmp_path / "q" / "a_instances.tif").max() == 2  # an explicit value wins


def test_predict_evaluate_and_export_use_the_post_processing_the_run_chose(tmp_path):
    """A run that chose p >= 0.9 and 30 px on its validation data: predict and evaluate make those
    objects unless told otherwise, and evaluate --calibrate chooses anew on a labelled folder."""
    import tifffile

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    threshold_model(run_dir / "model.keras")  # p(object) = sigmoid(400 (x/255 ... )): near 0 or 1 except near 127.5
    (run_dir / "config.json").write_text(json.dumps({"config": {}, "min_object_size": 4, "postprocessing": {
        "threshold": 0.9, "min_size": 30, "split": "none"}}))
    image = np.zeros((60, 70), np.uint8)
    image[5:20, 5:25] = 200  # 300 px
    image[40:45, 40:45] = 200  # 25 px: under the run's 30
    truth = np.zeros((60, 70), np.uint16)
    truth[5:20, 5:25], truth[40:45, 40:45] = 1, 2
    data.write_image(tmp_path / "ds" / "images" / "a.png", image)
    data.write_image(tmp_path / "ds" / "masks" / "a.tif", truth)
    result = run("predict", run_dir, tmp_path / "ds" / "images" / "a.png", "--out", tmp_path / "p",
                 "--format", "instances")
    assert result.exit_code == 0, result.output
    assert "p >= 0.9, under 30 px dropped, split none (chosen on the run's validation data" in result.output
    assert tifffile.imread(tmp_path / "p" / "a_instances.tif").max() == 1
    result = run("evaluate", run_dir, tmp_path / "ds", "--out", tmp_path / "m")
    assert result.exit_code == 0 and "objects under 30 px dropped" in result.output, result.output
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["rows"][-1]["object_objects_found"] == 1
    result = run("evaluate", run_dir, tmp_path / "ds", "--calibrate")
    assert result.exit_code == 0, result.output
    chosen = json.loads((run_dir / "config.json").read_text())["postprocessing"]
    assert chosen["min_size"] < 25 and chosen["value"] == 1.0 and chosen["data"] == str(tmp_path / "ds")
    assert "objects under 30 px" not in result.output  # evaluated with the new choice
    alone = tmp_path / "alone.keras"
    threshold_model(alone)
    refused = run("evaluate", alone, tmp_path / "ds", "--calibrate")
    assert refused.exit_code == 2 and "--calibrate writes its choice into a run folder" in refused.output


def test_cpu_preset_and_its_overrides(tmp_path):
    out = tmp_path / "run"
    result = run("fit", "--preset", "cpu", "--depth", 3, "--base-filters", 4, "--tile", 68, "--epochs", 1,
                 "--steps", 2, "--augment-on", "device", "--out", out)
    assert result.exit_code == 0, result.output
    assert "(cpu preset)" in result.output and "best by val_object_f1" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["optimizer"] == "adam" and config["config"]["lr_schedule"] == "cosine"
    assert config["config"]["max_minutes"] == 30 and config["config"]["normalization"] == "percentile"
    assert config["min_object_size"] >= 1
    both = run("fit", "--paper", "--preset", "demo", "--out", tmp_path / "other")
    assert both.exit_code == 2 and "contradict" in both.output and not (tmp_path / "other").exists()
    bad = run("fit", "--percentiles", 99, 1, "--out", tmp_path / "third")
    assert bad.exit_code == 2 and "--percentiles must be two numbers" in bad.output
