"""Big images: OME-Zarr and big TIFFs predicted block by block through the CLI, on the local
scheduler and on a LocalCluster, against the whole-image path."""
import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("zarr", reason="the [zarr] extra (in the test extras) is not installed")

import zarr  # noqa: E402
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_image  # noqa: E402

from keras_unet import data, synthetic  # noqa: E402
from keras_unet.cli.main import main  # noqa: E402

from test_blocks import same_partition  # noqa: E402


def run(*args):
    """The CLI in float32: these tests compare paths (blocks, whole image, a cluster) exactly, and
    ``--precision auto`` may choose bfloat16 for a long block job and float32 for a short whole image
    on a bf16 CPU (an AMX CI machine did). Precision itself is tested in test_precision."""
    args = [*args, "--precision", "float32"] if args and args[0] == "predict" else list(args)
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_ome_zarr(path, array, axes, version="0.5"):
    fmt = FormatV04() if version == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    write_image(array, group, axes=axes, fmt=fmt, scale_factors=(2,))
    return path


@pytest.fixture(scope="module")
def cells():
    return (synthetic.sample((300, 260), seed=5)[0] * 255).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def whole(model_file, cells, tmp_path_factory):
    """The whole-image outputs of the same image: probabilities and instances TIFFs."""
    folder = tmp_path_factory.mktemp("whole")
    data.write_image(folder / "cells.png", cells)
    for kind in ("probabilities", "instances"):
        result = run("predict", model_file, folder / "cells.png", "--format", kind, "--tile", 220, "--min-size", 5,
                     "--out", folder)
        assert result.exit_code == 0, result.output
    return data.read_image(folder / "cells_probabilities.tif"), data.read_image(folder / "cells_instances.tif")


def read_result(path):
    nodes = list(Reader(parse_url(str(path)))())
    image = [n for n in nodes if "labels" not in str(n.zarr.path).split("/")[-3:]][0]
    probabilities = np.moveaxis(np.asarray(image.data[0]), 0, -1)
    labels = np.asarray(zarr.open_array(str(path / "labels" / "instances" / "0"), mode="r"))
    return probabilities, labels, nodes


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_in_and_out_block_by_block_equal_the_whole_image(model_file, cells, whole, tmp_path, version):
    source = write_ome_zarr(tmp_path / "cells.ome.zarr", cells, "yx", version)
    result = run("predict", model_file, source, "--format", "instances", "--block", 128, "--tile", 220,
                 "--min-size", 5, "--ngff", version, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "cells.ome.zarr"
    probabilities, labels, nodes = read_result(out)
    assert np.abs(probabilities - whole[0]).max() < 1e-5
    assert same_partition(labels, whole[1].astype(np.int64)) and labels.max() == whole[1].max()
    assert any(n.load(__import__("ome_zarr.reader", fromlist=["Label"]).Label) for n in nodes)  # labels as labels
    assert not (out / "work").exists() and not list((tmp_path / "out").glob(".*tmp*"))


def test_a_big_tiff_is_read_lazily_and_a_channel_and_plane_chosen(model_file, cells, whole, tmp_path):
    import tifffile

    stack = np.stack([np.zeros_like(cells), cells, cells // 2])  # (z, y, x): the cells are plane 1
    tifffile.imwrite(tmp_path / "stack.tif", stack, tile=(64, 64), metadata={"axes": "ZYX"})
    result = run("predict", model_file, tmp_path / "stack.tif", "--block", 64, "--z", 1, "--tile", 220,
                 "--format", "probabilities", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    probabilities = np.moveaxis(np.asarray(zarr.open_array(str(tmp_path / "out" / "stack.ome.zarr" / "0"))), 0, -1)
    assert np.abs(probabilities - whole[0]).max() < 1e-5
    result = run("predict", model_file, tmp_path / "stack.tif", "--block", 64, "--out", tmp_path / "out2")
    assert result.exit_code == 2 and "stack.tif: has 3 planes along z (axes zyx); choose one with --z 0..2" in result.output
    assert not (tmp_path / "out2" / "stack.ome.zarr").exists()


def test_bad_big_inputs_are_one_line_errors_and_leave_nothing(model_file, cells, tmp_path):
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.create_array("x", shape=(10, 10), dtype="uint8")
    image = write_ome_zarr(tmp_path / "cells.ome.zarr", cells, "yx")
    cases = [
        ((tmp_path / "plain.zarr",), "plain.zarr: a zarr store without an NGFF image"),
        ((image, "--z", 2), "cells.ome.zarr: has no z axis (axes yx); leave out --z"),
        ((image, "--block", 100), "--block 100 px must be a multiple of 16"),
        ((image, "--scheduler", "tcp://127.0.0.1:9"), "--scheduler tcp://127.0.0.1:9: cannot reach it"),
    ]
    for args, message in cases:
        result = run("predict", model_file, *args, "--out", tmp_path / "out")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output
        assert len(result.output.strip().splitlines()[-1]) < 300
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_a_stopped_job_skips_what_is_done_and_redoes_what_was_interrupted(model_file, cells, tmp_path):
    for name in ("a", "b"):
        write_ome_zarr(tmp_path / "in" / f"{name}.ome.zarr", cells[:150, :150], "yx")
    out = tmp_path / "out"
    result = run("predict", model_file, tmp_path / "in" / "a.ome.zarr", "--block", 64, "--tile", 220, "--out", out)
    assert result.exit_code == 0, result.output
    half = out / ".b.ome.zarr.999999999.tmp.zarr"  # what a killed job leaves: a temporary of a process that is gone
    half.mkdir(parents=True)
    result = run("predict", model_file, tmp_path / "in", "--block", 64, "--tile", 220, "--skip-done", "--out", out)
    assert result.exit_code == 0, result.output
    assert "a.ome.zarr: " in result.output and "is complete, skipped" in result.output
    assert (out / "b.ome.zarr" / "0").exists() and not half.exists()


def test_a_killed_big_image_job_resumes_from_its_finished_blocks(model_file, cells, whole, tmp_path, monkeypatch):
    """A kill after 3 of 9 blocks (KeyboardInterrupt: what SIGINT raises; SIGKILL leaves the same
    files, benchmarks/faults.py) leaves the partial store; the same job goes on from the 6 left and
    equals the whole-image prediction; other settings start anew."""
    from keras_unet import jobs
    from keras_unet.postprocess import PostProcessing
    from keras_unet.predictor import Options

    source, out = jobs.Source(str(write_ome_zarr(tmp_path / "cells.ome.zarr", cells, "yx"))), tmp_path / "o.ome.zarr"
    request = jobs.Request(out_dir=str(tmp_path), kind="instances", block=128, postprocessing=PostProcessing(min_size=5),
                           options=Options(tile=220, engine="tensorflow", precision="float32"))
    real, counted = jobs.compute, []

    def killed(tasks, client=None, progress=None):
        real(tasks[:3], client, progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "compute", killed)
    with pytest.raises(KeyboardInterrupt):
        jobs.predict_big(model_file, source, out, request)
    assert not out.exists() and jobs.partial_path(out).is_dir()
    monkeypatch.setattr(jobs, "compute", lambda tasks, client=None, progress=None:
                        counted.append(len(tasks)) or real(tasks, client, progress))
    timings = {}
    jobs.predict_big(model_file, source, out, request, timings=timings)
    assert timings["blocks_done_before"] == 3 and counted == [6]
    probabilities, labels, _ = read_result(out)
    assert np.abs(probabilities - whole[0]).max() < 1e-5
    assert same_partition(labels, whole[1].astype(np.int64)) and labels.max() == whole[1].max()
    assert not jobs.partial_path(out).exists() and not (out / jobs.MARKERS).exists()
    monkeypatch.setattr(jobs, "compute", killed)  # killed again, then asked with another block size
    with pytest.raises(KeyboardInterrupt):
        jobs.predict_big(model_file, source, tmp_path / "p.ome.zarr", request)
    timings = {}
    monkeypatch.setattr(jobs, "compute", real)
    jobs.predict_big(model_file, source, tmp_path / "p.ome.zarr", dataclasses.replace(request, block=256),
                     timings=timings)
    assert timings["blocks_done_before"] == 0


def test_a_local_cluster_of_two_workers_gives_the_local_result(model_file, cells, tmp_path):
    from distributed import LocalCluster

    source = write_ome_zarr(tmp_path / "cells.ome.zarr", cells, "yx")
    data.write_image(tmp_path / "small" / "s1.png", cells[:100, :120])
    data.write_image(tmp_path / "small" / "s2.png", cells[100:220, :100])
    local = run("predict", model_file, source, "--format", "instances", "--block", 128, "--tile", 220,
                "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run("predict", model_file, source, tmp_path / "small", "--format", "instances", "--block", 128,
                     "--tile", 220, "--scheduler", cluster.scheduler_address, "--out", tmp_path / "remote")
    assert remote.exit_code == 0, remote.output
    a, b = read_result(tmp_path / "local" / "cells.ome.zarr"), read_result(tmp_path / "remote" / "cells.ome.zarr")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (tmp_path / "remote" / "s1_instances.tif").is_file() and (tmp_path / "remote" / "s2_instances.tif").is_file()
