"""2.5-D context: each axial slice with its K neighbours below and above, as channels.

With ``context_slices = K`` a network sees ``2K + 1`` neighbouring axial slices of
one subject stacked on the channel axis (z - K first, the slice itself in the
middle) and produces the same number: a generator maps a T1 neighbourhood to
a T2 neighbourhood. That keeps CycleGAN's and UNIT's cycle well defined (a
stack goes out and a stack of the same kind comes back) and lets the losses
and discriminators judge neighbouring slices together, which is what makes
consecutive translated slices agree; at inference the middle channel is the
translation of the slice itself.

Where a neighbour does not exist (the edge of the stored slices or of the
brain), the nearest slice towards the middle is repeated. The slice store is
not copied on disk: neighbourhoods are gathered from the slices in memory
(:func:`neighbour_rows`), for training batch by batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .slices import SliceSet

MAX_CONTEXT = 4


def neighbour_rows(subjects, slices, k: int) -> np.ndarray:
    """For each row, the rows of slices ``z - k .. z + k`` of the same subject: (N, 2k + 1).

    A missing neighbour repeats the nearest existing slice towards ``z`` (at worst
    the row itself).
    """
    subjects, slices = np.asarray(subjects), np.asarray(slices, np.int64)
    where = {(s, int(z)): i for i, (s, z) in enumerate(zip(subjects, slices))}
    rows = np.empty((len(slices), 2 * k + 1), np.int64)
    for i, (s, z) in enumerate(zip(subjects, slices)):
        for j, offset in enumerate(range(-k, k + 1)):
            step = 1 if offset > 0 else -1
            found = i
            for d in range(abs(offset), 0, -1):
                hit = where.get((s, int(z) + step * d))
                if hit is not None:
                    found = hit
                    break
            rows[i, j] = found
    return rows


def plane_rows(n: int, k: int) -> np.ndarray:
    """:func:`neighbour_rows` for ``n`` consecutive planes of one volume."""
    return np.clip(np.arange(n)[:, None] + np.arange(-k, k + 1)[None, :], 0, n - 1)


def stack(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N, H, W, C) images gathered by ``rows`` (M, 2k + 1) into (M, H, W, (2k + 1)·C)."""
    gathered = images[rows]  # (M, 2k + 1, H, W, C)
    m, n, h, w, c = gathered.shape
    return np.ascontiguousarray(np.moveaxis(gathered, 1, 3)).reshape(m, h, w, n * c)


def middle(images: np.ndarray, channels: int = 1) -> np.ndarray:
    """The middle slice of (N, H, W, (2k + 1)·channels) neighbourhoods: (N, H, W, channels)."""
    centre = (images.shape[-1] // channels) // 2
    return images[..., centre * channels:(centre + 1) * channels]


def context_of(channels_in: int, channels: int = 1) -> int:
    """K from a network's input channels."""
    return (channels_in // channels - 1) // 2


def rows_of(slices: SliceSet, k: int, contrast: str) -> np.ndarray:
    """:func:`neighbour_rows` of one contrast of a split.

    Raises:
        ValueError: The slices carry no subject and slice numbers (not a slice store).
    """
    subjects = getattr(slices, f"{contrast}_subjects")
    numbers = getattr(slices, f"{contrast}_slices")
    if subjects is None or numbers is None:
        raise ValueError(f"{slices.source}: context_slices {k} needs each slice's subject "
                         "and slice number, which only a slice store (preprocess) records")
    return neighbour_rows(subjects, numbers, k)


def with_context(slices: SliceSet, k: int) -> SliceSet:
    """The split with each slice replaced by its neighbourhood (in memory; masks stay the
    middle slice's). ``k == 0`` returns ``slices`` itself."""
    if k == 0:
        return slices
    if not 0 < k <= MAX_CONTEXT:
        raise ValueError(f"context_slices: expected 0..{MAX_CONTEXT}, got {k}")
    return dataclasses.replace(slices, t1=stack(slices.t1, rows_of(slices, k, "t1")),
                               t2=stack(slices.t2, rows_of(slices, k, "t2")))
