"""Atomic writes: a failure mid-write leaves neither a partial file nor a stray temporary."""
import os
import subprocess
import sys

import pytest

from keras_unet import files


def test_a_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with files.atomic_path(target) as tmp:
        tmp.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_block_that_writes_nothing_publishes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with files.atomic_path(tmp_path / "a.png"):
            pass
    assert not list(tmp_path.iterdir())


def test_atomic_directory_is_all_or_nothing(tmp_path):
    with pytest.raises(ValueError):
        with files.atomic_directory(tmp_path / "1") as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_bytes(b"x")
            raise ValueError("export failed")
    assert not list(tmp_path.iterdir())
    with files.atomic_directory(tmp_path / "1") as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"x")
    assert (tmp_path / "1" / "saved_model.pb").is_file() and len(list(tmp_path.iterdir())) == 1


def test_leftovers_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path):
    script = ("import sys, os; from pathlib import Path; from keras_unet import files\n"
              "with files.atomic_path(Path(sys.argv[1]) / 'model.keras') as tmp:\n"
              "    tmp.write_bytes(b'half'); os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    (stale,) = list(tmp_path.iterdir())  # SIGKILL: no cleanup ran
    assert stale.name.startswith(".model.keras.") and ".tmp" in stale.name
    mine = files.temporary_name(tmp_path / "live.keras")
    mine.write_bytes(b"being written by this process")
    assert files.remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()
    os.unlink(mine)
