import pytest

from keras_unet import sizes


@pytest.mark.parametrize("size", [188, 204, 252, 572, 1004])
def test_output_is_input_minus_184(size):
    assert sizes.output_size(size) == size - 184


def test_valid_sizes_are_16k_plus_60():
    valid = sizes.valid_input_sizes(700)
    assert valid[0] == 188
    assert all((s - 60) % 16 == 0 for s in valid)
    assert [s for s in range(100, 701) if sizes.is_valid(s)] == valid


def test_invalid_size_names_nearest_valid_sizes():
    with pytest.raises(sizes.InvalidSizeError, match=r"500 px is not valid.*use 492 or 508"):
        sizes.check_input_size(500)
    with pytest.raises(sizes.InvalidSizeError, match=r"use 188 \(the smallest\)"):
        sizes.check_input_size(100)


def test_input_for_output():
    assert sizes.input_size_for_output(388) == 572
    assert sizes.input_size_for_output(389) == 588
    assert sizes.input_size_for_output(1) == 188


def test_paper_skip_crops():
    assert sizes.skip_crops() == [88, 40, 16, 4]
    assert sizes.skip_crops(padding="same") == [0, 0, 0, 0]


def test_other_depths_and_same_padding():
    for size in sizes.valid_input_sizes(300, depth=3):
        assert sizes.output_size(size, depth=3) == size - 40
    assert sizes.output_size(256, padding="same") == 256
    assert not sizes.is_valid(250, padding="same")
    assert sizes.tile_plan(572).margin == 92
