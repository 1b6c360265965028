"""Intensities on the [0, 1] scale: percentiles inside the brain mark its ends.

Preprocessing, the reference volumes of whole-volume evaluation and synthesis
all scale a scan this way (and synthesis maps back the same way), so a
network sees the same intensities wherever its input comes from.
"""

from __future__ import annotations

import numpy as np


def clip_range(volume: np.ndarray, mask: np.ndarray, low: float, high: float
               ) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of ``volume`` inside ``mask``: the scale's ends.

    Raises:
        ValueError: The volume is constant inside the mask (nothing to scale).
    """
    lo, hi = np.percentile(volume[mask], [low, high])
    if hi <= lo:
        raise ValueError(f"expected varying intensities inside the brain mask, got a constant "
                         f"{lo:.4g}")
    return float(lo), float(hi)


def to_unit(volume: np.ndarray, lo: float, hi: float, inside: np.ndarray) -> np.ndarray:
    """``volume`` clipped to ``[lo, hi]`` and scaled to [0, 1], zero outside ``inside``."""
    out = np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return np.where(inside, out, 0.0).astype(np.float32)


def from_unit(volume: np.ndarray, lo: float, hi: float, inside: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_unit` inside ``inside`` (zero outside)."""
    return np.where(inside, lo + volume * (hi - lo), 0.0).astype(np.float32)


def normalise(volume: np.ndarray, mask: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the ``low``/``high`` percentiles inside ``mask``, scale to [0, 1], zero
    outside it."""
    return to_unit(volume, *clip_range(volume, mask, low, high), mask)
