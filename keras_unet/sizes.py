"""Size arithmetic of the U-Net: which tile sizes are valid and what comes out.

With ``padding="valid"`` every 3x3 convolution trims 2 px, every 2x2 max-pool halves a size that
must be even, and every 2x2 up-convolution doubles it. For the paper's network (depth 5) the
valid input sizes are ``16k + 60`` (k >= 8, i.e. >= 188 px) and ``output = input - 184``.
With ``padding="same"`` the input must be divisible by ``2**(depth-1)`` and the output equals it.

All sizes are in pixels along one axis; tiles are square or rectangular, each axis independently.
This module owns the tile geometry: valid sizes, the :class:`TilePlan` of training and of
overlap-tile prediction (:func:`prediction_plan`, which adds the pooling alignment), the memory
estimate and default tile, and the mirror rule of the in-graph tiling (:func:`mirror_index`).
"""
from __future__ import annotations

from dataclasses import dataclass

from keras_unet.errors import InvalidSizeError, SettingsError


def _check_args(depth: int, padding: str) -> None:
    if depth < 1:
        raise SettingsError(f"depth must be >= 1, got {depth}")
    if padding not in ("valid", "same"):
        raise SettingsError(f"padding must be 'valid' or 'same', got {padding!r}")


def _trace(size: int, depth: int, padding: str) -> tuple[int | None, list[int]]:
    """Follow one axis through the network.

    Returns ``(output_size or None if invalid, skip sizes per level from top to bottom-1)``.
    """
    trim = 4 if padding == "valid" else 0
    skips = []
    for _ in range(depth - 1):
        size -= trim
        if size < 2 or size % 2:
            return None, skips
        skips.append(size)
        size //= 2
    size -= trim  # bottom level
    if size < 1:
        return None, skips
    for _ in range(depth - 1):
        size = 2 * size - trim
        if size < 1:
            return None, skips
    return size, skips


def output_size(input_size: int, depth: int = 5, padding: str = "valid") -> int:
    """Output size (px) for an input size (px); raises :class:`InvalidSizeError` if invalid."""
    _check_args(depth, padding)
    out, _ = _trace(int(input_size), depth, padding)
    if out is None:
        raise InvalidSizeError(_invalid_message(int(input_size), depth, padding))
    return out


def is_valid(input_size: int, depth: int = 5, padding: str = "valid") -> bool:
    """True if ``input_size`` passes through the network without a shape mismatch."""
    _check_args(depth, padding)
    return _trace(int(input_size), depth, padding)[0] is not None


def size_step(depth: int = 5) -> int:
    """Spacing between consecutive valid input sizes: ``2**(depth-1)`` (16 for the paper)."""
    return 2 ** (depth - 1)


def smallest_valid_input(depth: int = 5, padding: str = "valid") -> int:
    """The smallest valid input size (188 for the paper's network, ``2**(depth-1)`` for same)."""
    _check_args(depth, padding)
    size = 1
    while not is_valid(size, depth, padding):
        size += 1
    return size


def valid_input_sizes(max_size: int, depth: int = 5, padding: str = "valid") -> list[int]:
    """All valid input sizes up to and including ``max_size``."""
    start = smallest_valid_input(depth, padding)
    return list(range(start, int(max_size) + 1, size_step(depth)))


def input_size_for_output(min_output: int, depth: int = 5, padding: str = "valid") -> int:
    """The smallest valid input whose output is at least ``min_output`` px."""
    size = smallest_valid_input(depth, padding)
    while output_size(size, depth, padding) < min_output:
        size += size_step(depth)
    return size


def nearest_valid_sizes(input_size: int, depth: int = 5, padding: str = "valid") -> tuple[int | None, int]:
    """The valid sizes just below (None if there is none) and at-or-above ``input_size``."""
    start = smallest_valid_input(depth, padding)
    if input_size <= start:
        return None, start
    step = size_step(depth)
    below = start + (input_size - start) // step * step
    if below == input_size:
        return below, below
    return below, below + step


def _invalid_message(input_size: int, depth: int, padding: str) -> str:
    below, above = nearest_valid_sizes(input_size, depth, padding)
    rule = (
        f"valid sizes are {smallest_valid_input(depth, padding)} + {size_step(depth)}k"
        if padding == "valid"
        else f"valid sizes are multiples of {size_step(depth)}"
    )
    nearest = f"{below} or {above}" if below is not None else f"{above} (the smallest)"
    return (
        f"input size {input_size} px is not valid for a depth-{depth} U-Net with {padding!r} padding: "
        f"{rule}; use {nearest}"
    )


def check_input_size(input_size: int, depth: int = 5, padding: str = "valid") -> int:
    """Return ``input_size`` if valid, else raise :class:`InvalidSizeError` naming the nearest ones."""
    output_size(input_size, depth, padding)
    return int(input_size)


def skip_crops(depth: int = 5, padding: str = "valid") -> list[int]:
    """Pixels cropped from each side of each skip map, from the top level down.

    The paper's network crops 88, 40, 16 and 4 px; the crops do not depend on the input size.
    """
    _check_args(depth, padding)
    if padding == "same":
        return [0] * (depth - 1)
    size = smallest_valid_input(depth, padding)
    _, skips = _trace(size, depth, padding)
    # Expanding path, bottom up: the bottom map is up-sampled then trimmed at each level.
    bottom = skips[-1] // 2 - 4 if skips else size - 4
    crops = []
    up = bottom
    for skip in reversed(skips):
        up = 2 * up
        crops.append((skip - up) // 2)
        up -= 4
    return list(reversed(crops))


@dataclass(frozen=True)
class TilePlan:
    """The geometry of one tile, the one owner of it (px): training tiles, validation tiles,
    overlap-tile prediction and the SavedModel's in-graph tiling all read it.

    ``input_size`` in, ``output_size`` out of the network; prediction keeps ``kept`` px of each
    output from ``keep_from`` on (all of it for valid padding; the centre for same padding, whose
    borders lack context) and steps tile origins by ``step`` = ``kept`` rounded down to the pooling
    alignment, so every max-pool sees the pixel pairs of one whole-image pass. ``margin``: input
    px on each side of the kept region.
    """

    input_size: int
    output_size: int
    margin: int
    kept: int
    keep_from: int
    step: int

    @property
    def trim(self) -> int:
        """Px the network itself trims on each side (valid padding; 0 for same): where a whole
        output starts in its input, unlike ``margin``, the prediction context."""
        return (self.input_size - self.output_size) // 2

    def origins(self, length: int, flush_end: bool = False) -> list[int]:
        """Start positions (px) of the kept outputs covering ``length`` px.

        Default (prediction): multiples of ``step``, the last one reaching past the end (the image
        is mirror-padded). ``flush_end`` (validation): whole network outputs side by side, the last
        one ending at ``length``, so no pixel beyond the image is scored.
        """
        if flush_end:
            if length <= self.output_size:
                return [0]
            return list(range(0, length - self.output_size, self.output_size)) + [length - self.output_size]
        if length <= self.kept:
            return [0]
        origins = list(range(0, length - self.kept, self.step))
        return origins + [origins[-1] + self.step]


def tile_plan(tile: int, depth: int = 5, padding: str = "valid") -> TilePlan:
    """The :class:`TilePlan` of a valid input tile size (:class:`InvalidSizeError` otherwise)."""
    out = output_size(tile, depth, padding)
    align = size_step(depth)
    if padding == "valid":
        margin, kept, keep_from = (tile - out) // 2, out, 0
    else:
        margin = align * max(1, tile // (4 * align))
        kept, keep_from = max(tile - 2 * margin, 0), margin
    return TilePlan(int(tile), out, margin, kept, keep_from, kept - kept % align)


def prediction_plan(tile: int, depth: int = 5, padding: str = "valid") -> TilePlan:
    """The :class:`TilePlan` of a tile for overlap-tile prediction, which needs
    kept outputs of at least the pooling alignment (``2**(depth-1)`` px) to step by."""
    plan = tile_plan(tile, depth, padding)
    if plan.step < size_step(depth):
        smallest = input_size_for_output(size_step(depth), depth, padding)
        raise InvalidSizeError(f"tile {tile} px gives {plan.kept} px outputs, less than the "
                                     f"{size_step(depth)} px pooling alignment of overlap-tile prediction; "
                                     f"use a tile of at least {smallest} px")
    return plan


def estimate_tile_bytes(tile: int, base_filters: int, batch_size: int = 1) -> int:
    """Rough peak memory (bytes) of one forward pass: about 32 float32 maps of the first level's
    size (measured: 3.7 GB above the process baseline for a 700 px tile at base 64)."""
    return int(32 * tile * tile * base_filters * 4 * batch_size)


def default_tile(image_shape, depth: int = 5, padding: str = "valid", base_filters: int = 64,
                 batch_size: int = 1, memory_mb: int = 4096) -> int:
    """The largest valid tile within ``memory_mb`` that is not larger than the image needs."""
    longest = max(image_shape[:2])
    smallest = input_size_for_output(size_step(depth), depth, padding)
    candidates = [s for s in valid_input_sizes(4 * longest + 1024, depth, padding) if s >= smallest]
    best = candidates[0]
    for tile in candidates:
        if estimate_tile_bytes(tile, base_filters, batch_size) > memory_mb * 2**20:
            break
        best = tile
        if prediction_plan(tile, depth, padding).kept >= longest:
            break
    return best


def mirror_index(index, n):
    """Integer indices (a tensor) mirrored into ``[0, n)`` as ``np.pad(mode="reflect")`` pads:
    the one mirror rule of augmentation and the SavedModel's in-graph tiling (TensorFlow, imported
    here only). Works for
    pads larger than the image, which ``tf.pad``'s REFLECT refuses."""
    import tensorflow as tf

    n = tf.cast(n, index.dtype)
    period = tf.maximum(2 * (n - 1), 1)
    index = tf.math.floormod(tf.abs(index), period)
    return tf.where(index >= n, period - index, index)
