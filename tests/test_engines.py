"""The engines that run the network: ONNX Runtime against TensorFlow on real images of odd sizes,
the conversion cache (keyed by the weights, never stale, never half-written), and auto's choice."""
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_unet import data, engines, precision, tiling
from keras_unet.cli.main import main
from keras_unet.errors import SettingsError

from conftest import shared_data


@pytest.fixture(scope="module")
def converted(model_file, tmp_path_factory):
    """The session's tiny model and its network converted once, in a module-wide cache."""
    cache = tmp_path_factory.mktemp("engine-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_UNET_CACHE", str(cache))
        model = keras.models.load_model(model_file)
        path = engines.onnx_file(tiling.prediction_network(model))
    return model, path, cache


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_each_engine_equals_tensorflow_on_real_images_of_odd_sizes(converted, monkeypatch, engine):
    model, _, cache = converted
    monkeypatch.setenv("KERAS_UNET_CACHE", str(cache))
    isbi = data.read_image(shared_data("isbi2012", "train", "image", "07.png"))
    for image in (isbi[:203, :317], isbi[101:350, 33:290]):
        expected = tiling.predict_tiled(model, image, tile=220, batch_size=2)
        got = tiling.predict_tiled(model, image, tile=220, batch_size=2, engine=engine)
        assert got.shape == expected.shape == image.shape + (2,)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert np.abs(expected[..., 1] - 0.5).max() > 1e-3  # not a flat output that any engine would match


def test_openvino_keeps_its_compiled_network_and_recompiles_a_broken_one(converted, tmp_path, monkeypatch):
    """A fresh process loads OpenVINO's compiled network from the cache instead of compiling it
    again; a blob cut short (a killed process) is compiled again, with the same output."""
    model, path, _ = converted
    network = tiling.prediction_network(model)
    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path))
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / path.name).write_bytes(path.read_bytes())  # converted before, nothing compiled
    tiles = np.random.default_rng(0).uniform(0, 1, (1, 220, 220, 1)).astype(np.float32)
    engines._SESSIONS.clear()  # as a fresh process: a test before may have compiled it in this one
    first = engines.openvino_forward(network)(tiles)
    blobs = list((tmp_path / "openvino").glob("*.blob"))
    assert len(blobs) == 1
    blobs[0].write_bytes(blobs[0].read_bytes()[:1000])
    engines._SESSIONS.clear()  # as a fresh process
    np.testing.assert_array_equal(engines.openvino_forward(network)(tiles), first)
    assert blobs[0].stat().st_size > 1000  # written again whole


def test_the_cache_is_keyed_by_the_weights_and_never_half_written(converted, monkeypatch):
    model, path, cache = converted
    monkeypatch.setenv("KERAS_UNET_CACHE", str(cache))
    network = tiling.prediction_network(model)
    assert path.parent == cache / "onnx" and path.stem == engines.network_key(network)
    before = path.stat().st_mtime_ns
    assert engines.onnx_file(network) == path and path.stat().st_mtime_ns == before  # converted once
    (path.parent / f".{path.name}.999999.tmp.onnx").write_bytes(b"half")  # a killed conversion's leftover
    changed = keras.models.clone_model(network)
    changed.set_weights([w + 0.01 for w in network.get_weights()])
    assert engines.network_key(changed) != engines.network_key(network)  # other weights, other file
    assert engines.network_key(keras.models.clone_model(network)) != engines.network_key(network)  # random init
    same = keras.models.clone_model(network)
    same.set_weights(network.get_weights())
    assert engines.network_key(same) == engines.network_key(network)
    # the key is kept per network object (asked for on every image), and computed again where the
    # weights of that same object changed in place (a model predicting between training steps)
    with monkeypatch.context() as patched:
        patched.setattr(type(same), "get_config", lambda self: pytest.fail("the kept key was computed again"))
        assert engines.network_key(same) == engines.network_key(network)
    for i in (0, -1):  # the first and the last weight arrays, each alone
        weights = network.get_weights()
        weights[i] = weights[i] + 0.01
        same.set_weights(weights)
        fresh = keras.models.clone_model(network)
        fresh.set_weights(weights)
        assert engines.network_key(same) == engines.network_key(fresh)
        assert engines.network_key(same) != engines.network_key(network)


def test_auto_keeps_tensorflow_for_small_jobs_and_follows_a_measurement(converted, tmp_path, monkeypatch):
    model, _, cache = converted
    network = tiling.prediction_network(model)
    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path))  # nothing converted or measured here
    assert engines.resolve(network, "auto", (1, 220, 220, 1), n_batches=2, precision="auto") == ("tensorflow",
                                                                                                  "float32")
    assert not (tmp_path / "onnx").exists()  # a small job pays no conversion, nor a measurement
    monkeypatch.setattr(engines, "CONVERSION_PAYS_AFTER", 0.0)  # any job is long enough now
    monkeypatch.setenv("KERAS_UNET_CACHE", str(cache))
    result = engines.measure(network, (1, 220, 220, 1), repeat=1)
    # every engine installed, at every precision this CPU computes natively (never bfloat16 on ONNX Runtime)
    bf16 = {"tensorflow/bfloat16", "openvino/bfloat16"} if precision.native_bfloat16() else set()
    assert set(result["seconds"]) == {"tensorflow/float32", "onnxruntime/float32", "openvino/float32"} | bf16
    fastest = min(result["seconds"], key=result["seconds"].get)
    assert f"{result['engine']}/{result['precision']}" == fastest
    recorded = json.loads((cache / "engines.json").read_text())
    assert any(entry["engine"] == result["engine"] for entry in recorded.values())
    assert engines.resolve(network, "auto", (1, 220, 220, 1), n_batches=2, precision="auto") == (result["engine"],
                                                                                                 result["precision"])
    float32_only = {k: v for k, v in result["seconds"].items() if k.endswith("/float32")}
    assert engines.resolve(network, "auto", (1, 220, 220, 1), n_batches=2) == tuple(
        min(float32_only, key=float32_only.get).split("/"))  # precision float32 asked: the fastest float32
    # what was measured for this machine only: another CPU model measures again
    monkeypatch.setattr(engines, "machine_key", lambda: "another cpu / 2 threads")
    assert engines.measured_choice(network, (1, 220, 220, 1)) is None


# two processors' blocks of /proc/cpuinfo as the two "AMD EPYC" VMs of this project print them (trimmed)
ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nmodel name\t: something else\n")
ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\n\n")


def test_measurements_are_kept_per_cpu_generation_not_per_name(tmp_path, monkeypatch):
    keys = {}
    for name, text in {"zen3": ZEN3, "zen4": ZEN4}.items():
        (tmp_path / name).write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / name))
        keys[name] = engines.machine_key()
    assert keys["zen3"].startswith("AMD EPYC, family 25 model 1, bf16: none / ")
    assert keys["zen4"].startswith("AMD EPYC, family 25 model 17, bf16: avx512_bf16 / ")
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "missing"))  # no /proc (macOS, Windows)
    assert engines.cpu_generation() == "" and precision.cpu_flags() == set() and engines.machine_key()


def test_predict_says_which_engine_ran_and_an_unknown_or_missing_one_is_one_line(converted, tmp_path, monkeypatch):
    import importlib.util
    import shutil

    model, _, converted_cache = converted
    # the converted network without what other tests measured (on a bfloat16 CPU their measurement
    # of this tile would decide precision auto here)
    shutil.copytree(converted_cache / "onnx", tmp_path / "engine-cache" / "onnx")
    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path / "engine-cache"))
    path = tmp_path / "m.keras"
    model.save(path)
    image = np.random.default_rng(0).gamma(2.0, 30.0, (61, 97)).astype(np.uint8)
    data.write_image(tmp_path / "a.png", image)
    outputs = {}
    for engine in ("tensorflow", "onnxruntime"):
        result = CliRunner().invoke(main, ["predict", str(path), str(tmp_path / "a.png"), "--format", "probabilities",
                                           "--tile", "220", "--engine", engine, "--out", str(tmp_path / engine)])
        assert result.exit_code == 0, result.output
        assert f"tiles, {engine} float32)" in result.output  # precision auto: float32 for so short a job
        outputs[engine] = data.read_image(tmp_path / engine / "a_probabilities.tif")
    np.testing.assert_allclose(outputs["onnxruntime"], outputs["tensorflow"], atol=1e-4)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = CliRunner().invoke(main, ["predict", str(path), str(tmp_path / "a.png"), "--engine", "onnxruntime",
                                       "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "pip install 'unet-paper-keras[onnx]'" in result.output
    with pytest.raises(SettingsError, match="--engine must be one of"):
        engines.check_engine("tensorrt")


LIGHT_PROCESS = """import sys
from keras_unet.cli.main import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("imported:", "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_a_converted_model_predicts_in_a_fresh_process_without_tensorflow(converted, tmp_path):
    """Once a job ran a model file on a converted engine, the next process runs it with neither
    TensorFlow nor Keras imported and writes the same probabilities; ``auto`` keeps such a short
    job on a converted engine; ``--engine tensorflow`` loads the Keras model then, as before."""
    import shutil
    import subprocess
    import sys

    from conftest import child_env

    model, _, converted_cache = converted
    cache = tmp_path / "cache"
    shutil.copytree(converted_cache / "onnx", cache / "onnx")
    path = tmp_path / "m.keras"
    model.save(path)
    data.write_image(tmp_path / "a.png", np.random.default_rng(1).gamma(2.0, 30.0, (83, 141)).astype(np.uint8))

    def run(engine):
        done = subprocess.run([sys.executable, "-c", LIGHT_PROCESS, "predict", str(path), str(tmp_path / "a.png"),
                               "--format", "probabilities", "--tile", "220", "--engine", engine,
                               "--out", str(tmp_path / engine)], env=child_env(KERAS_UNET_CACHE=cache),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout, data.read_image(tmp_path / engine / "a_probabilities.tif")

    first, expected = run("onnxruntime")
    assert "imported: True True" in first and len(list((cache / "models").glob("*.json"))) == 1
    light, got = run("openvino")
    assert "imported: False False" in light and "openvino float32)" in light
    np.testing.assert_allclose(got, expected, atol=1e-4)
    auto, got = run("auto")
    assert "imported: False False" in auto and ("openvino float32)" in auto or "onnxruntime float32)" in auto)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    keras_run, got = run("tensorflow")
    assert "imported: True True" in keras_run and "tensorflow float32)" in keras_run
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(expected[..., 1] - 0.5).max() > 1e-3  # not a flat output that any engine would match


def test_a_model_without_its_converted_file_or_a_good_record_is_loaded_as_keras(converted, tmp_path, monkeypatch):
    """The record is used only with its converted file there and in this version's layout; a
    converted model gives the Keras model's objects, and its TensorFlow path the Keras model's
    probabilities exactly (it is that model, loaded when asked)."""
    import shutil

    from keras_unet import converted as converted_models
    from keras_unet import predictor
    from keras_unet.predictor import Options, Predictor

    model, _, converted_cache = converted
    cache = tmp_path / "cache"
    shutil.copytree(converted_cache / "onnx", cache / "onnx")
    monkeypatch.setenv("KERAS_UNET_CACHE", str(cache))
    path = tmp_path / "m.keras"
    model.save(path)
    image = data.read_image(shared_data("isbi2012", "train", "image", "07.png"))[:190, :260]
    options = Options(engine="onnxruntime", precision="float32", tile=220)

    def fresh():
        predictor._converted_model.cache_clear()  # as a new process
        return Predictor.of(path)

    handle = fresh()
    assert not isinstance(handle.model, converted_models.ConvertedModel)
    expected = handle.segment(image, options)  # a converted engine: the record is written
    assert expected.max() > 1
    light = fresh()
    assert isinstance(light.model, converted_models.ConvertedModel)
    np.testing.assert_array_equal(light.segment(image, options), expected)
    np.testing.assert_array_equal(tiling.predict_tiled(light.model, image, tile=220),
                                  tiling.predict_tiled(handle.model, image, tile=220))
    assert light.keras_model is handle.model
    record = converted_models.record_path(path)
    kept = record.read_text()
    for broken in ("{", json.dumps({**json.loads(kept), "version": 0}), json.dumps({"config": 1})):
        record.write_text(broken)
        assert not isinstance(fresh().model, converted_models.ConvertedModel), broken
    record.write_text(kept)
    assert isinstance(fresh().model, converted_models.ConvertedModel)
    for onnx in (cache / "onnx").glob("*.onnx"):
        onnx.unlink()
    assert not isinstance(fresh().model, converted_models.ConvertedModel)


def test_a_job_that_runs_converted_converts_the_partners_too(converted, tmp_path, monkeypatch):
    """A shipped model's partners (other image kinds) are converted and recorded by the job that
    first runs the model converted, so a later job loads no TensorFlow for them either; a
    TensorFlow job converts nothing."""
    import shutil

    from keras_unet import converted as converted_models
    from keras_unet import predictor
    from keras_unet.model import inference_model, unet
    from keras_unet.predictor import Options, Predictor

    model, _, converted_cache = converted
    shutil.copytree(converted_cache / "onnx", tmp_path / "cache" / "onnx")
    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path / "cache"))
    model.save(main_path := tmp_path / "m.keras")
    keras.utils.set_random_seed(5)  # other weights: a network of its own
    inference_model(unet(base_filters=4, dropout=0.0, input_range=None), (1.0, 99.8)).save(tmp_path / "p.keras")
    predictor._converted_model.cache_clear()
    partner = Predictor.of(tmp_path / "p.keras", by_kind=False)
    monkeypatch.setattr(Predictor, "partner_handles", lambda self: {"light": partner} if self.path == main_path else {})
    partner_network = tiling.prediction_network(partner.model)
    image = np.random.default_rng(2).gamma(2.0, 30.0, (70, 90)).astype(np.uint8)
    Predictor.of(main_path).segment(image, Options(engine="tensorflow", precision="float32", tile=220))
    assert not engines.converted(partner_network)
    Predictor.of(main_path).segment(image, Options(engine="onnxruntime", precision="float32", tile=220))
    assert engines.converted(partner_network)
    predictor._converted_model.cache_clear()
    assert isinstance(Predictor.of(tmp_path / "p.keras").model, converted_models.ConvertedModel)


def test_a_fixed_range_model_runs_converted_whole_and_block_by_block(tmp_path, monkeypatch):
    """A model that normalises its tiles itself (``input_range``: no nested network) runs through
    its converted network as its Keras model does, whole and block by block (the Dask path's
    worker model)."""
    from keras_unet import blocks, jobs, predictor
    from keras_unet import converted as converted_models
    from keras_unet.model import unet
    from keras_unet.predictor import Options, Predictor

    monkeypatch.setenv("KERAS_UNET_CACHE", str(tmp_path / "cache"))
    keras.utils.set_random_seed(7)
    unet(base_filters=4, dropout=0.0, input_range=(0.0, 255.0)).save(path := tmp_path / "fixed.keras")
    image = data.read_image(shared_data("isbi2012", "train", "image", "07.png"))[:230, :250]
    predictor._converted_model.cache_clear()
    handle = Predictor.of(path)
    options = Options(engine="onnxruntime", precision="float32", tile=220)
    expected = tiling.predict_tiled(handle.model, image, tile=220, engine="onnxruntime")
    handle.segment(image, options)  # a converted engine: recorded
    predictor._converted_model.cache_clear()
    light = jobs.worker_model(str(path))
    assert isinstance(light, converted_models.ConvertedModel)
    np.testing.assert_array_equal(tiling.predict_tiled(light, image, tile=220, engine="onnxruntime"), expected)
    rows, cols = slice(32, 192), slice(16, 224)  # origins on the 16 px pooling grid, as blocks are
    block = blocks.predict_block(light, image[..., None], rows, cols, tile=220, engine="onnxruntime")
    np.testing.assert_array_equal(block, blocks.predict_block(handle.model, image[..., None], rows, cols, tile=220,
                                                              engine="onnxruntime"))
    np.testing.assert_allclose(block, tiling.predict_tiled(handle.model, image, tile=220)[rows, cols], atol=1e-4)
    assert np.abs(expected[..., 1] - 0.5).max() > 1e-3
