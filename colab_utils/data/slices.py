"""Load 2-D slices for training from ``.npy``/``.npz`` files.

Accepted layouts of a data directory (values on the [0, 1] scale; networks
see them mapped to [-1, 1] by :func:`to_network`):

* ``DIR/train.npz`` (and ``val.npz``, ``test.npz``) holding arrays ``t1`` and
  ``t2`` of shape (N, H, W) or (N, H, W, C), and optionally ``paired`` (a
  boolean scalar: slice i of ``t1`` and of ``t2`` show the same anatomy);
* ``DIR/train/t1/*.npy`` and ``DIR/train/t2/*.npy`` (``.npz`` with one array
  also accepted), each file one slice (H, W) or a stack (N, H, W); the split
  is paired when both folders hold the same file names.

Slices are stored with left-right along the width axis (the last spatial
axis), which is the axis that augmentation flips.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes

_RANGE_TOLERANCE = 1e-3


@dataclass
class SliceSet:
    """T1 and T2 slices of one split, (N, H, W, C) float32 in [0, 1].

    From a slice store, ``t1_subjects``/``t2_subjects`` and ``t1_slices``/
    ``t2_slices`` give each row's subject and axial slice index, and ``mask``
    and ``t2_mask`` the brain mask of each T1 and each T2 row.
    """

    t1: np.ndarray
    t2: np.ndarray
    paired: bool
    source: str
    t1_subjects: np.ndarray | None = None
    t2_subjects: np.ndarray | None = None
    t1_slices: np.ndarray | None = None
    t2_slices: np.ndarray | None = None
    mask: np.ndarray | None = None
    t2_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return max(len(self.t1), len(self.t2))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape[1:])

    def spread(self, count: int) -> np.ndarray:
        """Indices of up to ``count`` rows evenly spaced through the split (rows that
        both contrasts have)."""
        n = min(len(self.t1), len(self.t2))
        return np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(int))


def to_network(x):
    """Map [0, 1] intensities to the networks' [-1, 1]."""
    return x * 2.0 - 1.0


def from_network(x):
    """Map network outputs in [-1, 1] back to [0, 1]."""
    return (x + 1.0) / 2.0


def _as_stack(array: np.ndarray, source: str, channels: int | None) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        array = array[..., None]
    elif array.ndim != 4:
        raise ValueError(f"{source}: expected a slice (H, W) or a stack (N, H, W) or "
                         f"(N, H, W, C), got an array of shape {array.shape}")
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(f"{source}: expected {channels} channel(s), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{source}: expected real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if array.size == 0:
        raise ValueError(f"{source}: expected at least one slice, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: expected finite values, got NaN or Inf")
    lo, hi = float(array.min()), float(array.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"{source}: expected intensities in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return np.clip(array, 0.0, 1.0)


def _open_npz(path: Path):
    """``np.load`` of an ``.npz`` archive, with any failure reported as a ``ValueError``."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises OSError, ValueError, zipfile errors, ...
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of named arrays, got a single array")
    return data


def _read_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    with _open_npz(path) as data:
        if len(data.files) != 1:
            raise ValueError(f"{path}: expected one array in the .npz, got {data.files}")
        return data[data.files[0]]


def _load_npz_split(path: Path, channels) -> SliceSet:
    with _open_npz(path) as data:
        missing = {"t1", "t2"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: expected arrays 't1' and 't2', missing "
                             f"{sorted(missing)} (has {data.files})")
        try:
            t1, t2 = data["t1"], data["t2"]
            paired = bool(data["paired"]) if "paired" in data.files else False
        except Exception as err:  # a damaged member inside a valid archive
            raise ValueError(f"{path}: damaged array inside the .npz ({err})") from err
    t1 = _as_stack(t1, f"{path}[t1]", channels)
    t2 = _as_stack(t2, f"{path}[t2]", channels)
    return _checked(SliceSet(t1, t2, paired, str(path)))


def _load_folder_split(folder: Path, channels) -> SliceSet:
    stacks, names = {}, {}
    for domain in ("t1", "t2"):
        files = sorted(p for p in (folder / domain).glob("*") if p.suffix in (".npy", ".npz"))
        if not files:
            raise FileNotFoundError(f"{folder / domain}: expected .npy or .npz slices, found none")
        stacks[domain] = np.concatenate(
            [_as_stack(_read_array(p), str(p), channels) for p in files])
        names[domain] = [p.name for p in files]
    paired = names["t1"] == names["t2"] and len(stacks["t1"]) == len(stacks["t2"])
    return _checked(SliceSet(stacks["t1"], stacks["t2"], paired, str(folder)))


def _checked(slices: SliceSet) -> SliceSet:
    if slices.t1.shape[1:] != slices.t2.shape[1:]:
        raise ValueError(f"{slices.source}: expected T1 and T2 slices of the same size, got "
                         f"{slices.t1.shape[1:]} and {slices.t2.shape[1:]}")
    if slices.paired and len(slices.t1) != len(slices.t2):
        raise ValueError(f"{slices.source}: marked paired but has {len(slices.t1)} T1 and "
                         f"{len(slices.t2)} T2 slices")
    return slices


def load_split(data_dir, split: str, *, channels: int | None = None,
               required: bool = True) -> SliceSet | None:
    """Load one split (``"train"``, ``"val"``, ``"test"``) from a data directory.

    Args:
        data_dir: A directory in one of the layouts above, or a single
            ``.npz`` file (used as the train split).
        split: Split name.
        channels: Expected channels, or ``None`` to accept any.
        required: Raise ``FileNotFoundError`` if the split is absent;
            otherwise return ``None``.

    Raises:
        FileNotFoundError: The directory or a required split is missing.
        ValueError: A file is unreadable or holds the wrong shape or values.
    """
    data_dir = Path(data_dir)
    if data_dir.is_file() and data_dir.suffix == ".npz":
        if split == "train":
            return _load_npz_split(data_dir, channels)
        if required:
            raise FileNotFoundError(f"{data_dir}: a single .npz file only has a train split, "
                                    f"not {split!r}")
        return None
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    if (data_dir / "index.csv").is_file():
        return _load_store_split(data_dir, split, channels, required)
    if (data_dir / f"{split}.npz").is_file():
        return _load_npz_split(data_dir / f"{split}.npz", channels)
    if (data_dir / split).is_dir():
        return _load_folder_split(data_dir / split, channels)
    if required:
        raise FileNotFoundError(f"{data_dir}: expected {split}.npz or {split}/t1 and "
                                f"{split}/t2 folders of slices, found neither")
    return None


def _load_store_split(store: Path, split: str, channels, required: bool) -> SliceSet | None:
    """One split of a slice store written by :mod:`colab_utils.data.preprocess`."""
    import csv
    import json

    with open(store / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    if not rows:
        if required:
            raise FileNotFoundError(f"{store / 'index.csv'}: the store has no {split!r} slices")
        return None
    arrays = {"t1": [], "t2": [], "t1_mask": [], "t2_mask": []}
    shards = sorted({int(r["shard"]) for r in rows})
    for shard in shards:
        path = store / split / f"shard-{shard:03d}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in {store / 'index.csv'} is missing; "
                                    "re-run preprocess on this store to rebuild it")
        with _open_npz(path) as data:
            for modality in ("t1", "t2"):
                stack = data[modality]
                if len(stack):
                    arrays[modality].append(_as_stack(stack, f"{path}[{modality}]", channels))
                    if f"{modality}_mask" in data.files:  # stores since version 2
                        arrays[f"{modality}_mask"].append(data[f"{modality}_mask"][..., None])
    info = {m: [r for r in rows if r["modality"] == m] for m in ("t1", "t2")}
    t1, t2 = (np.concatenate(arrays[m]) for m in ("t1", "t2"))
    for modality, stack in (("t1", t1), ("t2", t2)):
        if len(stack) != len(info[modality]):
            raise ValueError(f"{store / split}: index.csv lists {len(info[modality])} "
                             f"{modality.upper()} slices, the shards hold {len(stack)}")
    meta = json.loads((store / "preprocess.json").read_text())
    paired = bool(meta.get("paired", {}).get(split, False))
    masks = {m: np.concatenate(arrays[f"{m}_mask"]).astype(bool)
             if arrays[f"{m}_mask"] else None for m in ("t1", "t2")}
    if masks["t1"] is None and (store / "template_mask.npz").is_file():
        # A store of version 1: the template's mask of each slice, the same for everyone.
        with _open_npz(store / "template_mask.npz") as data:
            all_masks = data["mask"]
        for modality in masks:
            masks[modality] = all_masks[[int(r["slice"]) for r in info[modality]]][..., None]
    return _checked(SliceSet(
        t1, t2, paired, f"{store}[{split}]",
        t1_subjects=np.array([r["subject"] for r in info["t1"]]),
        t2_subjects=np.array([r["subject"] for r in info["t2"]]),
        t1_slices=np.array([int(r["slice"]) for r in info["t1"]]),
        t2_slices=np.array([int(r["slice"]) for r in info["t2"]]),
        mask=masks["t1"], t2_mask=masks["t2"]))


def save_split(path, t1, t2, *, paired: bool) -> Path:
    """Write a split as ``.npz`` (arrays in [0, 1]) in the layout :func:`load_split` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, t1=np.asarray(t1, np.float32), t2=np.asarray(t2, np.float32),
                        paired=np.bool_(paired))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def block_mean(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, ...) images to (N, size, size, ...) by averaging S/size × S/size
    blocks (area averaging); ``S`` must be a multiple of ``size``."""
    n, current = images.shape[0], images.shape[1]
    factor = current // size
    return images.reshape(n, size, factor, size, factor, *images.shape[3:]).mean(
        axis=(2, 4), dtype=np.float32)


def fit_to_size(slices: SliceSet, size: int) -> SliceSet:
    """Slices at ``size`` × ``size``: as they are, or shrunk by an integer factor
    (area averaging), e.g. 256-px store slices for a 64-px smoke run.

    Raises:
        ValueError: The slices are smaller than ``size`` or not a multiple of it.
    """
    height, width = slices.image_shape[:2]
    if (height, width) == (size, size):
        return slices
    if height != width or height % size:
        raise ValueError(f"{slices.source}: expected {size}×{size} slices (config image_size) "
                         f"or a multiple of it, got {height}×{width}")

    def shrink(x):
        return None if x is None else block_mean(x, size)

    print(f"[colab_utils] {slices.source}: {height}×{width} slices averaged down to "
          f"{size}×{size} (config image_size)")
    def shrink_mask(mask):
        return None if mask is None else shrink(mask.astype(np.float32)) > 0.5

    return dataclasses.replace(slices, t1=shrink(slices.t1), t2=shrink(slices.t2),
                               mask=shrink_mask(slices.mask), t2_mask=shrink_mask(slices.t2_mask))
