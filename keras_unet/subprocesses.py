"""The environment of the fresh processes the library starts (export checks, converters).

One owner, so every child is started alike: the caller's environment without ``PYTHONPATH`` (a
check must load what an installed client loads, never a source tree on the path) and with
TensorFlow's C++ log level at 3 (the child's stderr is read for errors only, and banners there
would bury the one line that matters).
"""
from __future__ import annotations

import os


def child_env(**overrides) -> dict:
    """``os.environ`` without ``PYTHONPATH``, ``TF_CPP_MIN_LOG_LEVEL=3``, then ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return {**env, **{k: str(v) for k, v in overrides.items()}}
