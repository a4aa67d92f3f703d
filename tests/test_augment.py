import dataclasses

import numpy as np
import tensorflow as tf

from keras_unet import augment

SEED = tf.constant([3, 4], tf.int64)


def test_cubic_weights_interpolate_and_sum_to_one():
    matrix = augment.cubic_weights(9, 3).numpy()
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix[[0, 4, 8]], np.eye(3), atol=1e-6)  # nodes hit exactly


def test_elastic_field_statistics():
    fields = np.stack([augment.elastic_field(tf.constant([i, 0]), 64, 64, sigma=10.0).numpy() for i in range(200)])
    corners = fields[:, 0, 0]  # a grid node: exactly N(0, 10)
    assert 8.5 < corners.std() < 11.5
    # smooth: neighbouring pixels differ by a small fraction of the displacement
    assert np.abs(np.diff(fields, axis=1)).max() < 3.0


def test_zero_displacement_is_identity(rng):
    image = rng.uniform(0, 255, (50, 60, 2)).astype(np.float32)
    ys, xs = augment.tile_coordinates(SEED, 40, tf.constant([24.5, 29.5]), augment.AugmentParams.none())
    out = augment.sample_bilinear(image, ys, xs).numpy()
    np.testing.assert_allclose(out, image[5:45, 10:50], atol=1e-4)


def test_mirror_padding_equals_numpy_reflect(rng):
    image = rng.uniform(0, 255, (30, 40, 1)).astype(np.float32)
    # a 70x70 tile centred on the top-left pixel reaches 35 px beyond the border
    ys, xs = augment.tile_coordinates(SEED, 71, tf.constant([0.0, 0.0]), augment.AugmentParams.none())
    out = augment.sample_bilinear(image, ys, xs).numpy()
    padded = np.pad(image, ((35, 35), (35, 35), (0, 0)), mode="reflect")
    np.testing.assert_allclose(out, padded[:71, :71], atol=1e-4)
    assert not np.allclose(out, np.pad(image, ((35, 35), (35, 35), (0, 0)), mode="symmetric")[:71, :71])


def test_bilinear_samples_equal_scipys_at_fractional_places_beyond_the_border(rng):
    from scipy import ndimage

    image = rng.uniform(0, 255, (23, 31, 3)).astype(np.float32)
    ys, xs = rng.uniform(-20, 42, (2, 37, 41)).astype(np.float32)
    out = augment.sample_bilinear(image, tf.constant(ys), tf.constant(xs)).numpy()
    for c in range(3):  # scipy's "mirror" is numpy's "reflect" (the edge pixel not repeated)
        reference = ndimage.map_coordinates(image[..., c].astype(np.float64), [ys, xs], order=1, mode="mirror")
        np.testing.assert_allclose(out[..., c], reference, atol=2e-3)


def test_gamma_is_a_power_and_noise_keeps_a_gray_image_gray(rng):
    x = rng.uniform(0.0, 1.2, (40, 50, 1)).astype(np.float32)
    x[0, :5, 0] = [0.0, -0.3, 0.5, 1.0, 0.25]
    only_gamma = dataclasses.replace(augment.AugmentParams.none(), gamma=0.3)
    out = augment.gray_values(x, SEED, only_gamma, (0.0, 1.0)).numpy()
    g = np.log(out[0, 2, 0]) / np.log(0.5)  # the drawn exponent, read off one pixel
    assert g > 0 and abs(g - 1) > 1e-3
    expected = np.maximum(x, 0.0) ** g
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)  # 0 and negatives -> 0, 1 stays 1
    gray = np.repeat(rng.uniform(0.2, 0.8, (60, 70, 1)), 3, axis=-1).astype(np.float32)
    only_noise = dataclasses.replace(augment.AugmentParams.none(), noise=0.05)
    noisy = augment.gray_values(gray, SEED, only_noise, (0.0, 1.0)).numpy()
    np.testing.assert_array_equal(noisy[..., 0], noisy[..., 2])
    assert 0.045 < (noisy - gray)[..., 0].std() < 0.055


def test_warped_labels_keep_their_values(rng):
    labels = rng.choice([0, 3, 7], size=(64, 64)).astype(np.int32)
    ys, xs = augment.tile_coordinates(SEED, 64, tf.constant([31.5, 31.5]), augment.AugmentParams())
    warped = augment.sample_nearest(labels, ys, xs).numpy()
    assert set(np.unique(warped)) <= {0, 3, 7}
    assert not np.array_equal(warped, labels)


def test_image_and_label_move_together():
    checker = ((np.indices((96, 96)) // 12).sum(0) % 2).astype(np.int32)
    image = (checker * 200 + 20).astype(np.float32)[..., None]
    weights = checker.astype(np.float32) + 1.0
    tile, y_true = augment.augmented_tile(image, checker, weights, SEED, 92, 40,
                                          augment.AugmentParams(noise=0, brightness=0, contrast=0, gamma=0, scale_probability=0), (0.0, 255.0))
    tile, y_true = tile.numpy(), y_true.numpy()
    centre = tile[26:66, 26:66, 0]
    labels = y_true[..., 0]
    # away from square edges the image and the label agree
    bright, dark = centre > 219.9, centre < 20.1  # all 4 bilinear neighbours agree
    assert bright.sum() > 300 and dark.sum() > 300
    assert np.all(labels[bright] == 1) and np.all(labels[dark] == 0)
    np.testing.assert_allclose(y_true[..., 1][bright], 2.0, atol=1e-4)


def test_same_seed_same_sample_other_seed_differs(rng):
    image = rng.uniform(0, 255, (80, 80, 1)).astype(np.float32)
    target = (image[..., 0] > 128).astype(np.uint8)
    weights = np.ones((80, 80), np.float32)
    a = augment.augmented_tile(image, target, weights, SEED, 76, 40)
    b = augment.augmented_tile(image, target, weights, SEED, 76, 40)
    c = augment.augmented_tile(image, target, weights, tf.constant([9, 9], tf.int64), 76, 40)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_gray_values_change_intensities_within_reason(rng):
    image = rng.uniform(50, 200, (32, 32, 1)).astype(np.float32)
    # contrast, offset, gamma and noise stay moderate; the scale is tested on its own below
    out = augment.gray_values(image, SEED, augment.AugmentParams(scale_probability=0.0), (0.0, 255.0)).numpy()
    assert not np.allclose(out, image)
    assert abs(out.mean() - image.mean()) < 80
    same = augment.gray_values(image, SEED, augment.AugmentParams.none(), (0.0, 255.0)).numpy()
    np.testing.assert_allclose(same, image, atol=1e-3)


def test_augmentation_runs_inside_tf_function():
    fn = tf.function(lambda img, seed: augment.augmented_tile(img, tf.zeros([50, 50], tf.uint8), tf.ones([50, 50]), seed, 44, 4))
    tile, y_true = fn(tf.zeros([50, 50, 1]), SEED)
    assert tile.shape == (44, 44, 1) and y_true.shape == (4, 4, 2)


def test_intensity_scale_spans_its_range_about_the_low_end():
    """The scale augmentation multiplies about the range's low end (the background after
    percentile normalisation), log-uniformly within its range, for its share of the samples."""
    image = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8, 1)
    params = augment.AugmentParams(noise=0, brightness=0, contrast=0, gamma=0, scale_range=(0.1, 2.0),
                                   scale_probability=0.5)
    factors = []
    for i in range(400):
        out = augment.gray_values(image, tf.constant([i, 1], tf.int64), params, (0.0, 1.0)).numpy()
        factor = out[-1, -1, 0] / image[-1, -1, 0]
        np.testing.assert_allclose(out, image * factor, rtol=1e-5, atol=1e-6)  # about 0: background stays
        factors.append(factor)
    factors = np.array(factors)
    scaled = factors[np.abs(factors - 1.0) > 1e-6]
    assert 0.4 < len(scaled) / len(factors) < 0.6
    logs = np.log(scaled)
    assert logs.min() >= np.log(0.1) - 1e-5 and logs.max() <= np.log(2.0) + 1e-5
    assert logs.min() < np.log(0.15) and logs.max() > np.log(1.7)
    assert abs(logs.mean() - np.log(0.1 * 2.0) / 2) < 0.25  # log-uniform: mean at the middle of the logs


def _colour_image():
    """A real H&E-like DSB2018 image (channels differ), its first 96x128 px."""
    from conftest import shared_data
    from keras_unet import data

    for path in sorted(shared_data("dsb2018-train", "images").glob("*.png")):
        image = data.read_image(path)[..., :3]
        if not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])):
            return image[:96, :128]
    raise AssertionError("no colour image in dsb2018-train")


def test_stain_adjustment_is_scikit_images_colour_deconvolution():
    from skimage.color import hed2rgb, rgb2hed

    rgb = _colour_image().astype(np.float64) / 255.0
    floor = -np.log(augment.OD_FLOOR)  # scikit-image's stains are optical densities / -ln(1e-6)
    for alpha, beta in (((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), ((0.8, 1.15, 1.0), (0.1, -0.05, 0.02))):
        expected = hed2rgb(rgb2hed(rgb) * np.array(alpha) + np.array(beta) / floor)
        got = augment.stain_adjusted(tf.constant(rgb, tf.float32), tf.constant(alpha), tf.constant(beta)).numpy()
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert np.abs(got - rgb).mean() > 0.01  # the second pair really changed the colours


def test_stain_jitter_colours_colour_tiles_only_and_leaves_the_other_draws():
    colour = _colour_image().astype(np.float32)
    gray = np.repeat(colour.mean(-1, keepdims=True), 3, axis=-1)
    target, weights = np.zeros((96, 128), np.int32), np.ones((96, 128), np.float32)
    plain, stained = augment.AugmentParams(), augment.AugmentParams(stain=0.1)

    def tile(image, params, seed=SEED):
        return augment.augmented_tile(image, target, weights, seed, 60, 20, params)[0].numpy()

    # a gray image stays gray and gets the very sample it got without stain jitter
    np.testing.assert_array_equal(tile(gray, stained), tile(gray, plain))
    before, after = tile(colour, plain), tile(colour, stained)
    assert np.abs(after - before).mean() > 1.0  # gray levels of 0-255
    np.testing.assert_array_equal(after, tile(colour, stained))  # reproducible
    assert np.abs(tile(colour, stained, tf.constant([5, 6], tf.int64)) - after).mean() > 1.0


def test_fit_takes_stain_jitter_and_refuses_a_wrong_one(tmp_path):
    from click.testing import CliRunner

    from keras_unet.cli.main import main
    from keras_unet.settings import TrainConfig

    assert TrainConfig.from_dict({"stain_jitter": 0.05}).stain_jitter == 0.05
    assert TrainConfig.from_dict({}).stain_jitter == 0.0  # runs of before: off
    result = CliRunner().invoke(main, ["fit", "--stain-jitter", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--stain-jitter must be between 0 and 1" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_zoom_scales_tiles_isotropically_within_its_range_and_leaves_the_other_draws():
    """On a plane I = 0.2 y + 0.3 x (bilinear sampling is exact there, no border within reach, inside
    0-255) a zoomed tile is a plane of slopes 0.2 f and 0.3 f: one factor f per tile, log-uniform in
    [1/zoom, zoom]."""
    ys, xs = np.mgrid[0:400, 0:400].astype(np.float32)
    plane = tf.constant((0.2 * ys + 0.3 * xs)[..., None])
    zoomed = dataclasses.replace(augment.AugmentParams.none(), zoom=1.5)
    factors = []
    for i in range(40):
        rows, cols = augment.tile_coordinates(tf.constant([i, 9], tf.int64), 60, tf.constant([200.0, 200.0]), zoomed)
        tile = augment.sample_bilinear(plane, rows, cols).numpy()
        slope_y, slope_x = np.diff(tile[..., 0], axis=0).mean(), np.diff(tile[..., 0], axis=1).mean()
        np.testing.assert_allclose(slope_y / 0.2, slope_x / 0.3, rtol=1e-3)  # isotropic
        np.testing.assert_allclose(np.diff(tile[..., 0], axis=1), slope_x, atol=1e-3)  # a plane: a pure zoom
        factors.append(slope_x / 0.3)
    logs = np.log(factors)
    assert np.all(np.abs(logs) <= np.log(1.5) + 1e-4)
    assert logs.min() < -0.6 * np.log(1.5) and logs.max() > 0.6 * np.log(1.5)  # both ways, most of the range
    # zoom 1 is off: the samples of every seed are those without the setting
    plain = augment.AugmentParams()
    for params in (plain, dataclasses.replace(plain, zoom=1.0)):
        ys_, xs_ = augment.tile_coordinates(SEED, 32, tf.constant([50.0, 50.0]), params)
        np.testing.assert_array_equal(ys_.numpy(), augment.tile_coordinates(SEED, 32, tf.constant([50.0, 50.0]), plain)[0].numpy())
    # zoom draws from its own stream: the rotation and deformation of a seed stay those without it
    base = augment.tile_coordinates(SEED, 32, tf.constant([0.0, 0.0]), plain)
    with_zoom = augment.tile_coordinates(SEED, 32, tf.constant([0.0, 0.0]), dataclasses.replace(plain, zoom=1.5))
    assert not np.allclose(with_zoom[0].numpy(), base[0].numpy())


def test_fit_takes_zoom_and_refuses_a_wrong_one(tmp_path):
    from click.testing import CliRunner

    from keras_unet.cli.main import main
    from keras_unet.settings import TrainConfig

    assert TrainConfig.from_dict({}).zoom == 1.0  # runs of before: off
    result = CliRunner().invoke(main, ["fit", "--zoom", "0.5", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--zoom must be between 1 (off) and 4" in result.output, result.output
    assert not (tmp_path / "run").exists()
