"""bioimage.io model package: what deepImageJ (Fiji), ilastik, napari and QuPath open.

``export_bioimageio`` writes ``OUT/<name>.bioimageio.zip`` (format 0.5): an ``rdf.yaml`` with the
model's real axes (batch, y, x, channel), its valid-size rule (min and step of the input size) and
the output offset of the unpadded network, TensorFlow SavedModel weights (probabilities only:
bioimage.io tools map outputs by position), test input and output from a real-looking image or
the user's own, a cover, the paper as citation, a licence and documentation. The model's first
layer maps the raw pixel range to [0, 1], so the package's only preprocessing is a cast to float32.

Built with bioimageio.spec's own classes and checked with bioimageio.core's ``test_model`` (the
``[bioimageio]`` extra); nothing is fetched from the network.
"""
from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from keras_unet.errors import ExportError
from keras_unet.files import atomic_path

PAPER_DOI = "10.1007/978-3-319-24574-4_28"
EXTRA = "pip install 'unet-paper-keras[bioimageio]'"


def require_spec() -> None:
    import importlib.util

    if importlib.util.find_spec("bioimageio") is None or importlib.util.find_spec("bioimageio.core") is None:
        raise ExportError(f"bioimage.io export needs bioimageio.core: {EXTRA}")


def _documentation(config: dict, name: str, tile: int, smallest: int, step: int, offset: int) -> str:
    if config["percentiles"] is not None:
        low, high = config["percentiles"]
        how = (f"each input is normalised by its own {low:g}th and {high:g}th percentiles per channel inside the "
               "model; for large images whole-image statistics are best: tile after normalising, or use "
               "keras-unet's SavedModel `segment` signature")
    else:
        low, high = config["input_range"] or (0.0, 1.0)
        how = f"the network maps {low:g}-{high:g} to [0, 1] itself"
    return f"""# {name}: a U-Net (Ronneberger, Fischer and Brox, 2015) trained with keras-unet

* Input `image`: (batch, y, x, channel), {config['in_channels']} channel(s), **raw pixel values**
  ({how}); y and x must be {smallest} + {step}k px
  (valid, unpadded convolutions: depth {config['depth']}); {tile} px tiles are a good choice.
* Output `probabilities`: (batch, y', x', class) with y' = y {offset:+d} px, the centre of the input
  (the network has no padding, so the output is the part of the input it has full context for).
  Classes: {', '.join(_class_names(config['n_classes']))}.
* Larger images: tile them with an overlap of {-offset // 2} px per side (deepImageJ, ilastik and
  bioimageio.core's blockwise prediction do this from the axes in rdf.yaml).

Open it in Fiji with deepImageJ (Install model, from this zip), in ilastik's Neural Network
Classification workflow, or in napari with the bioimage.io plugins.
"""


def _class_names(n_classes: int) -> list[str]:
    return ["background", "object"] if n_classes == 2 else [f"class{k}" for k in range(n_classes)]


def _cover(image: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """Input centre and p(object) side by side, 8-bit gray."""
    import imageio.v3 as iio

    out = probabilities.shape[0]
    margin = (image.shape[0] - out) // 2
    crop = image[margin : margin + out, margin : margin + out, 0]
    crop = (255 * (crop - crop.min()) / max(float(np.ptp(crop)), 1e-6)).astype(np.uint8)
    iio.imwrite(path, np.concatenate([crop, (255 * probabilities[..., -1]).astype(np.uint8)], axis=1))


def export_bioimageio(model, out_dir, name: str = "unet", tile: int | None = None, sample: np.ndarray | None = None,
                      authors=None, license: str = "CC-BY-4.0") -> Path:
    """Write ``out_dir/<name>.bioimageio.zip``; ``sample``: an image ``(H, W[, C])`` for the test
    tensors (mirror-padded to the tile if smaller), else a real-looking synthetic one."""
    require_spec()
    from bioimageio.spec import save_bioimageio_package

    from keras_unet import sizes
    from keras_unet.graphs import default_export_tile
    from keras_unet.model import unet_config

    config = unet_config(model)
    tile = tile or default_export_tile(model)
    sizes.check_input_size(tile, config["depth"], config["padding"])
    image = _test_image(sample, tile, config)
    work = Path(tempfile.mkdtemp(prefix="keras-unet-bioimageio-"))
    try:
        _write_files(model, image, tile, config, name, work)
        save_bioimageio_package(_description(config, tile, name, authors, license, work), output_path=work / "package.zip")
        final = Path(out_dir) / f"{name}.bioimageio.zip"
        with atomic_path(final) as tmp:
            shutil.copyfile(work / "package.zip", tmp)
        return final
    except ExportError:
        raise
    except Exception as err:  # the spec's validation errors are long: name the field and the problem
        first = err.errors()[0] if hasattr(err, "errors") and err.errors() else None
        what = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(err).splitlines()[0]
        raise ExportError(f"bioimage.io package not written: {what}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _test_image(sample, tile: int, config: dict) -> np.ndarray:
    """The test input ``(tile, tile, C)``: ``sample`` mirror-padded to the tile (a gray one as RGB
    for an RGB model), else a real-looking synthetic image."""
    from keras_unet import synthetic

    if sample is None:
        return synthetic.model_image((tile, tile), config)
    image = np.asarray(sample, np.float32).reshape(*np.shape(sample)[:2], -1)
    if image.shape[-1] == 1 and config["in_channels"] == 3:
        image = np.repeat(image, 3, axis=-1)
    if image.shape[-1] != config["in_channels"]:
        raise ExportError(f"the sample image has {image.shape[-1]} channel(s) but the model takes {config['in_channels']}")
    pad = [(0, max(tile - image.shape[0], 0)), (0, max(tile - image.shape[1], 0)), (0, 0)]
    return np.pad(image, pad, mode="reflect")[:tile, :tile]


def _write_files(model, image: np.ndarray, tile: int, config: dict, name: str, work: Path) -> None:
    """The package's files in ``work``: the zipped SavedModel, test tensors, cover and README."""
    from keras_unet import sizes
    from keras_unet.graphs import save_module

    save_module(model, work / "saved_model", tile, signatures=("serving_default",), labels=False)
    shutil.make_archive(str(work / "tf_saved_model"), "zip", work / "saved_model")
    batch = image[None]
    probabilities = np.asarray(model.predict_on_batch(batch), np.float32)
    np.save(work / "test_input.npy", batch)
    np.save(work / "test_output.npy", probabilities)
    _cover(image, probabilities[0], work / "cover.png")
    smallest, step = sizes.smallest_valid_input(config["depth"], config["padding"]), sizes.size_step(config["depth"])
    offset = sizes.output_size(tile, config["depth"], config["padding"]) - tile
    (work / "README.md").write_text(_documentation(config, name, tile, smallest, step, offset))


def _tensors(config: dict, tile: int, work: Path):
    """The input and output tensor descriptions: any valid size (smallest + k * step), the output
    ``offset`` px smaller on each axis."""
    from bioimageio.spec.model import v0_5 as spec

    from keras_unet import sizes

    smallest, step = sizes.smallest_valid_input(config["depth"], config["padding"]), sizes.size_step(config["depth"])
    offset = sizes.output_size(tile, config["depth"], config["padding"]) - tile

    def space(axis: str, output: bool):
        if output:
            return spec.SpaceOutputAxis(id=spec.AxisId(axis), size=spec.SizeReference(
                tensor_id=spec.TensorId("image"), axis_id=spec.AxisId(axis), offset=offset))
        return spec.SpaceInputAxis(id=spec.AxisId(axis), size=spec.ParameterizedSize(min=smallest, step=step))

    channels = ["gray"] if config["in_channels"] == 1 else [f"channel{k}" for k in range(config["in_channels"])]
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("image"), description="raw pixel values (the model normalises them itself)",
        axes=[spec.BatchAxis(), space("y", False), space("x", False),
              spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channels])],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"),
        preprocessing=[spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))])
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"), description="softmax class probabilities",
        axes=[spec.BatchAxis(), space("y", True), space("x", True),
              spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in _class_names(config["n_classes"])])],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"))
    return inputs, outputs


def _description(config: dict, tile: int, name: str, authors, license: str, work: Path):
    """The model's bioimage.io description (spec 0.5) over the files in ``work``."""
    import tensorflow as tf
    from bioimageio.spec.model import v0_5 as spec

    inputs, outputs = _tensors(config, tile, work)
    return spec.ModelDescr(
        name=name if len(name) >= 5 else f"keras-unet {name}",
        description="U-Net (Ronneberger et al. 2015) for microscopy segmentation, trained with keras-unet",
        authors=[spec.Author(name=a) for a in (authors or [getpass.getuser()])],
        cite=[spec.CiteEntry(text="Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                                  "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351.", doi=spec.Doi(PAPER_DOI))],
        license=spec.LicenseId(license), documentation=spec.FileDescr(source=work / "README.md"),
        covers=[spec.FileDescr(source=work / "cover.png")], tags=["unet", "segmentation", "2d", "keras-unet"],
        inputs=[inputs], outputs=[outputs],
        weights=spec.WeightsDescr(tensorflow_saved_model_bundle=spec.TensorflowSavedModelBundleWeightsDescr(
            source=work / "tf_saved_model.zip", tensorflow_version=spec.Version(tf.__version__))))


_TEST = r"""
import sys
from bioimageio.core import test_model
summary = test_model(sys.argv[1])
print("STATUS", summary.status)
if summary.status != "passed":
    for detail in summary.details:
        if detail.status != "passed":
            print("FAILED", detail.name, [str(e.msg)[:200] for e in detail.errors][:2])
"""


def test_package(path) -> str:
    """Run bioimageio.core's ``test_model`` on the package in a fresh process (no keras_unet);
    raises :class:`ExportError` unless it passes."""
    from keras_unet.subprocesses import child_env

    done = subprocess.run([sys.executable, "-c", _TEST, str(path)], capture_output=True, text=True, env=child_env(),
                          cwd=tempfile.gettempdir())
    status = [line for line in done.stdout.splitlines() if line.startswith(("STATUS", "FAILED"))]
    if done.returncode != 0 or not status or status[0] != "STATUS passed":
        detail = "; ".join(status) or (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"{path}: bioimageio.core's test_model did not pass ({detail})")
    return "passed"
