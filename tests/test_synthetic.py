import numpy as np
import pytest

from keras_unet import synthetic


def test_deterministic_per_seed():
    a_img, a_lab = synthetic.sample((128, 160), seed=5)
    b_img, b_lab = synthetic.sample((128, 160), seed=5)
    c_img, _ = synthetic.sample((128, 160), seed=6)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.dtype == np.uint8 and a_img.shape == (128, 160)


def test_objects_touch_and_background_exists():
    _, labels = synthetic.sample((256, 256), seed=0)
    assert labels.max() >= 10
    assert 0.2 < (labels > 0).mean() < 0.9
    left, right = labels[:, :-1], labels[:, 1:]
    touching = (left != right) & (left > 0) & (right > 0)
    assert touching.sum() > 50  # shared borders between different cells


def test_membranes_are_brighter_than_interiors():
    image, labels = synthetic.sample((256, 256), seed=1)
    from scipy import ndimage

    border = ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3)
    interior = (labels > 0) & ~ndimage.binary_dilation(border, iterations=3)
    assert image[border].mean() > image[interior].mean() + 20
    assert image[labels == 0].mean() < image[interior].mean()


def test_write_dataset(tmp_path):
    from keras_unet import data

    synthetic.write_dataset(tmp_path, n=2, shape=(64, 64))
    pairs = data.find_pairs(tmp_path)
    assert len(pairs) == 2
    assert data.read_image(pairs[0][1]).dtype == np.uint16


def test_every_image_keeps_its_contrast():
    """The illumination varies by about 20 %, on every seed: no image black or saturated (a smooth
    field normalised without taking its mean off once blacked out or saturated whole images)."""
    for seed in range(12):
        image, labels = synthetic.sample((256, 256), seed=seed)
        background, cells = np.median(image[labels == 0]), np.median(image[labels > 0])
        assert 15 < background < 50 and 60 < cells < 140, (seed, background, cells)
        assert (image == 255).mean() < 0.02 and (image == 0).mean() < 0.05, seed


def _brute_force_cells(shape, radius, seed):
    """cell_instances as first written: every cell's distance over every pixel (the same draws
    from the same generator), then its fragment rule."""
    rng = np.random.default_rng(seed)
    height, width = shape
    n_cells = max(2, int(0.75 * height * width / (np.pi * radius**2)))
    centres = rng.uniform([0, 0], [height, width], size=(n_cells, 2))
    radii = radius * rng.uniform(0.7, 1.3, size=n_cells)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wobble = 0.18 * synthetic._smooth_noise(rng, shape, sigma=radius / 3)
    best, labels = np.full(shape, np.inf, np.float32), np.zeros(shape, np.int32)
    for i, ((cy, cx), r) in enumerate(zip(centres, radii), start=1):
        rel = np.hypot(yy - cy, xx - cx) / r + wobble
        closer = rel < best
        best[closer], labels[closer] = rel[closer], i
    labels[best > 1.0] = 0
    return synthetic.largest_pieces(labels, radius)


@pytest.mark.parametrize("shape, radius, seed", [((256, 256), 18.0, 0), ((203, 317), 9.0, 3), ((90, 70), 18.0, 2),
                                                 ((300, 260), 30.0, 5), ((64, 64), 40.0, 1)])
def test_cells_drawn_box_by_box_equal_every_cell_over_every_pixel(shape, radius, seed):
    got = synthetic.cell_instances(shape, radius=radius, seed=seed)
    np.testing.assert_array_equal(got, _brute_force_cells(shape, radius, seed))
    assert got.max() >= 2
