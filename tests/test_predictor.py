"""The one model handle (keras_unet.predictor) and the one post-processing value
(keras_unet.postprocess.PostProcessing): objects against an independent computation, the record
read and the network loaded once, the record's rules, and a library call of a big image with
``engine="auto"`` that resolves once."""
import json

import numpy as np
import pytest
from scipy import ndimage

import keras_unet
from keras_unet import jobs, runs
from keras_unet.errors import SettingsError
from keras_unet.postprocess import PostProcessing
from keras_unet.predictor import Options, Predictor

from test_cli import threshold_model


def blobs() -> np.ndarray:
    """Gray image: bright discs (object where > 127.5 for the threshold model) of areas from ~12
    to ~300 px, none touching, no holes, on a dark background with a dim ramp."""
    yy, xx = np.mgrid[:120, :150]
    image = (xx / 150 * 60).astype(np.uint8)
    for (r, c), radius in zip([(20, 20), (25, 70), (30, 120), (80, 30), (90, 90), (95, 130)], [2, 4, 6, 3, 9, 5]):
        image[(yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2] = 220
    return image


def canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered in raster order of first appearance: equal partitions compare equal."""
    flat = labels.ravel()
    values, first = np.unique(flat[flat > 0], return_index=True)
    order = values[np.argsort(first)]
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup[labels]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder of the threshold model with a recorded choice: p >= 0.5, objects under 30 px dropped."""
    folder = tmp_path_factory.mktemp("run")
    threshold_model(folder / runs.MODEL)
    (folder / runs.CONFIG).write_text(json.dumps({"postprocessing": {"threshold": 0.5, "min_size": 30,
                                                                     "split": "none"}, "object_diameter": 10.0}))
    return folder


def test_objects_equal_connected_components_of_the_threshold_minus_the_small_ones(run_folder):
    image = blobs()
    reference, count = ndimage.label(image > 127.5)  # 4-connected, what the model's p >= 0.5 is
    sizes = ndimage.sum(np.ones_like(reference), reference, index=np.arange(1, count + 1))
    reference[np.isin(reference, 1 + np.flatnonzero(sizes < 30))] = 0
    found = keras_unet.segment(run_folder, image)
    assert 3 <= len(np.unique(reference)) - 1 < count  # some objects dropped, some kept
    np.testing.assert_array_equal(canonical(found), canonical(reference))
    kept_all = keras_unet.segment(run_folder, image, min_size=0)  # given: the run's choice replaced
    assert len(np.unique(kept_all)) - 1 == count


def test_the_record_is_read_once_and_the_network_loaded_once(run_folder, tmp_path, monkeypatch):
    import keras

    reads, loads = [], []
    read_json, load_model = runs.read_json, keras.models.load_model
    monkeypatch.setattr(runs, "read_json", lambda path: reads.append(str(path)) or read_json(path))
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (runs.MODEL, runs.CONFIG):
        (folder / name).write_bytes((run_folder / name).read_bytes())
    for _ in range(3):
        predictor = Predictor.of(folder)
        predictor.segment(blobs())
    assert len(loads) == 1  # the one cache
    # once per handle, and once more when the network is loaded (its recorded architecture)
    assert len([r for r in reads if r.endswith(runs.CONFIG)]) == 3 + len(loads)


def test_the_post_processing_value_follows_the_record_and_what_is_given():
    three = PostProcessing.of_record({"config": {"target": "three_class", "n_classes": 3}, "min_object_size": 12})
    assert (three.split, three.min_size, three.threshold, three.chosen) == ("boundary", 12, None, False)
    chosen = PostProcessing.of_record({"postprocessing": {"threshold": 0.7, "min_size": 36, "split": "watershed"}})
    assert (chosen.threshold, chosen.min_size, chosen.split, chosen.chosen) == (0.7, 36, "watershed", True)
    assert PostProcessing.of_record({}) == PostProcessing()
    given = chosen.given(threshold=0.4, split="none")
    assert (given.threshold, given.min_size, given.split) == (0.4, 36, "none")
    sized = chosen.at_diameter(40.0, learned=20.0)  # objects twice the learned size: images halved
    assert sized.scale == 0.5 and sized.min_size == 144
    assert chosen.at_diameter(None, learned=None) == chosen
    with pytest.raises(SettingsError, match="records no object diameter"):
        chosen.at_diameter(30.0, learned=None)
    with pytest.raises(SettingsError, match="not one of none, watershed, boundary"):
        chosen.given(split="voronoi")
    assert chosen.in_tf_ops() and "watershed" in chosen.in_tf_ops() and given.in_tf_ops() is None
    assert chosen.described() == "p >= 0.7, under 36 px dropped, split watershed (chosen on the run's validation data)"


def test_a_library_big_image_job_with_auto_engine_runs(run_folder, tmp_path):
    """``jobs.predict_big`` called from the library with ``auto`` engine and precision resolves
    them once for the job (it once reached a forward of engine "auto", which does not exist)."""
    import zarr

    from test_bigimages import write_ome_zarr

    image = blobs()
    source = write_ome_zarr(tmp_path / "blobs.ome.zarr", image, "yx")
    request = jobs.Request(out_dir=str(tmp_path), kind="instances", block=64,
                           options=Options(engine="auto", precision="auto"),
                           postprocessing=Predictor.of(run_folder).postprocessing)
    out = jobs.predict_big(run_folder / runs.MODEL, jobs.Source(str(source)), tmp_path / "out.ome.zarr", request)
    labels = np.asarray(zarr.open_array(str(out / "labels" / "instances" / "0"), mode="r"))
    np.testing.assert_array_equal(canonical(labels), canonical(keras_unet.segment(run_folder, image)))


def test_the_diameter_is_found_by_the_scale_search(run_folder):
    """The threshold model finds every disc at any scale, so its consistent scale is where the
    discs have the 10 px the run records: the estimate is the discs' true diameter."""
    from keras_unet import diameter

    yy, xx = np.mgrid[:200, :200]
    image = np.full((200, 200), 30, np.uint8)
    centres = [(30 + 46 * i, 30 + 46 * j) for i in range(4) for j in range(4)]
    for r, c in centres:
        image[(yy - r) ** 2 + (xx - c) ** 2 <= 9 ** 2] = 220  # 253 px each: 17.9 px equivalent diameter
    true, count = diameter.median_diameter(ndimage.label(image > 127.5)[0])
    assert count == 16 and 17 < true < 19
    predictor = Predictor.of(run_folder, diameter="auto", min_size=0)
    found = diameter.estimate(predictor, image, Options(engine="tensorflow", precision="float32"))
    assert abs(found.diameter - true) / true < 0.1, found
    best = min(found.trials, key=lambda t: t.score)
    assert abs(best.scale - 10.0 / true) / (10.0 / true) < 0.3  # the scale that shows them at 10 px
    job = predictor.job("discs", pages=[image])
    # 18 px is within DEAD_ZONE (2x) of the learned 10 px: measured, and predicted as it is
    assert job.diameter == found.diameter and job.postprocessing.scale == 1.0
    assert len(np.unique(predictor.segment(image))) - 1 == 16


def test_diameter_auto_refusals(run_folder, tmp_path):
    from click.testing import CliRunner

    from keras_unet import data
    from keras_unet.cli.main import main

    bare = tmp_path / "bare"
    bare.mkdir()
    threshold_model(bare / runs.MODEL)  # no record: no learned diameter
    data.write_image(tmp_path / "a.png", blobs())
    cases = [(["predict", bare, tmp_path / "a.png", "--diameter", "auto"], "records no object diameter"),
             (["predict", run_folder, tmp_path / "a.png", "--diameter", "0.5"], "give at least 1 px, or auto"),
             (["predict", run_folder, tmp_path / "a.png", "--diameter", "big"], "neither a size in px nor auto"),
             (["evaluate", run_folder, tmp_path, "--diameter", "auto"], "--diameter auto is for predict")]
    for args, message in cases:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = CliRunner().invoke(main, ["predict", str(run_folder), str(tmp_path / "a.png"), "--diameter", "auto",
                                       "--format", "instances", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "objects' diameter measured in each image" in result.output and "objects ~" in result.output


@pytest.mark.parametrize("stem", ["gnf_dna-20", "ic100_dna-20"])
def test_diameter_auto_sizes_coelho_nuclei_for_the_shipped_model(stem):
    """Real nuclei 4-5x larger than the shipped model learned (coelho2009, outside its tune split):
    the estimate is within 25% of the masks' median diameter, and the objects with auto score as
    with the true diameter given, where the image as it is fragments them."""
    from conftest import shared_data
    from keras_unet import data, diameter, metrics

    root = shared_data("coelho2009")
    image = data.read_image(root / "images" / f"{stem}.png")
    truth = data.read_image(root / "masks" / f"{stem}.png").astype(np.int64)
    true, _ = diameter.median_diameter(truth)
    auto = Predictor.of("nuclei", diameter="auto")
    job = auto.job(stem, pages=[image])
    assert abs(job.diameter - true) / true < 0.25, (job.diameter, true)
    f1 = metrics.evaluate_objects(job.postprocessing.objects(next(job.probabilities())), truth)["f1"]
    plain = metrics.evaluate_objects(keras_unet.segment("nuclei", image), truth)["f1"]
    assert f1 > 0.8 and plain < 0.4, (f1, plain)


# -- a shipped model's partner for images of the other kind -------------------------------------


@pytest.fixture
def family(tmp_path, monkeypatch):
    """Shipped models in a folder of their own: ``fam-bright`` (objects brighter than 127.5) whose
    card hands light-background images to ``fam-dark`` (objects darker than 127.5)."""
    shipped = tmp_path / "models"
    for name, dark in (("fam-bright", False), ("fam-dark", True)):
        (shipped / name).mkdir(parents=True)
        threshold_model(shipped / name / runs.MODEL, dark=dark)
        (shipped / name / runs.CONFIG).write_text(json.dumps({"postprocessing": {"threshold": 0.5, "min_size": 0,
                                                                                 "split": "none"}}))
    (shipped / "fam-bright" / runs.CARD).write_text(json.dumps({"name": "fam-bright", "partners": {"light": "fam-dark"}}))
    monkeypatch.setattr(runs, "SHIPPED", shipped)
    return shipped


def test_a_shipped_model_hands_light_images_to_its_partner(family, tmp_path):
    from click.testing import CliRunner

    from keras_unet import data
    from keras_unet.cli.main import main

    dark = blobs()  # bright discs on a dark background
    light = (255 - dark).astype(np.uint8)  # dark discs on a light one: the same objects
    reference = canonical(ndimage.label(dark > 127.5)[0])
    predictor = Predictor.of("fam-bright")
    assert predictor.partners == {"light": "fam-dark"}
    assert predictor.for_image(dark) is predictor and predictor.for_image(light).name == "fam-dark"
    for image in (dark, light):
        np.testing.assert_array_equal(canonical(predictor.segment(image)), reference)
    # by_kind=False, or the partner by name: one model for every image (here: the background is the object)
    alone = Predictor.of("fam-bright", by_kind=False).segment(light)
    assert len(np.unique(alone)) - 1 < len(np.unique(reference)) - 1
    assert Predictor.of("fam-dark").partners == {}
    # predict names the model it used for each file; a Dask-style file task chooses alike
    data.write_image(tmp_path / "in" / "dark.png", dark)
    data.write_image(tmp_path / "in" / "light.png", light)
    result = CliRunner().invoke(main, ["predict", "fam-bright", str(tmp_path / "in"), "--format", "instances",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "fam-bright, dark background" in result.output and "fam-dark, light background" in result.output
    for stem in ("dark", "light"):
        written = data.read_image(tmp_path / "out" / f"{stem}_instances.tif")
        np.testing.assert_array_equal(canonical(written), reference)
    request = jobs.Request(out_dir=str(tmp_path / "task"), kind="instances",
                           partners=tuple((k, str(h.path), h.postprocessing)
                                          for k, h in predictor.partner_handles().items()))
    (tmp_path / "task").mkdir()
    task = data.read_image(jobs.predict_file(str(predictor.path), str(tmp_path / "in" / "light.png"), request))
    np.testing.assert_array_equal(canonical(task), reference)


def test_evaluate_scores_each_image_with_the_model_of_its_kind(family, tmp_path):
    from click.testing import CliRunner

    from keras_unet import data
    from keras_unet.cli.main import main

    dark = blobs()
    truth = ndimage.label(dark > 127.5)[0].astype(np.uint16)
    data.write_image(tmp_path / "set" / "images" / "light.png", (255 - dark).astype(np.uint8))
    data.write_image(tmp_path / "set" / "masks" / "light.tif", truth)
    result = CliRunner().invoke(main, ["evaluate", "fam-bright", str(tmp_path / "set"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "images of a light background: fam-dark" in result.output
    row = json.loads((tmp_path / "m" / "metrics.json").read_text())["rows"][0]
    assert row["image"] == "light.png" and row["object_f1"] == 1.0 and row["object_dsb_score"] == 1.0, row
    copy = tmp_path / "copy.keras"  # the same network outside the shipped folder: a model of one's own
    copy.write_bytes((family / "fam-bright" / runs.MODEL).read_bytes())
    alone = CliRunner().invoke(main, ["evaluate", str(copy), str(tmp_path / "set"), "--threshold", "0.5",
                                      "--out", str(tmp_path / "m2")])
    assert alone.exit_code == 0 and "light background" not in alone.output, alone.output
    assert json.loads((tmp_path / "m2" / "metrics.json").read_text())["rows"][0]["object_f1"] < 0.5


def test_each_network_of_a_collection_resolves_its_own_engine_and_precision(family, tmp_path, monkeypatch):
    # the partner resolves auto for itself on the first file it takes, not with the main network's
    # choice (an OpenVINO network converted for nuclei would cost nuclei-stained a conversion)
    from keras_unet import data, tiling

    dark = blobs()
    for name, image in (("a_dark", dark), ("b_light", 255 - dark), ("c_dark", dark), ("d_light", 255 - dark)):
        data.write_image(tmp_path / "in" / f"{name}.png", image.astype(np.uint8))
    predictor = Predictor.of("fam-bright")
    partner = predictor.partner_handles()["light"]
    chosen = {id(predictor.model): ("tensorflow", "bfloat16"), id(partner.model): ("tensorflow", "float32")}
    real, asked = tiling.resolve_engine, []

    def resolve_engine(model, image_shape, engine="auto", tile=None, batch_size=1, memory_mb=4096, tiles=None,
                       precision="float32"):
        if "auto" not in (engine, precision):
            return real(model, image_shape, engine, tile, batch_size, memory_mb, tiles=tiles, precision=precision)
        asked.append(id(model))
        return chosen[id(model)]

    monkeypatch.setattr(tiling, "resolve_engine", resolve_engine)
    made = list(predictor.jobs(sorted((tmp_path / "in").iterdir()), Options(engine="auto", precision="auto")))
    assert [(job.model is partner.model, job.engine, job.precision) for _, job, _ in made] == [
        (False, "tensorflow", "bfloat16"), (True, "tensorflow", "float32"),
        (False, "tensorflow", "bfloat16"), (True, "tensorflow", "float32")]
    assert sorted(asked) == sorted(chosen)  # once per network


def test_a_big_image_goes_to_the_partner_of_its_kind(family, tmp_path):
    # block by block (a TIFF with --block), the kind read from windows spread over the image
    pytest.importorskip("zarr")
    from click.testing import CliRunner

    from keras_unet import data
    from keras_unet.cli.main import main
    from test_bigimages import read_result

    dark = blobs()
    reference = canonical(ndimage.label(dark > 127.5)[0])
    data.write_image(tmp_path / "in" / "light.tif", (255 - dark).astype(np.uint8))
    result = CliRunner().invoke(main, ["predict", "fam-bright", str(tmp_path / "in"), "--block", "64", "--format",
                                       "instances", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "fam-dark, light background" in result.output
    _, labels, _ = read_result(tmp_path / "out" / "light.ome.zarr")
    np.testing.assert_array_equal(canonical(labels), reference)


def test_a_partner_is_loaded_only_when_an_image_of_its_kind_comes(family, tmp_path):
    from click.testing import CliRunner

    from keras_unet import data, predictor as predictor_module
    from keras_unet.cli.main import main

    dark = blobs()
    data.write_image(tmp_path / "in" / "dark.png", dark)
    predictor_module._partner.cache_clear()
    result = CliRunner().invoke(main, ["predict", "fam-bright", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    Predictor.of("fam-bright").segment(dark)
    assert predictor_module._partner.cache_info().currsize == 0  # fluorescence only: the partner never made
    Predictor.of("fam-bright").segment((255 - dark).astype(np.uint8))
    assert predictor_module._partner.cache_info().currsize == 1
