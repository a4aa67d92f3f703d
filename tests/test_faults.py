"""A bad file among good ones: predict and evaluate finish every good input, name each bad one in
one line and in a summary, exit 3 (not 2, a usage error's), and leave nothing half-written; fit's
data check names every bad file (inspect-data lists them)."""
import numpy as np
import pytest
from click.testing import CliRunner

from keras_unet import data, synthetic
from keras_unet.cli.main import main


def bad_files(folder, suffix: str = "") -> dict:
    """The bad inputs of the issue, written into ``folder``: name -> what its line must say."""
    good = data.read_image(folder / f"good0{suffix or '.png'}") if (folder / "good0.png").exists() else None
    (folder / "empty.png").write_bytes(b"")
    png = (folder / "good0.png").read_bytes() if good is not None else b""
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "text.tif").write_text("not an image at all\n")
    data.write_image(folder / "tiny.png", np.full((1, 1), 7, np.uint8))
    data.write_image(folder / "rgb.png", np.zeros((40, 40, 3), np.uint8))  # the model takes one channel
    return {"empty.png": "empty.png", "truncated.png": "truncated.png", "text.tif": "text.tif",
            "tiny.png": "tiny.png", "rgb.png": "channel"}


def test_predict_finishes_the_good_files_and_names_each_bad_one(tmp_path, model_file):
    images = tmp_path / "in"
    images.mkdir()
    for seed in range(3):
        data.write_image(images / f"good{seed}.png", synthetic.sample((90, 110), seed=seed)[0])
    expected = bad_files(images)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(model_file), str(images), "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert sorted(p.name for p in out.iterdir()) == ["good0.png", "good1.png", "good2.png"]  # nothing else, no temporary
    summary = result.output[result.output.index("could not be used:"):]
    for name, text in expected.items():
        lines = [line for line in summary.splitlines() if name in line]
        assert len(lines) == 1 and text in lines[0], (name, summary)
    assert f"{len(expected)} of {len(expected) + 3} input(s) failed" in result.output
    assert "Traceback" not in result.output
    # again with --skip-done: the good ones are skipped, the bad ones named again
    again = CliRunner().invoke(main, ["predict", str(model_file), str(images), "--out", str(out),
                                      "--skip-done"])
    assert again.exit_code == 3 and again.output.count("done before, skipped") == 3


def test_evaluate_scores_the_good_pairs_and_names_each_bad_one(tmp_path, model_file):
    root = tmp_path / "set"
    for seed in range(2):
        image, labels = synthetic.sample((90, 110), seed=seed)
        data.write_image(root / "images" / f"good{seed}.png", image)
        data.write_image(root / "masks" / f"good{seed}.png", labels.astype(np.uint16))
    (root / "images" / "empty.png").write_bytes(b"")
    data.write_image(root / "masks" / "empty.png", np.zeros((20, 20), np.uint8))
    data.write_image(root / "images" / "small.png", np.zeros((30, 30), np.uint8))
    data.write_image(root / "masks" / "small.png", np.zeros((31, 30), np.uint8))  # sizes differ
    result = CliRunner().invoke(main, ["evaluate", str(model_file), str(root), "--out",
                                       str(tmp_path / "metrics")])
    assert result.exit_code == 3, result.output
    assert "good0.png" in result.output and "good1.png" in result.output and "mean" in result.output
    summary = result.output[result.output.index("could not be used:"):]
    assert len([line for line in summary.splitlines() if "empty.png" in line]) == 1
    assert len([line for line in summary.splitlines() if "small.png" in line]) == 1
    assert (tmp_path / "metrics" / "metrics.csv").read_text().count("good") == 2


def test_the_data_check_names_every_bad_file(tmp_path):
    root = tmp_path / "set"
    for seed in range(2):
        image, labels = synthetic.sample((96, 96), seed=seed)
        data.write_image(root / "images" / f"good{seed}.png", image)
        data.write_image(root / "masks" / f"good{seed}.png", labels.astype(np.uint16))
    for name in ("empty", "broken"):
        data.write_image(root / "masks" / f"{name}.png", np.zeros((96, 96), np.uint8))
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    listed = CliRunner().invoke(main, ["inspect-data", str(root), "--out", str(tmp_path / "a.png"), "--tile", "92"])
    assert listed.exit_code == 2
    problems = [line for line in listed.output.splitlines() if line.startswith("problem:")]
    assert any("empty.png" in line for line in problems) and any("broken.png" in line for line in problems)
    refused = CliRunner().invoke(main, ["fit", "--data", str(root), "--tile", "92", "--depth", "3", "--epochs", "1",
                                        "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "and 1 more problem(s); keras-unet inspect-data lists them" in refused.output
    assert not (tmp_path / "run").exists()


# -- a full disk: ENOSPC where the bytes go, as write() raises it (no file name) -------------------


def full_disk_after(limit: int):
    """An ``open`` whose files take ``limit`` bytes, then raise ENOSPC like a full file system."""
    import builtins
    import errno
    import io

    real_open = builtins.open

    class Full(io.FileIO):
        written = 0

        def write(self, chunk):
            if Full.written + len(chunk) > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            Full.written += len(chunk)
            return super().write(chunk)

    def opened(file, mode="r", *args, **kwargs):
        if "w" in mode and "b" in mode and ".tmp" in str(file):  # the project's atomic temporaries only
            raw = Full(file, mode.replace("b", ""))
            return io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        return real_open(file, mode, *args, **kwargs)

    return opened


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, model_file, monkeypatch):
    import builtins
    import io

    data.write_image(tmp_path / "a.png", synthetic.sample((90, 110), seed=0)[0])
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(builtins, "open", full_disk_after(100))
    monkeypatch.setattr(io, "open", builtins.open)
    result = CliRunner().invoke(main, ["predict", str(model_file), str(tmp_path / "a.png"), "--format", "tif",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"Error: {out / 'a.tif'}: No space left on device" in result.output
    assert list(out.iterdir()) == []  # no temporary, no partial file


def test_a_full_disk_during_training_keeps_the_last_checkpoint_for_resume(tmp_path, monkeypatch):
    import builtins
    import io

    from keras_unet import runs, train

    config = train.TrainConfig(depth=3, base_filters=4, tile=68, batch_size=2, epochs=1, steps_per_epoch=2,
                               synthetic_images=3, synthetic_size=64, optimizer="adam", precision="float32")
    run = tmp_path / "run"
    train.fit(config, run, verbose=0)
    before = runs.run_file(run, runs.LAST).read_bytes()
    monkeypatch.setattr(builtins, "open", full_disk_after(1000))
    monkeypatch.setattr(io, "open", builtins.open)  # zipfile (Keras' .keras files) opens through io.open
    with pytest.raises(OSError) as failed:
        train.resume(run, epochs=2, verbose=0)
    assert failed.value.filename and str(run) in failed.value.filename and "No space" in str(failed.value)
    monkeypatch.undo()
    assert runs.run_file(run, runs.LAST).read_bytes() == before  # the previous checkpoint, intact
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    assert train.resume(run, epochs=2, verbose=0)["epoch"] == 2  # space freed: --resume goes on


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where this machine lets the tests mount one (root in a
    container that allows it); else the test is skipped (the ENOSPC injections above still run)."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + mounted.stderr.decode(errors="replace").strip()[:80])
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_really_full_disk_for_export_and_a_big_image_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    """On a file system that is really full: the SavedModel export (TensorFlow's own writes), the
    TFLite export and a big image's OME-Zarr store each fail with one line naming the output and
    the cause, and leave the disk as it was (the SavedModel's version folder and the parents it
    made included)."""
    import keras

    from keras_unet.model import unet

    keras.utils.set_random_seed(0)
    model = tmp_path / "b8.keras"
    unet(base_filters=8, dropout=0.0).save(model)  # 2 MB of weights: more than the disk holds
    for fmt, named in [("savedmodel", "exp/unet/1"), ("tflite", "exp/unet.tflite")]:
        result = CliRunner().invoke(main, ["export", str(model), "--format", fmt, "--out", str(small_disk / "exp"),
                                           "--no-verify"])
        assert result.exit_code == 2, result.output
        assert f"Error: {small_disk / named}: No space left on device" in result.output, result.output
        assert not [p for p in small_disk.rglob("*") if p.is_file()], list(small_disk.rglob("*"))
    image = synthetic.sample((700, 700), seed=1)[0]
    data.write_image(tmp_path / "big.tif", image)
    result = CliRunner().invoke(main, ["predict", str(model), str(tmp_path / "big.tif"), "--block", "256",
                                       "--format", "instances", "--out", str(small_disk / "pred")])
    assert result.exit_code == 2, result.output
    assert f"Error: {small_disk / 'pred' / 'big.ome.zarr'}: No space left on device" in result.output, result.output
    assert not [p for p in small_disk.rglob("*") if p.is_file()]
