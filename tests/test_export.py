import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_unet import export, tiling
from keras_unet.cli.main import main
from keras_unet.data import DataError
from keras_unet.model import unet


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    unet(base_filters=4, dropout=0.0).save(path)
    return path


@pytest.fixture(scope="module")
def savedmodel(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving")
    return export.export_savedmodel(model_file, out, name="cells", tile=220)


def test_layout_and_version_increment(savedmodel, model_file):
    assert savedmodel.name == "1" and savedmodel.parent.name == "cells"
    assert (savedmodel / "saved_model.pb").is_file() and (savedmodel / "variables").is_dir()
    second = export.export_savedmodel(model_file, savedmodel.parent.parent, name="cells", tile=220)
    assert second.name == "2"


def test_signatures_names_dtypes_and_dynamic_dims(savedmodel):
    loaded = tf.saved_model.load(str(savedmodel))
    assert set(loaded.signatures) == {"serving_default", "segment"}
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "image" and spec.dtype == tf.float32 and spec.shape.as_list() == [None, None, None, 1]
    outputs = serve.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32 and outputs["labels"].dtype == tf.int32
    assert outputs["probabilities"].shape.as_list() == [None, None, None, 2]
    (whole,) = loaded.signatures["segment"].structured_input_signature[1].values()
    assert whole.shape.as_list() == [None, None, 1]


def test_fresh_process_without_keras_unet_matches_keras(savedmodel, model_file):
    diff, tolerance = export.verify(model_file, savedmodel, "savedmodel")
    assert diff <= tolerance == 1e-5


def test_tf1_serve_tag_path(savedmodel, model_file):
    script = f"""
import numpy as np, tensorflow as tf
tf.compat.v1.disable_eager_execution()
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], {str(savedmodel)!r})
    sig = meta.signature_def["serving_default"]
    image = np.full((1, 204, 204, 1), 100.0, np.float32)
    out = sess.run(sig.outputs["probabilities"].name, {{sig.inputs["image"].name: image}})
    np.save({str(savedmodel.parent / 'tf1.npy')!r}, out)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = keras.models.load_model(model_file).predict_on_batch(np.full((1, 204, 204, 1), 100.0, np.float32))
    np.testing.assert_allclose(np.load(savedmodel.parent / "tf1.npy"), expected, atol=1e-5)


def test_whole_image_signature_equals_predict(savedmodel, model_file):
    model = keras.models.load_model(model_file)
    image = np.random.default_rng(2).uniform(0, 255, (77, 131, 1)).astype(np.float32)
    loaded = tf.saved_model.load(str(savedmodel))
    result = loaded.signatures["segment"](image=tf.constant(image))
    expected = tiling.predict_tiled(model, image, tile=220)
    assert result["probabilities"].shape == (77, 131, 2)
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(result["labels"].numpy(), expected.argmax(-1))


def test_savedmodel_size_is_about_the_weights(tmp_path):
    model = unet(base_filters=16, dropout=0.0)
    path = export.export_savedmodel(model, tmp_path, tile=252)
    weights_bytes = model.count_params() * 4
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 1.2 * weights_bytes, (size, weights_bytes)


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic"])
def test_tflite_variants_run_in_litert(model_file, tmp_path, quantize):
    path = export.export_tflite(model_file, tmp_path, quantize=quantize)
    diff, tolerance = export.verify(model_file, path, "tflite", quantize)
    assert diff <= tolerance
    assert path.stat().st_size > (100_000 if quantize == "dynamic" else 200_000)  # the weights are in the file


def test_tflite_fixed_input(model_file, tmp_path):
    path = export.export_tflite(model_file, tmp_path, name="fixed", tile=236)
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    assert list(detail["shape_signature"]) == [1, 236, 236, 1]
    assert export.verify(model_file, path, "tflite")[0] < 1e-4


def test_cli_export_and_clear_errors(model_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(model_file), "--format", "tflite", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "verified in a fresh process" in result.output
    missing = runner.invoke(main, ["export", str(tmp_path / "nope.keras"), "--format", "savedmodel"])
    assert missing.exit_code == 2
    (tmp_path / "corrupt.keras").write_bytes(b"garbage")
    corrupt = runner.invoke(main, ["export", str(tmp_path / "corrupt.keras"), "--format", "savedmodel",
                                   "--out", str(tmp_path / "serving")])
    assert corrupt.exit_code == 2 and "corrupt.keras: cannot load model" in corrupt.output
    assert not (tmp_path / "serving").exists() or not list((tmp_path / "serving").rglob("saved_model.pb"))
    with pytest.raises(DataError, match="no such model file"):
        export.resolve_model(tmp_path / "nothing")
