import numpy as np

from keras_unet import augment, data, pipeline, synthetic


def small_dataset():
    return synthetic.as_dataset(3, (80, 96), seed=4)


def test_training_batches_have_network_shapes():
    ds = pipeline.training_dataset(small_dataset(), 252, batch_size=2)
    images, y_true = next(iter(ds))
    assert images.shape == (2, 252, 252, 1) and y_true.shape == (2, 68, 68, 2)
    assert set(np.unique(y_true[..., 0])) <= {0.0, 1.0}
    assert float(y_true[..., 1].numpy().min()) > 0


def test_same_seed_same_stream_other_seed_differs():
    dataset = small_dataset()
    first = [b[0].numpy() for b in pipeline.training_dataset(dataset, 204, seed=7).take(3)]
    again = [b[0].numpy() for b in pipeline.training_dataset(dataset, 204, seed=7).take(3)]
    other = [b[0].numpy() for b in pipeline.training_dataset(dataset, 204, seed=8).take(3)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_integer_images_travel_as_they_are_and_give_the_float32_batches():
    dataset = small_dataset()
    assert {im.dtype for im in dataset.images} == {np.dtype(np.uint8)}
    assert pipeline.stream_dtype(dataset.images) == np.uint8
    as_float = data.Dataset([im.astype(np.float32) for im in dataset.images], dataset.targets, dataset.weights,
                            dataset.sources, dataset.mask_kinds)
    assert pipeline.stream_dtype(as_float.images) == np.float32
    mixed = dataset.images[:1] + [dataset.images[1].astype(np.uint16)]
    assert pipeline.stream_dtype(mixed) == np.float32  # no one dtype: float32 as before
    sixteen = [(im.astype(np.uint16) * 257) for im in dataset.images]  # 16-bit values, 255 -> 65535
    assert pipeline.stream_dtype(sixteen) == np.uint16
    element = next(iter(pipeline.samples(dataset, seed=3)))
    assert element[0].dtype == "uint8"
    for on_device in (False, True):  # the sampler reads the same values from either
        ours = [b for b in pipeline.training_dataset(dataset, 204, batch_size=2, seed=3, on_device=on_device).take(3)]
        theirs = [b for b in pipeline.training_dataset(as_float, 204, batch_size=2, seed=3,
                                                       on_device=on_device).take(3)]
        for (image, y), (image_f, y_f) in zip(ours, theirs):
            assert image.dtype == image_f.dtype == "float32"
            np.testing.assert_array_equal(image.numpy(), image_f.numpy())
            np.testing.assert_array_equal(y.numpy(), y_f.numpy())


def test_unaugmented_border_tile_is_numpy_reflect_padding():
    dataset = small_dataset()
    (image,) = [dataset.images[0].astype(np.float32)]
    for batch in pipeline.training_dataset(dataset.subset([0]), 204, params=augment.AugmentParams.none()).take(4):
        tile = batch[0].numpy()[0]
        # the output tile (20 px) lies inside the image; the 92 px margins come from mirroring
        padded = np.pad(image, ((92, 92), (92, 92), (0, 0)), mode="reflect")
        matches = [(r, c) for r in range(0, 80 - 20 + 1) for c in range(0, 96 - 20 + 1)
                   if np.array_equal(padded[r : r + 204, c : c + 204], tile)]
        assert len(matches) == 1


def test_validation_tiles_cover_each_image():
    dataset = small_dataset()
    images, y_true = pipeline.validation_tiles(dataset, 236)  # output 52: 2 x 2 tiles per 80x96 image
    assert images.shape == (12, 236, 236, 1) and y_true.shape == (12, 52, 52, 2)
    np.testing.assert_array_equal(y_true[0, ..., 0], dataset.targets[0][:52, :52])
    np.testing.assert_array_equal(y_true[3, ..., 0], dataset.targets[0][28:80, 44:96])
    padded = np.pad(dataset.images[0].astype(np.float32), ((92, 92), (92, 92), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(images[0], padded[:236, :236])


def test_validation_costs_about_what_prediction_costs_whatever_the_training_tile():
    from keras_unet import synthetic, weights

    image, instances = synthetic.sample((512, 512), seed=0)
    target, w = weights.weight_map(instances)
    dataset = data.Dataset([image[..., None]], [target], [w], ["synthetic"], ["instance"])
    tile = pipeline.validation_tile(dataset, 188, base_filters=8)
    assert tile >= 700  # one tile covers the 512 px image (a 188 px tile would need 16,384)
    images, y_true = pipeline.validation_tiles(dataset, tile)
    assert len(images) == 1 and y_true.shape[1] >= 512
    assert pipeline.validation_tile(dataset, 572, base_filters=64, memory_mb=64) == 572  # never below the training tile


def test_device_side_augmentation_equals_the_host_pipeline():
    """The same seed gives the same batches whether the host augments each sample from the whole
    image or the device augments batches of windows: images, labels and weights, every augmentation
    on (rotation, flips, elastic, shift, zoom, gray values), odd image sizes and a tile larger than an
    image (mirrored context)."""
    from keras_unet import augment, data, synthetic

    dataset = synthetic.as_dataset(3, (150, 131), 4, data.WeightParams())
    params = augment.AugmentParams(shift=7.0, zoom=1.5)
    for tile in (188, 252):
        host = pipeline.training_dataset(dataset, tile, 2, params=params, seed=11)
        device = pipeline.training_dataset(dataset, tile, 2, params=params, seed=11, on_device=True)
        for (x_host, y_host), (x_dev, y_dev) in zip(host.take(3), device.take(3)):
            np.testing.assert_array_equal(x_dev.numpy(), x_host.numpy())
            np.testing.assert_array_equal(y_dev.numpy(), y_host.numpy())
    other = next(iter(pipeline.training_dataset(dataset, 188, 2, params=params, seed=12, on_device=True)))
    assert not np.array_equal(other[0].numpy(), x_host.numpy())  # the seed matters


def test_window_holds_every_source_pixel_of_a_tile():
    """The window radius bounds the farthest source coordinate of a tile over many seeds, with the
    strongest settings (rotation, elastic draws cut at 4 sigma, shift, zoom)."""
    import tensorflow as tf

    from keras_unet import augment

    params = augment.AugmentParams(elastic_sigma=10.0, shift=5.0, zoom=1.5)
    radius = augment.window_radius(188, params)
    farthest = 0.0
    for i in range(200):
        ys, xs = augment.tile_coordinates(tf.constant([i, 3], tf.int64), 188, tf.constant([0.0, 0.0]), params)
        farthest = max(farthest, float(tf.reduce_max(tf.abs(ys))), float(tf.reduce_max(tf.abs(xs))))
    assert farthest + 2 <= radius
    assert farthest > 0.7 * (radius - 2)  # and the bound is not absurdly loose
