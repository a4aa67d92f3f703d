import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_unet import export, tiling
from keras_unet.cli.main import main
from keras_unet.errors import ModelFileError, UserInputError
from keras_unet.model import inference_model, unet
from keras_unet.postprocess import PostProcessing

from conftest import child_env, shared_data


@pytest.fixture(scope="module")
def savedmodel(served):
    return served[0]


def test_layout_and_version_increment(savedmodel, model_file):
    assert savedmodel.name == "1" and savedmodel.parent.name == "cells"
    assert (savedmodel / "saved_model.pb").is_file() and (savedmodel / "variables").is_dir()
    second = export.export_savedmodel(model_file, savedmodel.parent.parent, name="cells", tile=220)
    assert second.name == "2"


def test_signatures_names_dtypes_and_dynamic_dims(savedmodel):
    loaded = tf.saved_model.load(str(savedmodel))
    assert set(loaded.signatures) == {"serving_default", "segment", "instances"}
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "image" and spec.dtype == tf.float32 and spec.shape.as_list() == [None, None, None, 1]
    outputs = serve.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32 and outputs["labels"].dtype == tf.int32
    assert outputs["probabilities"].shape.as_list() == [None, None, None, 2]
    (whole,) = loaded.signatures["segment"].structured_input_signature[1].values()
    assert whole.shape.as_list() == [None, None, 1]


def test_the_cli_verified_every_signature_in_a_fresh_process(served):
    """export --format savedmodel checked serving_default, segment and instances against the
    Keras model and keras-unet predict, in a process that never imported keras_unet."""
    _, output = served
    checks = [line for line in output.splitlines() if line.startswith("verified in a fresh process")]
    assert [line.split(": ")[1] for line in checks] == ["serving_default 220x220", "segment 203x317",
                                                         "instances 203x317"]
    assert "instances 203x317: the objects of predict --format instances, 0 pixel(s) differ" in output
    for line in checks[:2]:
        diff = float(line.split("= ")[1].split()[0])
        assert diff <= 1e-5 and line.endswith(", 0 label(s) differ")


def test_verify_catches_an_export_of_another_model(savedmodel, tmp_path):
    keras.utils.set_random_seed(4)
    other = tmp_path / "other.keras"
    inference_model(unet(base_filters=4, dropout=0.0, input_range=None), (1.0, 99.8)).save(other)
    with pytest.raises(export.ExportError, match="differs from the Keras model"):
        export.verify(other, savedmodel, "savedmodel", tile=220)


def test_verify_catches_other_objects(savedmodel, model_file):
    """The instances check compares objects: the same export against a min size it was not
    exported with gives other objects."""
    with pytest.raises(export.ExportError, match="gives other objects than keras-unet predict"):
        export.verify(model_file, savedmodel, "savedmodel", tile=220, postprocessing=PostProcessing(min_size=400))


BAD_REQUESTS = r"""
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
serve, segment = loaded.signatures["serving_default"], loaded.signatures["segment"]
cases = [(serve, (220, 220, 1)), (serve, (220, 220)), (serve, (2, 1, 220, 220, 1)), (serve, (1, 220, 220, 3)),
         (serve, (1, 500, 500, 1)), (serve, (1, 100, 100, 1)), (serve, (1, 1, 1, 1)), (segment, (2, 64, 64, 1)),
         (segment, (64, 64)), (segment, (64, 64, 2)), (segment, (0, 5, 1))]
for fn, shape in cases:
    try:
        fn(image=tf.zeros(shape, tf.float32))
        print(shape, "ACCEPTED")
    except tf.errors.InvalidArgumentError as err:
        lines = [l for l in err.message.splitlines() if "must" in l or "compatible" in l]
        print(shape, "INVALID_ARGUMENT", lines[0] if lines else err.message.splitlines()[0])
print("tiny", segment(image=tf.zeros((1, 1, 1)))["labels"].shape, segment(image=tf.zeros((3, 7, 1)))["labels"].shape)
"""


def test_malformed_requests_are_invalid_argument_and_the_process_survives(savedmodel):
    """Rank 2, 3, 5, wrong channels, invalid and tiny sizes: each a readable INVALID_ARGUMENT,
    never an abort (a rank-3 tile once killed the process in the oneDNN convolution)."""
    done = subprocess.run([sys.executable, "-c", BAD_REQUESTS, str(savedmodel)], capture_output=True, text=True,
                          env=child_env())
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 12 and "ACCEPTED" not in done.stdout
    assert all("INVALID_ARGUMENT" in line for line in lines[:11])
    assert sum("is not compatible with expected shape [?,?,?,1]" in line for line in lines[:4]) == 4
    assert sum("must be valid tile sizes, 188 + 16k px" in line for line in lines[4:7]) == 3
    assert sum("is not compatible with expected shape [?,?,1]" in line for line in lines[7:10]) == 3
    assert "at least 1 px" in lines[10]
    assert lines[11] == "tiny (1, 1) (3, 7)"


def _fields(buffer: bytes) -> dict:
    """Length-delimited fields of one protobuf message: ``{field number: [payload, ...]}``
    (a minimal reader, independent of the writer, enough for the warm-up records)."""
    fields, i = {}, 0

    def varint():
        nonlocal i
        value = shift = 0
        while True:
            byte = buffer[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(buffer):
        key = varint()
        assert key & 7 == 2, "only length-delimited fields expected"
        length = varint()
        fields.setdefault(key >> 3, []).append(buffer[i : i + length])
        i += length
    return fields


def test_warmup_requests_replay_every_signature(savedmodel):
    from tensorflow.core.framework import tensor_pb2

    path = savedmodel / "assets.extra" / "tf_serving_warmup_requests"
    loaded = tf.saved_model.load(str(savedmodel))
    replayed = set()
    for record in tf.data.TFRecordDataset(str(path)):
        request = _fields(_fields(_fields(record.numpy())[6][0])[1][0])  # PredictionLog.predict_log.request
        spec = _fields(request[1][0])
        assert spec[1] == [b"cells"]  # the model name TF Serving serves it under
        entry = _fields(request[2][0])
        assert entry[1] == [b"image"]
        image = tf.make_ndarray(tensor_pb2.TensorProto.FromString(entry[2][0]))
        signature = spec[3][0].decode()
        out = loaded.signatures[signature](image=tf.constant(image))
        if signature == "instances":
            assert out["instances"].shape == image.shape[:-1]
        else:
            assert out["labels"].shape == image.shape[:-1] if signature == "segment" else out["labels"].shape[0] == 1
        replayed.add(signature)
    assert replayed == {"serving_default", "segment", "instances"}
    try:  # where tensorflow-serving-api is installed, its own parser reads the records too
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        return
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        assert log.predict_log.request.model_spec.signature_name in replayed


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
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env())
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


def test_instances_signature_equals_predict_format_instances(savedmodel, model_file):
    """Objects from the served graph equal `keras-unet predict --format instances` (the numpy
    post-processing) on real-looking images: synthetic cells at an odd size and an ISBI slice."""
    from keras_unet import inference, synthetic
    from keras_unet.model import unet_config

    model = keras.models.load_model(model_file)
    signature = tf.saved_model.load(str(savedmodel)).signatures["instances"]
    images = [synthetic.model_image((203, 317), unet_config(model), seed=4)]
    from keras_unet import data

    isbi = shared_data("isbi2012", "train", "image", "03.png")
    images.append(data.read_image(isbi)[:300, :260, None].astype(np.float32))
    for image in images:
        expected = PostProcessing().objects(tiling.predict_tiled(model, image, tile=220))
        got = signature(image=tf.constant(image))["instances"].numpy()
        assert got.dtype == np.int32 and expected.max() > 1
        np.testing.assert_array_equal(got, expected)


def test_instances_signature_drops_what_the_run_drops(model_file, tmp_path):
    """Exported with a run's min_object_size, the signature drops the objects predict drops."""
    from keras_unet import inference, synthetic
    from keras_unet.model import unet_config

    model = keras.models.load_model(model_file)
    path = export.export_savedmodel(model, tmp_path, name="cells", tile=220,
                                   postprocessing=PostProcessing(min_size=40))
    image = synthetic.model_image((203, 317), unet_config(model), seed=4)
    got = tf.saved_model.load(str(path)).signatures["instances"](image=tf.constant(image))["instances"].numpy()
    probabilities = tiling.predict_tiled(model, image, tile=220)
    np.testing.assert_array_equal(got, PostProcessing(min_size=40).objects(probabilities))
    assert got.max() < PostProcessing().objects(probabilities).max()  # some objects were under 40 px


def test_savedmodel_size_is_about_the_weights(tmp_path):
    model = unet(base_filters=16, dropout=0.0)
    path = export.export_savedmodel(model, tmp_path, tile=252)
    weights_bytes = model.count_params() * 4
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 1.2 * weights_bytes, (size, weights_bytes)


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_tflite_variants_run_in_litert(model_file, tmp_path, quantize):
    tile = 236 if quantize == "float16" else None  # a fixed input, and a resizable one
    path = export.export_tflite(model_file, tmp_path, quantize=quantize, tile=tile)
    from ai_edge_litert.interpreter import Interpreter

    shape = list(Interpreter(model_path=str(path)).get_input_details()[0]["shape_signature"])
    assert shape == ([1, 236, 236, 1] if tile else [-1, -1, -1, 1])
    report = export.verify(model_file, path, "tflite", quantize, tile=236)
    tolerance = report.pop("tolerance")
    assert list(report) == ["tflite 236x236"] and report["tflite 236x236"][0] <= tolerance
    assert path.stat().st_size > (100_000 if quantize == "dynamic" else 200_000)  # the weights are in the file


def test_cli_export_and_clear_errors(model_file, savedmodel, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(model_file), "--format", "tflite", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "verified in a fresh process: tflite 572x572" in result.output  # float32, resizable, the default size
    again = runner.invoke(main, ["export", str(model_file), "--format", "savedmodel", "--out",
                                 str(savedmodel.parent.parent), "--name", "cells", "--version", 1, "--no-verify"])
    assert again.exit_code == 2 and "version 1 exists already" in again.output and "Traceback" not in again.output
    missing = runner.invoke(main, ["export", str(tmp_path / "nope.keras"), "--format", "savedmodel"])
    assert missing.exit_code == 2
    (tmp_path / "corrupt.keras").write_bytes(b"garbage")
    corrupt = runner.invoke(main, ["export", str(tmp_path / "corrupt.keras"), "--format", "savedmodel",
                                   "--out", str(tmp_path / "serving")])
    assert corrupt.exit_code == 2 and "corrupt.keras: cannot load model" in corrupt.output
    assert not (tmp_path / "serving").exists() or not list((tmp_path / "serving").rglob("saved_model.pb"))
    with pytest.raises(ModelFileError, match="no such model file"):
        export.resolve_model(tmp_path / "nothing")


def test_segment_equals_overlap_tile_prediction_at_every_tile_boundary(savedmodel, model_file):
    """Tile 220: 36 px kept, origins every 32 px; sizes around each boundary, and tiny ones."""
    model = keras.models.load_model(model_file)
    segment = tf.saved_model.load(str(savedmodel)).signatures["segment"]
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (3, 7), (35, 36), (36, 37), (68, 69), (100, 33)]:
        image = rng.uniform(0, 255, (*shape, 1)).astype(np.float32)
        got = segment(image=tf.constant(image))["probabilities"].numpy()
        np.testing.assert_allclose(got, tiling.predict_tiled(model, image, tile=220), atol=1e-5, err_msg=str(shape))


def test_onnx_export_matches_keras_for_tiles_and_any_size(model_file, tmp_path):
    """One conversion, as a user runs it: both files written and checked in onnxruntime."""
    result = CliRunner().invoke(main, ["export", str(model_file), "--format", "onnx", "--tile", "220",
                                       "--name", "cells", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cells.onnx").is_file() and (tmp_path / "cells_segment.onnx").is_file()
    checks = [line for line in result.output.splitlines() if line.startswith("verified in a fresh process")]
    assert [line.split(": ")[1] for line in checks] == ["onnx tiles 220x220", "onnx segment 203x317"]
    for line in checks:
        assert float(line.split("= ")[1].split()[0]) <= 1e-4 and line.endswith(", 0 label(s) differ")
    # the verification can fail: the any-size file is not the tile file
    with pytest.raises(UserInputError, match="does not load|differs"):
        export.verify(model_file, [tmp_path / "cells.onnx", tmp_path / "cells.onnx"], "onnx", tile=220)


def test_onnx_without_its_extra_names_the_extra(model_file, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    result = CliRunner().invoke(main, ["export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pip install 'unet-paper-keras[onnx]'" in result.output
    assert not (tmp_path / "o").exists()


def test_bioimageio_package_passes_bioimageio_core_in_a_fresh_process(model_file, tmp_path):
    import zipfile

    import imageio.v3 as iio
    from ruyaml import YAML  # bioimageio.spec's own YAML reader

    from keras_unet import synthetic

    sample = tmp_path / "cells.png"
    iio.imwrite(sample, synthetic.sample((180, 200), seed=5)[0])  # smaller than the tile: mirror-padded
    result = CliRunner().invoke(main, ["export", str(model_file), "--format", "bioimageio", "--tile", "220",
                                       "--sample", str(sample), "--author", "A. Lab", "--out", str(tmp_path / "bio")])
    assert result.exit_code == 0, result.output
    assert "test_model in a fresh process: passed" in result.output
    package = tmp_path / "bio" / "unet.bioimageio.zip"
    with zipfile.ZipFile(package) as archive:
        rdf = YAML(typ="safe").load(archive.read("rdf.yaml").decode())
        names = archive.namelist()
    assert rdf["format_version"].startswith("0.5") and rdf["authors"] == [{"name": "A. Lab"}]
    (image,) = rdf["inputs"]
    assert [a.get("id", a["type"]) for a in image["axes"]] == ["batch", "y", "x", "channel"]
    assert image["axes"][1]["size"] == {"min": 188, "step": 16}
    assert rdf["outputs"][0]["axes"][1]["size"]["offset"] == -184
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28" and rdf["license"] == "CC-BY-4.0"
    assert "tensorflow_saved_model_bundle" in rdf["weights"] and any(n.endswith(".png") for n in names)


def test_bioimageio_without_its_extra_names_the_extra(model_file, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("bioimageio") else real(name, *a))
    result = CliRunner().invoke(main, ["export", str(model_file), "--format", "bioimageio", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "pip install 'unet-paper-keras[bioimageio]'" in result.output
    assert not (tmp_path / "b").exists()
