"""A model file whose network this machine has converted (its ONNX file in the cache), as ONNX
Runtime and OpenVINO run it without TensorFlow: the network's settings and its key, recorded the
first time a job ran the file on one of them (:meth:`keras_unet.predictor.Predictor.of` reads the
record, :meth:`keras_unet.predictor.Predictor.job` writes it).

Why: importing TensorFlow and loading the Keras model took 3.9 s of a 5.8 s one-image ``predict
nuclei --engine openvino`` (AMD EPYC, Zen 4, 2 cores), more than the network. With the record a job
loads neither, unless something needs the Keras model after all (TensorFlow chosen or measured, a
conversion, an export): ``keras`` loads it then, once, so every path works as before, only later.

This module imports nothing of the package but :mod:`keras_unet.files`: the model, tiling and
engine modules ask it what an object is, and how to load the Keras model is given to it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from keras_unet.files import atomic_path, cache_root

VERSION = 1  # of the record's layout: a record of another version is not read


class ConvertedNetwork:
    """What the engines see of a :class:`ConvertedModel`'s prediction network: its ``key``
    (:func:`keras_unet.engines.network_key`) and ``input_shape``; ``keras`` loads it."""

    def __init__(self, owner: "ConvertedModel", key: str, in_channels: int):
        self.owner, self.key, self.in_channels = owner, key, in_channels

    @property
    def input_shape(self) -> tuple:
        return (None, None, None, self.in_channels)

    @property
    def keras(self):
        """The Keras network, loaded now if it was not."""
        return self.owner.load_network()


class ConvertedModel:
    """A model file (``path``) run through its converted network: ``config`` (its
    :func:`keras_unet.model.unet_config`), ``network`` (a :class:`ConvertedNetwork`); ``keras``
    (``load()``) and ``load_network()`` give the Keras model and its prediction network."""

    def __init__(self, path: Path, config: dict, key: str, in_channels: int, load, load_network):
        self.path, self.config, self._load, self.load_network = Path(path), dict(config), load, load_network
        self.network = ConvertedNetwork(self, key, in_channels)

    @property
    def keras(self):
        """The Keras model, loaded now if it was not."""
        return self._load()

    def __repr__(self) -> str:
        return f"ConvertedModel({str(self.path)!r}, key={self.network.key!r})"


def keras_of(model):
    """The Keras object itself: a converted model's or network's, loaded now; anything else as it is."""
    return model.keras if isinstance(model, (ConvertedModel, ConvertedNetwork)) else model


def record_path(model_path) -> Path:
    """Where the record of the model file ``model_path`` is: named by a hash of its bytes, so a
    file changed in place (a run trained on) is a file of its own and a copy shares the record."""
    path = Path(model_path).resolve()
    stat = path.stat()
    return cache_root() / "models" / f"{_file_hash(str(path), stat.st_mtime_ns, stat.st_size)}.json"


@functools.lru_cache(maxsize=16)
def _file_hash(path: str, _modified: int, _size: int) -> str:
    with open(path, "rb") as handle:  # 8 MB of the shipped model: about 10 ms, once per file and process
        return hashlib.file_digest(handle, "sha256").hexdigest()[:32]


def write_record(model_path, config: dict, key: str, in_channels: int) -> None:
    """Record ``config``, the prediction network's ``key`` and input channels for ``model_path``
    (once: a record there is kept). A cache that cannot be written is left as it is: the next job
    loads the Keras model, as without a record."""
    path = record_path(model_path)
    if path.is_file():
        return
    record = {"version": VERSION, "config": config, "network_key": key, "in_channels": int(in_channels)}
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=list))
    except OSError:
        pass


def read_record(model_path) -> dict | None:
    """The record of ``model_path``: ``config`` (tuples as the model gives them), ``network_key``,
    ``in_channels``; None where there is none, or one this version cannot read."""
    try:
        record = json.loads(record_path(model_path).read_text())
        config, key, channels = record["config"], record["network_key"], int(record["in_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("version") != VERSION or not isinstance(config, dict) or not isinstance(key, str):
        return None
    config = {name: tuple(value) if isinstance(value, list) else value for name, value in config.items()}
    return {"config": config, "network_key": key, "in_channels": channels}
