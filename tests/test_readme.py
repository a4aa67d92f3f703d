"""The README's two fresh-machine commands and `.ci/run` stay one and the same."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands(ROOT / "README.md")


def test_readme_has_the_main_job_then_the_tests():
    main_job, tests = readme_commands()
    assert main_job.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert main_job.endswith(".venv/bin/keras-unet fit")
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")
    assert "test" in tests and tests.endswith("-m pytest")
    assert "--upgrade" not in main_job + tests  # the pip a fresh venv has


def test_ci_runs_what_the_readme_says_and_nothing_else():
    script = (ROOT / ".ci" / "run").read_text()
    code = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any("readme_commands.py" in line for line in code)
    steps = [line for line in code if re.search(r"\b(pip|pytest|keras-unet)\b", line)]
    assert not steps, f"CI must not add install or test steps of its own: {steps}"
    printed = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py")], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert printed == readme_commands()


def test_packaging_maps_cli_and_export_into_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["tool"]["setuptools"]["package-dir"] == {
        "keras_unet": "keras_unet", "keras_unet.cli": "cli", "keras_unet.export": "export"}
    assert not (ROOT / "setup.py").exists()
    import keras_unet.cli
    import keras_unet.export

    assert Path(keras_unet.cli.__file__).parent == ROOT / "cli"
    assert Path(keras_unet.export.__file__).parent == ROOT / "export"


def test_the_readme_python_calls_exist():
    """Every ``module.function(`` of a keras_unet module that a README Python block imports exists
    (the README's examples follow the library when it moves)."""
    import importlib

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    missing = []
    for block in blocks:
        compile(block, "README.md", "exec")
        names = {}
        for module, listed in re.findall(r"^from (keras_unet[\w.]*) import (.+)$", block, flags=re.M):
            for name in (n.strip() for n in listed.split(",")):
                names[name] = (module, name)
        names.update({m: (m, None) for m in re.findall(r"^import (keras_unet)$", block, flags=re.M)})
        for name, attribute in re.findall(r"\b(\w+)\.(\w+)\(", block):
            if name not in names:
                continue
            module, member = names[name]
            try:
                found = importlib.import_module(f"{module}.{member}") if member else importlib.import_module(module)
            except ImportError:
                found = getattr(importlib.import_module(module), member)
            if not hasattr(found, attribute):
                missing.append(f"{name}.{attribute}")
    assert not missing, f"README calls what the library does not have: {missing}"
