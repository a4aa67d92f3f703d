"""The kind of a nuclei image by its background (keras_unet.kinds): held to an independent rule
on real DSB2018 images, invariant to bit depth and exposure, flipped by inversion."""
import numpy as np

from keras_unet import data, kinds

from conftest import shared_data


def test_dsb2018_images_are_dark_or_light_as_their_stain_says():
    # the independent rule of benchmarks/budget.kind: differing channels (a stain) or a median over
    # the middle of 8 bits (brightfield) is light; gray on black is fluorescence
    images = sorted((shared_data("dsb2018-train") / "images").glob("*.png"))[::9]
    seen = set()
    for path in images:
        image = data.read_image(path)
        stained = image.ndim == 3 and not (np.array_equal(image[..., 0], image[..., 1])
                                           and np.array_equal(image[..., 1], image[..., 2]))
        expected = "light" if stained or float(np.median(image)) > 127 else "dark"
        assert kinds.kind(image) == expected, (path.name, kinds.background_level(image))
        seen.add(expected)
    assert seen == {"dark", "light"}  # the sample holds both kinds


def fluorescence(dtype=np.uint16, peak=4000) -> np.ndarray:
    """Bright discs on a dark, slightly noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :240]
    image = rng.normal(200, 20, (200, 240))
    for r, c in [(40, 40), (60, 150), (140, 80), (150, 190)]:
        image[(yy - r) ** 2 + (xx - c) ** 2 <= 15 ** 2] = peak
    return np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)


def test_any_bit_depth_and_exposure_gives_the_same_kind_and_inversion_flips_it():
    image = fluorescence()
    assert kinds.kind(image) == "dark"
    assert kinds.kind((image // 20).astype(np.uint8)) == "dark"  # 8 bits, dimmer
    assert kinds.kind(image.astype(np.float32) * 7.5) == "dark"
    inverted = image.max() - image
    assert kinds.kind(inverted) == "light"
    rgb = np.stack([inverted, inverted // 2, inverted], -1)  # a stain-like colour image
    assert kinds.kind(rgb) == "light"
    assert abs(kinds.background_level(image) + kinds.background_level(inverted) - 1) < 0.05


def test_dense_bright_cells_are_dark():
    """The demo's synthetic cells cover half the image, so the median is near a cell's value; the
    tail says they are bright objects."""
    from keras_unet import synthetic

    for seed in range(6):
        image, _ = synthetic.sample(seed=seed)
        assert kinds.background_level(image) > 0.2 and kinds.kind(image) == "dark"
        assert kinds.kind(255 - image) == "light"


def test_a_constant_or_empty_image_is_dark():
    assert kinds.background_level(np.full((50, 60), 7, np.uint8)) == 0.0
    assert kinds.kind(np.zeros((0, 0), np.uint8)) == "dark"


def test_a_big_image_is_sampled_in_windows_spread_over_it():
    import dask.array as da

    image = np.arange(3000 * 2000, dtype=np.int64).reshape(3000, 2000, 1)
    windows = kinds.sampled(da.from_array(image, chunks=(256, 256, 1)), grid=3, window=500)
    rows, cols = (0, 1250, 2500), (0, 750, 1500)  # first, middle and last window along each side
    expected = np.concatenate([image[r:r + 500, c:c + 500] for r in rows for c in cols], axis=1)
    np.testing.assert_array_equal(windows, expected)
    small = np.ones((600, 700, 3), np.uint8)  # no bigger than the windows together: all of it
    assert kinds.sampled(small, grid=3, window=500).shape == small.shape
    # the kind of the windows of a light image with dark nuclei is the kind of the whole
    light = np.full((1600, 1600), 200, np.uint8)
    light[::40, :] = 30
    assert kinds.kind(kinds.sampled(light)) == kinds.kind(light) == "light"
