"""Images larger than memory, block by block: probabilities and objects of an ``(H, W, C)``
array-like (a zarr array, a dask array, a memory map, numpy) written into ``(H, W, ...)`` array
stores, with peak memory set by the block size, not the image.

**Probabilities.** A block is a ``block x block`` px core of the output; its input is the core
plus the network's context (the tiles' margin and the last tile's overhang), read with mirrored
indices only where it leaves the image, exactly as :func:`keras_unet.tiling.predict_tiled` pads
the whole image. Block cores start at multiples of the pooling alignment (``2**(depth-1)`` px), so
every max-pool sees the pixel pairs of a whole-image pass, and the image is normalised by the
whole image's percentiles (:func:`keras_unet.normalize.percentile_values`, read band by band):
for valid padding the probabilities are those of a whole-image prediction (tested to 1e-5).

**Objects** (:func:`instances_blocked`) are the whole-image steps of
:func:`keras_unet.instances.instances_from_probabilities`, each made exact across blocks:

1. 4-connected components per block, then merged across block faces where object pixels touch
   (union-find over the label pairs facing each other; dask-image's ``label`` does the same).
   This, rather than per-block objects with overlap matched afterwards (Cellpose's distributed
   mode, StarDist's ``predict_instances_big``), because the components of a thresholded map are
   global by definition and the face merge finds them exactly, whatever an object's size.
2. Holes filled per block on a window with a :data:`HOLE_HALO` px halo: exact for every hole
   that fits in the halo (a nucleus' holes do; a larger enclosed region stays unfilled).
3. Objects under ``min_size`` px dropped by their global sizes (counts summed over blocks).
4. Separation borders (or a three-class model's rims) given back on a window with a ``gap`` px
   halo: the same neighbourhood rule as the whole image.

Splitting by watershed is not offered for blocked images (its seeds and basins are not local).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from keras_unet import sizes
from keras_unet.errors import SettingsError
from keras_unet.instances import foreground

HOLE_HALO = 64  # px of context for filling holes; holes wider than this across stay open


@dataclass(frozen=True)
class BlockGrid:
    """Block cores of an ``height x width`` image: ``block`` px squares (the last ones shorter)."""

    height: int
    width: int
    block: int

    def cores(self) -> list[tuple[slice, slice]]:
        """``(rows, cols)`` of every block core, row by row."""
        return [(slice(r, min(r + self.block, self.height)), slice(c, min(c + self.block, self.width)))
                for r in range(0, self.height, self.block) for c in range(0, self.width, self.block)]

    def faces(self) -> tuple[list[int], list[int]]:
        """Rows and columns where one block ends and the next begins."""
        return list(range(self.block, self.height, self.block)), list(range(self.block, self.width, self.block))


def block_grid(shape, block: int, depth: int = 5) -> BlockGrid:
    """The grid of ``block`` px cores over an image of ``shape`` ``(H, W, ...)``; ``block`` must be
    a multiple of the pooling alignment so cores start where whole-image tiles would."""
    align = sizes.size_step(depth)
    if block < align or block % align:
        raise SettingsError(f"--block {block} px must be a multiple of {align} (the pooling alignment of a depth-"
                            f"{depth} network); use {max(align, block - block % align)}")
    return BlockGrid(int(shape[0]), int(shape[1]), int(block))


def mirrored(indices: np.ndarray, length: int) -> np.ndarray:
    """Indices mirrored into ``[0, length)`` as ``np.pad(mode="reflect")`` pads (numpy twin of
    :func:`keras_unet.sizes.mirror_index`)."""
    period = max(2 * (length - 1), 1)
    indices = np.abs(indices) % period
    return np.where(indices >= length, period - indices, indices)


def read_window(image, rows: range, cols: range) -> np.ndarray:
    """``image[rows, cols]`` for index ranges that may leave the image: mirrored there, as the
    whole image is padded. Reads one contiguous box of the store and gathers from it."""
    r = mirrored(np.arange(rows.start, rows.stop), image.shape[0])
    c = mirrored(np.arange(cols.start, cols.stop), image.shape[1])
    box = np.asarray(image[r.min() : r.max() + 1, c.min() : c.max() + 1])
    return box[np.ix_(r - r.min(), c - c.min())]


def predict_block(model, image, rows: slice, cols: slice, normalization=None, tile: int | None = None,
                  batch_size: int = 1, engine: str = "tensorflow", precision: str = "float32") -> np.ndarray:
    """``(h, w, classes)`` float32 probabilities of the core ``image[rows, cols]`` of an
    ``(H, W, C)`` array-like; ``normalization``: the whole image's ``(low, high)`` percentile values
    for a percentile-normalising model (:func:`keras_unet.normalize.percentile_values`).
    ``engine``, ``precision``: what runs the network (``auto`` resolved here for this block;
    a job resolves them once for all its blocks and passes them on)."""
    from keras_unet.model import unet_config
    from keras_unet.normalize import normalize_with
    from keras_unet.tiling import forward_function, gray_for_rgb, prediction_network, resolve_tile, run_tiles

    config = unet_config(model)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    plan = sizes.prediction_plan(resolve_tile(model, (height, width), tile, batch_size), config["depth"],
                                 config["padding"])
    row_origins, col_origins = plan.origins(height), plan.origins(width)
    window = read_window(image, range(rows.start - plan.margin, rows.start + row_origins[-1] + plan.input_size
                                      - plan.margin),
                         range(cols.start - plan.margin, cols.start + col_origins[-1] + plan.input_size - plan.margin))
    window = window.astype(np.float32).reshape(*window.shape[:2], -1)
    if gray_for_rgb(window.shape[-1], config["in_channels"]):
        window = np.repeat(window, 3, axis=-1)
    network = prediction_network(model)  # a converted model's: its converted network
    if config["percentiles"] is not None:
        if normalization is None:
            raise SettingsError("a percentile-normalising model needs the whole image's percentile values per block")
        window = normalize_with(window, *normalization)
    if "auto" in (engine, precision):
        from keras_unet import engines

        count = len(row_origins) * len(col_origins)
        engine, precision = engines.resolve(network, engine, (min(batch_size, count), plan.input_size,
                                                              plan.input_size, window.shape[-1]),
                                            -(-count // batch_size), precision)
    forward = forward_function(network, False, engine, precision)
    return run_tiles(forward, window, plan, row_origins, col_origins, config["n_classes"], batch_size)[:height, :width]


# -- Objects across blocks --------------------------------------------------------------------------


def label_blocks(probabilities, labels, grid: BlockGrid, threshold=None, object_class: int = 1) -> int:
    """Phase 1: per block, the 4-connected components of the object class written into
    ``labels`` (uint32 store) with labels unique over the image; returns the count."""
    offset = 0
    for rows, cols in grid.cores():
        local, count = ndimage.label(foreground(np.asarray(probabilities[rows, cols]), object_class, threshold))
        labels[rows, cols] = np.where(local > 0, local + offset, 0).astype(np.uint32)
        offset += count
    return offset


def merged_labels(labels, grid: BlockGrid, count: int) -> np.ndarray:
    """Phase 2: ``mapping`` ``(count + 1,)`` from each block's labels to the image's components:
    labels facing each other across a block face (both object pixels, 4-adjacent) are one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = []
    face_rows, face_cols = grid.faces()
    for r in face_rows:
        above, below = np.asarray(labels[r - 1]), np.asarray(labels[r])
        pairs.append(np.stack([above, below], axis=1)[(above > 0) & (below > 0)])
    for c in face_cols:
        left, right = np.asarray(labels[:, c - 1]), np.asarray(labels[:, c])
        pairs.append(np.stack([left, right], axis=1)[(left > 0) & (right > 0)])
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count + 1, count + 1))
    _, component = connected_components(graph, directed=False)
    # component 0 holds label 0 (background) alone: no pair names 0
    _, mapping = np.unique(component, return_inverse=True)
    return mapping.astype(np.uint32)


def relabel(labels, grid: BlockGrid, mapping: np.ndarray) -> None:
    """Apply ``mapping`` to every block of ``labels`` in place."""
    for rows, cols in grid.cores():
        labels[rows, cols] = mapping[np.asarray(labels[rows, cols])]


def _window(rows: slice, cols: slice, halo: int, grid: BlockGrid) -> tuple[slice, slice, slice, slice]:
    """The core plus ``halo`` px clipped to the image, and where the core lies inside it."""
    top, left = max(rows.start - halo, 0), max(cols.start - halo, 0)
    bottom, right = min(rows.stop + halo, grid.height), min(cols.stop + halo, grid.width)
    inner = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    return slice(top, bottom), slice(left, right), *inner


def fill_holes_blocked(labels, grid: BlockGrid, halo: int = HOLE_HALO) -> None:
    """Phase 3: holes filled per block on a window with ``halo`` px around it (in place)."""
    from keras_unet.instances import fill_holes

    for rows, cols in grid.cores():
        wr, wc, ir, ic = _window(rows, cols, halo, grid)
        window = np.asarray(labels[wr, wc]).astype(np.int64)
        labels[rows, cols] = fill_holes(window)[ir, ic].astype(np.uint32)


def sizes_blocked(labels, grid: BlockGrid, count: int) -> np.ndarray:
    """Pixels per label ``(count + 1,)``, summed over the blocks."""
    total = np.zeros(count + 1, np.int64)
    for rows, cols in grid.cores():
        total += np.bincount(np.asarray(labels[rows, cols]).ravel(), minlength=count + 1)[: count + 1]
    return total


def give_back_blocked(labels, out, grid: BlockGrid, gap: int = 2, probabilities=None) -> None:
    """Phase 4: separation borders given back into ``out`` on windows with a ``gap`` px halo;
    with ``probabilities`` (a three-class model), its non-background pixels (rims) instead."""
    from keras_unet.instances import give_back_borders

    for rows, cols in grid.cores():
        wr, wc, ir, ic = _window(rows, cols, gap, grid)
        window = np.asarray(labels[wr, wc]).astype(np.int64)
        into = None if probabilities is None else np.argmax(np.asarray(probabilities[wr, wc]), axis=-1) != 0
        out[rows, cols] = give_back_borders(window, gap, into=into)[ir, ic]


def check_split(split: str | None) -> None:
    """A :class:`SettingsError` for a split the blocked objects cannot make (a watershed's seeds
    and basins are not local); none and a three-class model's boundary are exact across blocks."""
    if split not in (None, "none", "boundary"):
        raise SettingsError(f"--split {split} is not offered for images predicted block by block (a watershed's "
                            "seeds are not local); use none")


def instances_blocked(probabilities, labels, out, grid: BlockGrid, threshold=None, min_size: int = 0,
                      split: str | None = None, gap: int = 2) -> int:
    """Objects of a blocked probability map ``(H, W, classes)``: ``out`` ``(H, W)`` gets labels
    1..N (N returned) equal to :func:`keras_unet.instances.instances_from_probabilities` of the
    whole map up to their numbering. ``labels``: a ``(H, W)`` uint32 work store of the same
    chunking. ``split``: none or boundary (a three-class model)."""
    check_split(split)
    count = label_blocks(probabilities, labels, grid, threshold)
    mapping = merged_labels(labels, grid, count)
    relabel(labels, grid, mapping)
    count = int(mapping.max())
    fill_holes_blocked(labels, grid)
    size = sizes_blocked(labels, grid, count)
    keep = size >= max(min_size, 1)
    keep[0] = False
    renumber = np.zeros(count + 1, np.uint32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    relabel(labels, grid, renumber)
    give_back_blocked(labels, out, grid, gap, probabilities if split == "boundary" else None)
    return int(keep.sum())
