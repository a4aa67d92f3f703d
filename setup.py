"""Installable package for keras-unet (distribution name ``unet-paper-keras``).

The import name stays ``keras_unet`` and the command ``keras-unet``. The folders
``cli/`` and ``export/`` are installed as ``keras_unet.cli`` and ``keras_unet.export``,
so no top-level ``cli`` or ``export`` package is ever installed.
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "keras_unet" / "__init__.py").read_text()).group(1)

CORE = [
    "keras>=3.10",
    "numpy>=1.26",
    "scipy>=1.11",
    "imageio>=2.31",
    "tifffile>=2023.7",
    "click>=8.1",
    "matplotlib>=3.8",
]

setup(
    name="unet-paper-keras",
    version=VERSION,
    description="The U-Net of Ronneberger et al. (2015) in TensorFlow/Keras 3: model, weight maps, "
    "augmentation, overlap-tile prediction, evaluation and export.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["keras_unet", "keras_unet.cli", "keras_unet.export"],
    package_dir={"keras_unet": "keras_unet", "keras_unet.cli": "cli", "keras_unet.export": "export"},
    install_requires=CORE,
    extras_require={
        # Pick exactly one TensorFlow build: ``cpu`` is the small wheel CI uses, ``gpu`` the full one.
        "cpu": ["tensorflow-cpu>=2.21"],
        "gpu": ["tensorflow[and-cuda]>=2.21"],
        "tflite": ["ai-edge-litert>=1.2"],
        "tensorboard": ["tensorboard>=2.21"],
        "test": ["pytest>=8", "scikit-image>=0.22", "ai-edge-litert>=1.2"],
    },
    entry_points={"console_scripts": ["keras-unet=keras_unet.cli.main:main"]},
)
