"""Atomic writes: the one way the project writes a file or folder.

Everything is written under a temporary name in the target's folder and renamed into place only
when complete, so a crash or kill at any moment leaves either the old file or the new one, never a
half-written one. Temporary names carry the writing process's id (``.NAME.<pid>.tmp…``), so
:func:`remove_stale_temporaries` can clear what killed processes left behind.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_STALE = re.compile(r"^\..+\.(\d+)\.tmp")


def temporary_name(path: Path) -> Path:
    """``.NAME.<pid>.tmp<suffix>`` beside ``path`` (the suffix kept for writers that read it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


def naming(err: OSError, path: Path, written: Path | None = None) -> OSError:
    """``err`` naming the file being written where it names no file (a full disk's ENOSPC comes
    from ``write()`` without one) or names the temporary ``written`` (default: ``path``'s
    :func:`temporary_name`), which would mean nothing to the user."""
    written = temporary_name(path) if written is None else written
    if err.errno is None or (err.filename and not str(err.filename).startswith(str(written))):
        return err
    return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On any exception (or a file the block never wrote) nothing is renamed and the temporary is
    removed: ``with atomic_path(out) as tmp: tmp.write_text(...)``. Folders are made as needed;
    the file gets the usual permissions (umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: nothing was written")
        os.replace(tmp, path)
    except OSError as err:
        raise naming(err, path) from err
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_directory(path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: yield a temporary folder path (not yet created),
    rename it to ``path`` (which must not exist) when the block succeeds, remove it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        tmp.rename(path)
    except OSError as err:
        raise naming(err, path) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_writable_folder(folder) -> Path:
    """Prove that files can be written in ``folder`` before any expensive work whose result goes
    there, without making it (a run that fails later leaves no empty folder behind): the folder,
    or the nearest part of its path that exists, must be a writable folder. Raises the OSError."""
    folder = Path(folder)
    for part in (folder, *folder.parents):  # mkdir would say "File exists" for a file on the way
        if part.exists():
            if not part.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(part))
            if not os.access(part, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "folder is not writable", str(part))
            return folder
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove temporaries in ``folder`` left by writers that are no longer running; returns them."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _STALE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def cache_root() -> Path:
    """Where the project caches what it computes once (weight maps, converted networks, engine
    measurements): ``$KERAS_UNET_CACHE``, else ``~/.cache/keras-unet``."""
    return Path(os.environ.get("KERAS_UNET_CACHE", Path.home() / ".cache" / "keras-unet"))
