"""2-D slices in memory (:class:`SliceSet`), read from plain ``.npy``/``.npz`` files,
and resized.

A slice store (what ``preprocess`` makes) is read by :class:`colab_utils.data.store.
SliceStore`. Accepted file layouts of a data directory (values on the [0, 1] scale; networks
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
from ..log import get_logger

logger = get_logger(__name__)

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


def as_stack(array: np.ndarray, source: str, channels: int | None) -> np.ndarray:
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


def open_npz(path: Path):
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
    with open_npz(path) as data:
        if len(data.files) != 1:
            raise ValueError(f"{path}: expected one array in the .npz, got {data.files}")
        return data[data.files[0]]


def _load_npz_split(path: Path, channels) -> SliceSet:
    with open_npz(path) as data:
        missing = {"t1", "t2"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: expected arrays 't1' and 't2', missing "
                             f"{sorted(missing)} (has {data.files})")
        try:
            t1, t2 = data["t1"], data["t2"]
            paired = bool(data["paired"]) if "paired" in data.files else False
        except Exception as err:  # a damaged member inside a valid archive
            raise ValueError(f"{path}: damaged array inside the .npz ({err})") from err
    t1 = as_stack(t1, f"{path}[t1]", channels)
    t2 = as_stack(t2, f"{path}[t2]", channels)
    return checked(SliceSet(t1, t2, paired, str(path)))


def _load_folder_split(folder: Path, channels) -> SliceSet:
    stacks, names = {}, {}
    for domain in ("t1", "t2"):
        files = sorted(p for p in (folder / domain).glob("*") if p.suffix in (".npy", ".npz"))
        if not files:
            raise FileNotFoundError(f"{folder / domain}: expected .npy or .npz slices, found none")
        stacks[domain] = np.concatenate(
            [as_stack(_read_array(p), str(p), channels) for p in files])
        names[domain] = [p.name for p in files]
    paired = names["t1"] == names["t2"] and len(stacks["t1"]) == len(stacks["t2"])
    return checked(SliceSet(stacks["t1"], stacks["t2"], paired, str(folder)))


def checked(slices: SliceSet) -> SliceSet:
    if slices.t1.shape[1:] != slices.t2.shape[1:]:
        raise ValueError(f"{slices.source}: expected T1 and T2 slices of the same size, got "
                         f"{slices.t1.shape[1:]} and {slices.t2.shape[1:]}")
    if slices.paired and len(slices.t1) != len(slices.t2):
        raise ValueError(f"{slices.source}: marked paired but has {len(slices.t1)} T1 and "
                         f"{len(slices.t2)} T2 slices")
    return slices


def load_files_split(data_dir, split: str, *, channels: int | None = None,
                     required: bool = True) -> SliceSet | None:
    """Load one split (``"train"``, ``"val"``, ``"test"``) from a data directory in one of
    the file layouts above, or from a single ``.npz`` file (its train split). A slice
    store is read by :class:`colab_utils.data.store.SliceStore`;
    :func:`colab_utils.data.store.load_split` takes either.

    Args:
        data_dir: A directory in one of the layouts above, or a single ``.npz`` file.
        split: Split name.
        channels: Expected channels, or ``None`` to accept any.
        required: Raise ``FileNotFoundError`` if the split is absent; otherwise return
            ``None``.

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
    if (data_dir / f"{split}.npz").is_file():
        return _load_npz_split(data_dir / f"{split}.npz", channels)
    if (data_dir / split).is_dir():
        return _load_folder_split(data_dir / split, channels)
    if required:
        raise FileNotFoundError(f"{data_dir}: expected {split}.npz or {split}/t1 and "
                                f"{split}/t2 folders of slices, found neither")
    return None


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

    logger.info("%s: %d×%d slices averaged down to %d×%d (image_size)", slices.source,
                height, width, size, size)

    def shrink_mask(mask):
        return None if mask is None else shrink(mask.astype(np.float32)) > 0.5

    return dataclasses.replace(slices, t1=shrink(slices.t1), t2=shrink(slices.t2),
                               mask=shrink_mask(slices.mask), t2_mask=shrink_mask(slices.t2_mask))
