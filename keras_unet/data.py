"""Reading and writing images, pairing images with masks, and preparing training targets.

A dataset folder holds ``images/`` and ``masks/`` (also ``image/``+``label/`` or ``labels/``),
paired by file stem; or one folder with ``name.png`` + ``name_mask.png`` pairs. PNG and TIFF,
8- and 16-bit, single- and multi-channel; a multipage TIFF is a stack whose pages are samples
(e.g. ISBI 2012's ``train-volume.tif`` + ``train-labels.tif``, read page by page with tifffile).

Masks may be binary (0/1 or 0/255), instance labels (0 = background) or class indices. Each mask
becomes a ``(target uint8 (H, W), weights float32 (H, W))`` pair, cached on disk under a key of
the file content and the weight-map parameters.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import sizes, weights
from keras_unet.errors import DataError, user_message  # data.DataError: the name callers know
from keras_unet.files import atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
IMAGE_DIRS = ("images", "image", "imgs")
MASK_DIRS = ("masks", "mask", "labels", "label")
MASK_SUFFIXES = ("_mask", "_masks", "_label", "_labels")


# -- files -----------------------------------------------------------------------------------------


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def read_pages(path) -> list[np.ndarray]:
    """All pages of an image file: a list of ``(H, W)`` or ``(H, W, C)`` arrays in their own dtype.

    TIFF is read with tifffile so multipage stacks give every page (a plain imageio read returns
    only the first page of a page-by-page TIFF).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:  # every page, whether one series or one per page
                # Planar (separate) samples come as (C, H, W): channels last, as everywhere else.
                pages = [np.moveaxis(page.asarray(), 0, -1) if page.planarconfig == 2 and page.samplesperpixel > 1
                         else page.asarray() for page in tif.pages]
        else:
            import imageio.v3 as iio

            pages = [iio.imread(path)]
    except DataError:
        raise
    except Exception as err:  # corrupt or truncated files raise many different errors
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})".splitlines()[0]) from None
    out = []
    for page in pages:
        page = np.asarray(page)
        if page.ndim == 3 and page.shape[-1] in (2, 4) and not _is_tiff(path):
            page = page[..., :-1] if page.shape[-1] == 4 else page[..., :1]  # drop alpha
        if page.ndim not in (2, 3):
            raise DataError(f"{path}: unsupported image shape {page.shape}")
        if page.dtype.kind not in "uib" and page.dtype.kind != "f":
            raise DataError(f"{path}: unsupported dtype {page.dtype}")
        out.append(page)
    return out


def read_image(path) -> np.ndarray:
    """The first page of an image file (see :func:`read_pages`)."""
    return read_pages(path)[0]


def write_image(path, array: np.ndarray, pages: bool = False) -> Path:
    """Write PNG or TIFF atomically.

    ``array`` is ``(H, W)`` or ``(H, W, C)``; with ``pages=True`` (TIFF only) it is a stack whose
    first axis is written page by page, as :func:`read_pages` reads it back.
    """
    path, array = Path(path), np.asarray(array)
    if pages and not _is_tiff(path):
        raise DataError(f"{path}: only TIFF files hold several pages; use .tif")
    with atomic_path(path) as tmp:
        if _is_tiff(path):
            import tifffile

            page = array[0] if pages else array
            rgb = page.ndim == 3 and page.shape[-1] in (3, 4) and page.dtype == np.uint8
            # One series: a stack reads back whole with tifffile.imread (and ImageJ/Fiji) as well as
            # page by page with read_pages.
            tifffile.imwrite(tmp, array, photometric="rgb" if rgb else "minisblack",
                             planarconfig="contig" if page.ndim == 3 else None)
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, array, extension=path.suffix)
    return path


# -- pairing -----------------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _first_dir(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def find_pairs(directory) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of a dataset folder, paired by stem (see module docstring)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    image_dir, mask_dir = _first_dir(root, IMAGE_DIRS), _first_dir(root, MASK_DIRS)
    pairs = []
    if image_dir and mask_dir:
        masks = {p.stem: p for p in _images_in(mask_dir)}
        for image in _images_in(image_dir):
            mask = masks.get(image.stem) or next((masks[image.stem + s] for s in MASK_SUFFIXES if image.stem + s in masks), None)
            if mask is not None:
                pairs.append((image, mask))
        where = f"{image_dir.name}/ and {mask_dir.name}/"
    else:
        files = {p.stem: p for p in _images_in(root)}
        for stem, path in files.items():
            for suffix in MASK_SUFFIXES:
                if stem.endswith(suffix) and stem[: -len(suffix)] in files:
                    pairs.append((files[stem[: -len(suffix)]], path))
        pairs.sort()
        where = "images/ + masks/ subfolders or NAME + NAME_mask files"
    if not pairs:
        raise DataError(f"{root}: no image/mask pairs found (looked for {where} with matching stems)")
    return pairs


def unpaired_images(directory, pairs=None) -> list[Path]:
    """Images of a dataset folder that no mask pairs with (they are not used for training);
    ``pairs``: its :func:`find_pairs`, where the caller has them already."""
    root = Path(directory)
    pairs = find_pairs(root) if pairs is None else pairs
    paired, masks = {image for image, _ in pairs}, {mask for _, mask in pairs}
    image_dir = _first_dir(root, IMAGE_DIRS) if _first_dir(root, MASK_DIRS) else None
    if image_dir:
        return [p for p in _images_in(image_dir) if p not in paired]
    return [p for p in _images_in(root) if p not in paired and p not in masks
            and not any(p.stem.endswith(s) for s in MASK_SUFFIXES)]


def find_images(path) -> list[Path]:
    """Image files of a folder (its ``images/`` subfolder if present) and the zarr stores in it,
    or the one file or zarr store given."""
    from keras_unet.ngff import is_zarr

    path = Path(path)
    if path.is_file() or is_zarr(path):
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    folder = _first_dir(path, IMAGE_DIRS) or path
    found = _images_in(folder) + sorted(p for p in folder.iterdir() if is_zarr(p))
    if not found:
        raise DataError(f"{path}: no PNG or TIFF images or zarr stores found")
    return found


# -- masks -------------------------------------------------------------------------------------


def mask_kind(mask: np.ndarray, n_classes: int = 2) -> str:
    """``"binary"`` (two values, e.g. 0/1 or 0/255), ``"classes"`` (n_classes > 2) or ``"instance"``."""
    values = np.unique(mask)
    if values.size <= 2:
        return "binary"
    return "classes" if n_classes > 2 else "instance"


def binary_from_mask(mask: np.ndarray) -> np.ndarray:
    """Binary ``(H, W)`` uint8 from a two-valued mask: its larger value becomes 1 (255 -> 1)."""
    return (mask == mask.max()).astype(np.uint8) if mask.max() > mask.min() else (mask > 0).astype(np.uint8)


@dataclass(frozen=True)
class WeightParams:
    """Parameters of the targets and weight maps (paper defaults)."""

    w0: float = 10.0
    sigma: float = 5.0
    border_width: int = 1
    balance_classes: bool = True
    n_classes: int = 2
    mask_kind: str = "auto"
    target: str = "borders"  # borders (the paper's 2 classes) | three_class (background / interior / boundary)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def target_and_weights(mask: np.ndarray, params: WeightParams = WeightParams()) -> tuple[np.ndarray, np.ndarray, str]:
    """``(target uint8 (H, W), weights float32 (H, W), mask kind)`` for one mask page."""
    if mask.ndim == 3:
        mask = mask[..., 0]
    kind = params.mask_kind if params.mask_kind != "auto" else mask_kind(mask, params.n_classes)
    class_weights = "balanced" if params.balance_classes else None
    if kind == "classes":
        target = mask.astype(np.uint8)
        if target.max() >= params.n_classes:
            raise DataError(f"mask has class {target.max()} but n_classes is {params.n_classes}")
        w = weights.class_weight_map(target, params.n_classes) if params.balance_classes else np.ones(mask.shape, np.float32)
        return target, w, kind
    if kind == "binary":
        instances = weights.instances_from_binary(binary_from_mask(mask))
    else:
        instances = mask.astype(np.int32)
    if params.target == "three_class":
        target, w = weights.three_class_target(instances, width=params.border_width, class_weights=class_weights)
        return target, w, kind
    target, w = weights.weight_map(instances, params.w0, params.sigma, class_weights, params.border_width)
    return target, w, kind


def default_cache_dir() -> Path:
    from keras_unet.files import cache_root

    return cache_root() / "weights"


def cached_targets(mask_path: Path, params: WeightParams, cache_dir: Path | None) -> tuple[list, list, str]:
    """Targets and weight maps of every page of a mask file, through the on-disk cache."""
    pages = read_pages(mask_path)
    if cache_dir is not None:
        digest = hashlib.sha256(Path(mask_path).read_bytes() + params.key().encode()).hexdigest()
        cached = Path(cache_dir) / f"{digest}.npz"
        if cached.is_file():
            try:
                with np.load(cached) as npz:
                    return list(npz["targets"]), list(npz["weights"]), str(npz["kind"])
            except Exception:
                pass  # a damaged cache entry is recomputed
    results = [target_and_weights(page, params) for page in pages]
    targets, maps, kind = [r[0] for r in results], [r[1] for r in results], results[0][2]
    if cache_dir is not None and len({t.shape for t in targets}) == 1:
        with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, targets=np.stack(targets), weights=np.stack(maps), kind=kind)
    return targets, maps, kind


# -- datasets ----------------------------------------------------------------------------------


@dataclass
class Dataset:
    """In-memory samples: ``images`` (H, W, C) raw values, ``targets`` (H, W) uint8 and
    ``weights`` (H, W) float32, with the source of each sample and what was found on the way."""

    images: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    mask_kinds: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # what was found, for the user to know
    problems: list = field(default_factory=list)  # what training would silently get wrong: fit refuses

    def summary(self) -> list[str]:
        """Lines for the user: counts, sizes, channels, bit depths, input range, notes, class frequencies."""
        shapes = sorted({t.shape for t in self.targets})
        dtypes = sorted({str(im.dtype) for im in self.images})
        freq = np.bincount(np.concatenate([t.ravel() for t in self.targets]))
        return [f"samples: {len(self)}   sizes: {', '.join(f'{h}x{w}' for h, w in shapes)}   channels: {self.channels}"
                f"   dtypes: {', '.join(dtypes)}   input range: {self.input_range()}", *self.notes,
                "class frequencies: " + ", ".join(f"{k}: {100 * v / freq.sum():.1f}%" for k, v in enumerate(freq))]

    def check(self) -> "Dataset":
        """``self`` if :attr:`problems` is empty, else a :class:`DataError` with the first one."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problem(s); keras-unet inspect-data lists them)" \
                if len(self.problems) > 1 else ""
            raise DataError(self.problems[0] + more)
        return self

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images[0].shape[-1]

    def input_range(self) -> tuple[float, float]:
        """Raw value range for the model's ``normalize`` layer: (0, 255) for 8-bit data, and
        (0, 2**b - 1) for the smallest bit depth b >= 8 holding the data's maximum otherwise."""
        top = max(float(np.max(im)) for im in self.images)
        if top <= 1.0 and all(im.dtype.kind == "f" for im in self.images):
            return 0.0, 1.0
        bits = max(8, int(np.ceil(np.log2(top + 1))))
        return 0.0, float(2**bits - 1)

    def split(self, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """``(train, validation)`` with about ``fraction`` of the data validating.

        Split by file, so that neighbouring pages of a stack never land on both sides; a single
        multipage file is split by page.
        """
        files = [source.split("[")[0] for source in self.sources]
        keys = files if len(set(files)) > 1 else list(range(len(self)))  # the group of each sample
        groups = list(dict.fromkeys(keys))
        n_val = int(round(len(groups) * fraction))
        if fraction > 0 and len(groups) > 1:
            n_val = min(max(n_val, 1), len(groups) - 1)
        order = np.random.default_rng(seed).permutation(len(groups))
        val_groups = {groups[i] for i in order[:n_val]}
        val_idx = [i for i, key in enumerate(keys) if key in val_groups]
        train_idx = [i for i, key in enumerate(keys) if key not in val_groups]
        return self.subset(train_idx), self.subset(val_idx)

    def with_channels(self, channels: int) -> "Dataset":
        """The samples with ``channels`` channels: gray images repeated to RGB (R = G = B) for a
        model that takes RGB; a :class:`DataError` for any other change."""
        if not len(self) or self.channels == channels:
            return self
        if (self.channels, channels) != (1, 3):
            raise DataError(f"images have {self.channels} channel(s) but the model takes {channels}; convert them first")
        return Dataset([np.repeat(im, 3, axis=-1) for im in self.images], self.targets, self.weights, self.sources,
                       self.mask_kinds, list(self.notes), list(self.problems))

    def subset(self, indices) -> "Dataset":
        pick = lambda items: [items[i] for i in indices]  # noqa: E731
        return Dataset(pick(self.images), pick(self.targets), pick(self.weights), pick(self.sources),
                       pick(self.mask_kinds), list(self.notes), list(self.problems))


def _as_hwc(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def check_pair(image_path, mask_path, images: list, masks: list) -> None:
    """Raise a :class:`DataError` naming the files if pages or page sizes of a pair differ."""
    if len(images) != len(masks):
        raise DataError(f"{image_path}: {len(images)} pages but its mask {Path(mask_path).name} has {len(masks)}")
    for image, mask in zip(images, masks):
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(f"{image_path}: image is {image.shape[0]}x{image.shape[1]} but mask "
                            f"{Path(mask_path).name} is {mask.shape[0]}x{mask.shape[1]}")


def load_pairs(pairs, params: WeightParams = WeightParams(), cache_dir: Path | None | str = "default") -> Dataset:
    """Read ``(image, mask)`` file pairs into a :class:`Dataset`, checking every pair."""
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    out = Dataset()
    read, unreadable = [], []
    for image_path, mask_path in pairs:
        # a file that cannot be read is a problem of the dataset, named with the others (fit refuses
        # with the first and the count, inspect-data lists each), not an error that hides the rest
        try:
            images = read_pages(image_path)
            targets, maps, kind = cached_targets(mask_path, params, cache)
            check_pair(image_path, mask_path, images, targets)
        except (DataError, OSError) as err:
            unreadable.append(user_message(err))
            continue
        read.append(mask_path)
        for page, (image, target, w) in enumerate(zip(images, targets, maps)):
            out.images.append(_as_hwc(image))
            out.targets.append(target)
            out.weights.append(w)
            out.sources.append(f"{image_path}" + (f"[{page}]" if len(images) > 1 else ""))
            out.mask_kinds.append(kind)
    if unreadable and not read:  # nothing usable: an error, not a dataset of problems
        more = f" (and {len(unreadable) - 1} more unreadable pair(s))" if len(unreadable) > 1 else ""
        raise DataError(unreadable[0] + more)
    channels = {im.shape[-1] for im in out.images}
    if len(channels) > 1:
        raise DataError(f"images have different channel counts {sorted(channels)}; convert them to one")
    if out.mask_kinds:
        out.notes.append(mask_kinds_note(out.mask_kinds))
    out.problems += unreadable + (dataset_problems(out, read, params) if read else [])
    return out


def mask_kinds_note(kinds: list[str]) -> str:
    """One line for a dataset's masks (one kind per page): the dataset's kind, with counts where
    pages differ. An instance mask of one object has two values and reads as binary, with the
    same target either way: a folder of instance masks is "instance", with those counted."""
    counts = {kind: kinds.count(kind) for kind in sorted(set(kinds))}
    if set(counts) == {"binary"}:
        return "masks: binary (larger value = object; 0/255 masks are mapped to 0/1)"
    if set(counts) == {"instance", "binary"}:
        return (f"masks: instance ({counts['binary']} of {len(kinds)} hold one object, or two values, and read as "
                "binary: the same target either way)")
    if len(counts) == 1:
        return f"masks: {kinds[0]}"
    return "masks: " + ", ".join(f"{kind} ({count} of {len(kinds)})" for kind, count in counts.items())


def _examples(names, n: int = 3) -> str:
    names = [Path(str(name).split("[")[0]).name for name in names]
    names = list(dict.fromkeys(names))
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def dataset_problems(dataset: Dataset, mask_paths, params: WeightParams) -> list[str]:
    """What training would get wrong without a word, each a line naming files and the fix:
    mixed bit depths, non-finite pixels, no object in any mask, mask values that do not fit the
    mask kind or the number of classes. (Some empty masks are a note, not a problem.)"""
    problems = []
    depths = {}
    for image, source in zip(dataset.images, dataset.sources):
        depths.setdefault(str(image.dtype), []).append(source)
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            problems.append(f"{source.split('[')[0]}: image has NaN or infinite pixel values; fix or drop it")
    if len({d for d in depths if d not in ("bool",)}) > 1:
        problems.append("images mix bit depths (" + "; ".join(f"{d}: {_examples(s)}" for d, s in sorted(depths.items()))
                        + "): one input range would squash the smaller ones; convert them to one bit depth")
    empty = [s for s, t in zip(dataset.sources, dataset.targets) if not np.any(t > 0)]
    if empty and len(empty) == len(dataset):
        problems.append(f"every mask is empty (no object pixels, e.g. {_examples(empty)}): nothing to learn; "
                        "check the mask files")
    elif empty:
        dataset.notes.append(f"{len(empty)} mask(s) without any object: {_examples(empty)}")
    for path in dict.fromkeys(mask_paths):
        values = np.unique(np.concatenate([np.unique(page) for page in read_pages(path)]))
        if params.mask_kind == "binary" and values.size > 2:
            problems.append(f"{path}: mask has {values.size} values {_values(values)} but --mask-kind binary takes "
                            "two; use --mask-kind instance or classes")
        elif params.n_classes > 2 and values.size <= 2:
            problems.append(f"{path}: mask has {values.size} values {_values(values)} but --classes "
                            f"{params.n_classes} wants class indices 0..{params.n_classes - 1}")
        elif params.n_classes > 2 and values.max() >= params.n_classes:
            problems.append(f"{path}: mask value {values.max()} is not a class index below --classes {params.n_classes}")
    return problems


def _values(values: np.ndarray) -> str:
    shown = ", ".join(str(v) for v in values[:6])
    return "{" + shown + (", ..." if values.size > 6 else "") + "}"


def load_dataset(directory, params: WeightParams = WeightParams(), cache_dir="default") -> Dataset:
    """Read a dataset folder (see :func:`find_pairs`); images without a mask are noted."""
    pairs = find_pairs(directory)
    dataset = load_pairs(pairs, params, cache_dir)
    unpaired = unpaired_images(directory, pairs)
    if unpaired:
        dataset.notes.append(f"{len(unpaired)} image(s) without a mask, not used: {_examples(unpaired)}")
    return dataset


def check_tile_fits(dataset: Dataset, tile: int, depth: int = 5, padding: str = "valid") -> None:
    """Raise a :class:`DataError` if a sample is smaller than the output tile of ``tile``."""
    out = sizes.output_size(tile, depth, padding)
    for source, target in zip(dataset.sources, dataset.targets):
        if min(target.shape) < out:
            best = max((s for s in sizes.valid_input_sizes(tile, depth, padding)
                        if sizes.output_size(s, depth, padding) <= min(target.shape)), default=None)
            hint = f"use --tile {best}" if best else "pad the image"
            raise DataError(f"{source}: image {target.shape[0]}x{target.shape[1]} is smaller than the "
                            f"{out} px output of a {tile} px tile; {hint}")
