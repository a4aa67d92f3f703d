"""The README's screenshot of the napari widget: the shipped ``nuclei`` model on a held-out
DSB2018 image (CC0; ``../shared/data/dsb2018-train``, the benchmarks' test split), taken headless.

    python docs/napari_screenshot.py [--out docs/napari_widget.png]

napari draws with OpenGL, which needs a display: this script starts Xvfb (Debian's ``xvfb``) on
``:97`` where ``DISPLAY`` is not set, and uses Mesa's softpipe renderer (see below). The file is
written before the process exits (Qt's xcb/Mesa teardown may abort after that on a virtual display).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _display() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    if not shutil.which("Xvfb"):
        sys.exit("no DISPLAY and no Xvfb: install Debian's xvfb or run under a display")
    server = subprocess.Popen(["Xvfb", ":97", "-screen", "0", "1600x1000x24"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = ":97"
    time.sleep(2)
    return server


def _image():
    """The held-out fluorescence image with the most nuclei among those of 256-520 px."""
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import their _common as a sibling
    from budget import kind, split
    from keras_unet import data

    best = None
    for image_path, mask_path in split()[1]:
        image = data.read_image(image_path)
        if kind(image) != "fluorescence" or not 256 <= min(image.shape[:2]) <= 520:
            continue
        count = len(set(data.read_image(mask_path).ravel().tolist())) - 1
        if best is None or count > best[0]:
            best = (count, image_path, image)
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "napari_widget.png"))
    args = parser.parse_args()
    server = _display()
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    # Mesa's llvmpipe (the software OpenGL of a virtual display) and TensorFlow each carry an LLVM;
    # with both loaded the process crashed (segfault), with Mesa's softpipe it does not.
    os.environ.setdefault("GALLIUM_DRIVER", "softpipe")
    try:
        import imageio.v3 as iio
        import napari
        from qtpy.QtWidgets import QApplication

        from keras_unet.napari_plugin.widget import SegmentWidget

        path, image = _image()
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1500, 900)
        layer = viewer.add_image(image[..., 0] if image.ndim == 3 else image, name="DSB2018 nuclei")
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment (U-Net)", area="right")
        widget.image.value = layer
        widget.probabilities.value = False
        widget.run()
        while widget.worker is not None:
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.layers[-1].contour = 2  # outlines: the nuclei stay visible under their objects
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        iio.imwrite(args.out, viewer.screenshot(canvas_only=False, flash=False))
        print(f"{args.out}: {path.name}, {widget.status.value}")
        sys.stdout.flush()
        viewer.close()
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()
