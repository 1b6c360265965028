"""Axial slices of a template-space volume as square images, and back.

The convention of every image in this project: anterior up, the subject's
right on the image's left (radiological view), centred and padded (or
cropped) to ``size`` × ``size``; left-right runs along the width, the axis
that augmentation flips.
"""

from __future__ import annotations

import numpy as np

SLICE_MODES = ("seed", "range", "brain")


def to_slice(plane: np.ndarray, size: int) -> np.ndarray:
    """An axial plane (x, y) of a RAS volume as a ``size`` × ``size`` image."""
    image = np.flipud(plane.T)
    out = np.zeros((size, size), np.float32)
    rows, cols = image.shape
    src_r, dst_r = max((rows - size) // 2, 0), max((size - rows) // 2, 0)
    src_c, dst_c = max((cols - size) // 2, 0), max((size - cols) // 2, 0)
    n_r, n_c = min(rows, size), min(cols, size)
    out[dst_r:dst_r + n_r, dst_c:dst_c + n_c] = image[src_r:src_r + n_r, src_c:src_c + n_c]
    return out


def from_slice(image: np.ndarray, plane_shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`to_slice`: a ``size`` × ``size`` image back to an axial
    plane of shape ``plane_shape`` (x, y); what padding added is dropped, what
    cropping removed is zero."""
    size = image.shape[0]
    rows, cols = plane_shape[1], plane_shape[0]
    src_r, dst_r = max((rows - size) // 2, 0), max((size - rows) // 2, 0)
    src_c, dst_c = max((cols - size) // 2, 0), max((size - cols) // 2, 0)
    n_r, n_c = min(rows, size), min(cols, size)
    out = np.zeros((rows, cols), np.float32)
    out[src_r:src_r + n_r, src_c:src_c + n_c] = image[dst_r:dst_r + n_r, dst_c:dst_c + n_c]
    return np.flipud(out).T


def stack(volume: np.ndarray, slices, size: int, dtype=np.float32) -> np.ndarray:
    """The axial ``slices`` of ``volume`` as (len(slices), size, size) images."""
    return np.stack([to_slice(volume[:, :, k].astype(np.float32), size) for k in slices]
                    ).astype(dtype)


def select_slices(mask: np.ndarray, mode: str, *, seed_slice: int = 120,
                  slice_range: tuple[int, int] = (40, 150),
                  min_brain_fraction: float = 0.25) -> list[int]:
    """Axial slice indices of the template grid: the article's one slice (``seed``), a
    ``range``, or every slice whose brain area is at least ``min_brain_fraction`` of the
    largest (``brain``)."""
    depth = mask.shape[2]
    if mode == "seed":
        if not 0 <= seed_slice < depth:
            raise ValueError(f"seed_slice: expected 0..{depth - 1}, got {seed_slice}")
        return [seed_slice]
    if mode == "range":
        return list(range(slice_range[0], min(slice_range[1], depth)))
    if mode != "brain":
        raise ValueError(f"slices: expected one of {SLICE_MODES}, got {mode!r}")
    area = mask.sum(axis=(0, 1))
    return [int(k) for k in np.flatnonzero(area >= min_brain_fraction * area.max())]
