"""The SavedModel through TensorFlow's C API: ``TF_LoadSessionFromSavedModel`` runs the C++
``LoadSavedModel`` that TF Serving's SavedModelBundle uses, in a process without Python's
TensorFlow, by the SignatureDef's tensor names. Built at test time with the wheel's headers and
libraries; skipped only where no C compiler exists."""
import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2

from keras_unet import inference, tiling
from keras_unet.postprocess import PostProcessing
from keras_unet.export.savedmodel import WARMUP_FILE

SOURCE = Path(__file__).parent / "c_api" / "run_signature.c"
COMPILER = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler (gcc or cc) on this machine")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    binary = tmp_path_factory.mktemp("c_api") / "run_signature"
    lib = tf.sysconfig.get_lib()
    done = subprocess.run([COMPILER, str(SOURCE), "-o", str(binary), f"-I{tf.sysconfig.get_include()}",
                           f"-L{lib}", "-l:libtensorflow_cc.so.2", "-l:libtensorflow_framework.so.2",
                           f"-Wl,-rpath,{lib}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return binary


@pytest.fixture(scope="module")
def exported(served, model_file):
    """The session's SavedModel (conftest ``served``) and the Keras model it was exported from."""
    return keras.models.load_model(model_file), served[0]


def signature_tensors(path: Path, signature: str) -> tuple[str, str]:
    """``(input tensor, output tensor)`` names of a SignatureDef, e.g. ``serving_default_image:0``;
    the output is ``probabilities``, or ``instances`` (int32) for the instances signature."""
    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    (meta,) = [m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags]
    sig = meta.signature_def[signature]
    output = "instances" if signature == "instances" else "probabilities"
    return sig.inputs["image"].name, sig.outputs[output].name


def run_c(runner, path, signature, image, tmp_path):
    """(return code, stdout, output array or None) of the C program on ``image``."""
    (in_op, in_index), (out_op, out_index) = (name.split(":") for name in signature_tensors(path, signature))
    np.asarray(image, np.float32).tofile(tmp_path / "in.f32")
    done = subprocess.run([str(runner), str(path), in_op, in_index, out_op, out_index, str(tmp_path / "in.f32"),
                           str(tmp_path / "out.f32"), str(image.ndim), *map(str, image.shape)],
                          capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0 or not done.stdout.startswith("OK"):
        return done.returncode, done.stdout, None
    shape = tuple(int(d) for d in done.stdout.split()[1:])
    dtype = np.int32 if signature == "instances" else np.float32  # the output tensor's raw bytes
    return 0, done.stdout, np.fromfile(tmp_path / "out.f32", dtype).reshape(shape)


def test_both_signatures_through_the_c_api_match_keras(runner, exported, tmp_path):
    model, path = exported
    rng = np.random.default_rng(0)
    tile = rng.uniform(0, 255, (2, 220, 220, 1)).astype(np.float32)
    code, out, probabilities = run_c(runner, path, "serving_default", tile, tmp_path)
    assert code == 0, out
    np.testing.assert_allclose(probabilities, model.predict_on_batch(tile), atol=1e-5)
    image = rng.uniform(0, 255, (77, 131, 1)).astype(np.float32)
    code, out, probabilities = run_c(runner, path, "segment", image, tmp_path)
    assert code == 0, out
    np.testing.assert_allclose(probabilities, tiling.predict_tiled(model, image, tile=220), atol=1e-5)
    code, out, labels = run_c(runner, path, "instances", image, tmp_path)
    assert code == 0, out
    np.testing.assert_array_equal(labels, PostProcessing().objects(tiling.predict_tiled(model, image, tile=220)))


def test_a_malformed_request_is_an_error_not_an_abort(runner, exported, tmp_path):
    _, path = exported
    code, out, _ = run_c(runner, path, "serving_default", np.zeros((220, 220, 1), np.float32), tmp_path)
    assert code == 3 and out.startswith("TF_ERROR 3 ") and "not compatible with expected shape" in out  # 3 = INVALID_ARGUMENT
    code, out, _ = run_c(runner, path, "serving_default", np.zeros((1, 500, 500, 1), np.float32), tmp_path)
    assert code == 3 and "188 + 16k px" in out


def test_the_warmup_requests_replay_through_the_c_api(runner, exported, tmp_path):
    from test_export import _fields  # the independent protobuf reader

    _, path = exported
    signatures = []
    for record in tf.data.TFRecordDataset(str(path / WARMUP_FILE)):
        request = _fields(_fields(_fields(record.numpy())[6][0])[1][0])
        signature = _fields(request[1][0])[3][0].decode()
        image = tf.make_ndarray(tensor_pb2.TensorProto.FromString(_fields(request[2][0])[2][0]))
        code, out, _ = run_c(runner, path, signature, image, tmp_path)
        assert code == 0, out
        signatures.append(signature)
    assert sorted(signatures) == ["instances", "segment", "serving_default"]
