
import numpy as np
import pytest
import tifffile

from keras_unet import data, synthetic

from conftest import shared_data



def write_pair(root, name, image, mask, image_dir="images", mask_dir="masks"):
    data.write_image(root / image_dir / f"{name}.png", image)
    data.write_image(root / mask_dir / f"{name}.png", mask)


def test_reads_16bit_multipage_tiff(tmp_path):
    stack = (np.arange(3 * 20 * 30).reshape(3, 20, 30) * 50).astype(np.uint16)
    path = tmp_path / "volume.tif"
    with tifffile.TiffWriter(path) as tif:  # page by page, as ISBI's stacks are stored
        for page in stack:
            tif.write(page, contiguous=False)
    pages = data.read_pages(path)
    assert len(pages) == 3
    assert pages[2].dtype == np.uint16
    np.testing.assert_array_equal(pages[2], stack[2])


def test_0_255_png_mask_is_mapped_and_reported(tmp_path):
    image, labels = synthetic.sample((64, 64), seed=1)
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)
    write_pair(tmp_path, "a", image, mask)
    dataset = data.load_dataset(tmp_path)
    assert data.mask_kind(mask) == "binary"
    assert set(np.unique(dataset.targets[0])) == {0, 1}
    assert (dataset.targets[0] == 1).sum() <= (mask == 255).sum()
    assert any("0/255" in note for note in dataset.notes)
    assert dataset.images[0].shape == (64, 64, 1)


def test_pairs_by_stem_and_mask_suffix(tmp_path):
    image = np.zeros((32, 32), np.uint8)
    data.write_image(tmp_path / "flat" / "cell1.png", image)
    data.write_image(tmp_path / "flat" / "cell1_mask.png", image)
    data.write_image(tmp_path / "flat" / "cell2.tif", image)
    data.write_image(tmp_path / "flat" / "cell2_mask.tif", image)
    pairs = data.find_pairs(tmp_path / "flat")
    assert [(a.name, b.name) for a, b in pairs] == [("cell1.png", "cell1_mask.png"), ("cell2.tif", "cell2_mask.tif")]


def test_instance_and_class_masks(tmp_path):
    _, labels = synthetic.sample((64, 64), seed=2)
    target, w, kind = data.target_and_weights(labels.astype(np.uint16))
    assert kind == "instance" and target.max() == 1 and w.max() > 5
    classes = np.random.default_rng(0).integers(0, 3, (16, 16)).astype(np.uint8)
    target, w, kind = data.target_and_weights(classes, data.WeightParams(n_classes=3))
    assert kind == "classes" and np.array_equal(target, classes)


def test_weight_maps_are_cached(tmp_path):
    _, labels = synthetic.sample((64, 64), seed=3)
    write_pair(tmp_path, "a", labels.astype(np.uint8) * 0, labels.astype(np.uint16).astype(np.uint8))
    cache = tmp_path / "cache"
    first = data.load_dataset(tmp_path, cache_dir=cache)
    entries = list(cache.glob("*.npz"))
    assert len(entries) == 1
    with np.load(entries[0]) as npz:  # poison the cache entry: a second load must use it
        poisoned = dict(targets=npz["targets"], weights=npz["weights"] * 0 + 42, kind=npz["kind"])
    np.savez(entries[0], **poisoned)
    second = data.load_dataset(tmp_path, cache_dir=cache)
    assert np.all(second.weights[0] == 42)
    third = data.load_dataset(tmp_path, data.WeightParams(w0=5.0), cache_dir=cache)  # other params, other key
    assert not np.all(third.weights[0] == 42)
    assert first.weights[0].max() > 1


def test_no_pairs_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    data.write_image(tmp_path / "images" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(data.DataError, match=r"no image/mask pairs found"):
        data.find_pairs(tmp_path)


def test_shape_mismatch_error_names_files(tmp_path):
    write_pair(tmp_path, "a", np.zeros((32, 40), np.uint8), np.zeros((32, 32), np.uint8))
    with pytest.raises(data.DataError, match=r"a\.png: image is 32x40 but mask a\.png is 32x32"):
        data.load_dataset(tmp_path)


def test_corrupt_file_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    data.write_image(tmp_path / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(data.DataError, match=r"a\.png: cannot read image"):
        data.load_dataset(tmp_path)


def test_unsupported_dtype_error(tmp_path):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.complex64))
    with pytest.raises(data.DataError, match="unsupported dtype complex64"):
        data.read_pages(path)


def test_image_smaller_than_tile_error(tmp_path):
    write_pair(tmp_path, "small", np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8))
    dataset = data.load_dataset(tmp_path)
    with pytest.raises(data.DataError, match=r"small\.png: image 40x40 is smaller than the 68 px output of a 252 px tile; use --tile 220"):
        data.check_tile_fits(dataset, 252)


def test_input_range_for_16_bit():
    dataset = data.Dataset(images=[np.array([[0, 4000]], np.uint16)[..., None]])
    assert dataset.input_range() == (0.0, 4095.0)
    dataset = data.Dataset(images=[np.array([[0, 200]], np.uint8)[..., None]])
    assert dataset.input_range() == (0.0, 255.0)


def test_split_by_sample():
    dataset = synthetic.as_dataset(5, (48, 48))
    train, val = dataset.split(0.2)
    assert len(train) == 4 and len(val) == 1
    assert set(train.sources).isdisjoint(val.sources)


def test_split_keeps_the_pages_of_a_file_together():
    dataset = synthetic.as_dataset(6, (32, 32))
    dataset.sources = ["a.tif[0]", "a.tif[1]", "a.tif[2]", "b.tif[0]", "b.tif[1]", "c.png"]
    train, val = dataset.split(0.34, seed=1)
    files = lambda d: {s.split("[")[0] for s in d.sources}  # noqa: E731
    assert files(train).isdisjoint(files(val)) and len(files(val)) == 1
    assert len(train) + len(val) == 6


def test_isbi2012_loads():
    pairs = data.find_pairs(shared_data("isbi2012", "train"))
    assert len(pairs) == 30
    dataset = data.load_pairs(pairs[:3])
    assert dataset.images[0].shape == (512, 512, 1)
    fraction = np.mean([t.mean() for t in dataset.targets])
    assert 0.6 < fraction < 0.85  # 255 = cell interior becomes class 1 (~78% of pixels)
    assert dataset.mask_kinds[0] == "binary"


def test_one_mask_kind_per_dataset_with_counts(tmp_path):
    """A folder of instance masks where one mask holds a single object: one note, "instance", with
    the single-object mask counted (it printed "binary" and "instance" before, contradicting
    itself); inspect-data and fit print the same note."""
    from click.testing import CliRunner

    from keras_unet.cli.main import main

    for seed in (1, 2):
        image, labels = synthetic.sample((96, 96), seed=seed)
        write_pair(tmp_path, f"many{seed}", image, labels.astype(np.uint16))
    image, labels = synthetic.sample((96, 96), seed=3)
    one = (labels == labels.max()).astype(np.uint16) * 7  # one object, labelled 7
    write_pair(tmp_path, "single", image, one)
    dataset = data.load_dataset(tmp_path)
    kinds = [note for note in dataset.notes if note.startswith("masks:")]
    assert kinds == ["masks: instance (1 of 3 hold one object, or two values, and read as binary: the same target "
                     "either way)"]
    result = CliRunner().invoke(main, ["inspect-data", str(tmp_path), "--out", str(tmp_path / "aug.png"),
                                       "--tile", "92"])
    assert [line for line in result.output.splitlines() if "masks:" in line] == kinds
    assert data.mask_kinds_note(["binary", "binary"]).startswith("masks: binary (larger value")
    assert data.mask_kinds_note(["classes", "binary", "classes"]) == "masks: binary (1 of 3), classes (2 of 3)"
