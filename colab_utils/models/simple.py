"""The Simple baseline: no learning, the floor any learned method must clear.

The input's intensities are inverted inside the brain (T1 and T2 have roughly
opposite tissue contrast: CSF is dark on T1 and bright on T2) and
histogram-matched to the target domain's training distribution.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from ..config import DIRECTIONS
from ..data.slices import SliceSet
from ..fileio import atomic_write_bytes


def brain_masks(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``mask`` as booleans, or where ``images`` is non-zero (preprocessing zeros the
    background) when no mask is given."""
    if mask is None:
        return np.asarray(images) > 0
    mask = np.asarray(mask).astype(bool)
    if mask.shape != np.shape(images):
        raise ValueError(f"mask: expected the images' shape {np.shape(images)}, "
                         f"got {mask.shape}")
    return mask


class SimpleBaseline:
    """Inverted input intensities, histogram-matched inside the brain.

    For each image, the brain pixels of ``1 - input`` are ranked and each rank
    is mapped to the same quantile of the target domain's training intensities
    (inside the brain). Pixels outside the brain are 0, like the targets.

    Args:
        quantiles: ``{"t1": q, "t2": q}``, each an increasing array of the
            domain's intensity quantiles at evenly spaced levels in [0, 1].
    """

    method = "simple"

    def __init__(self, quantiles: dict[str, np.ndarray]):
        self.quantiles = {}
        for domain in ("t1", "t2"):
            q = np.asarray(quantiles[domain], np.float64)
            if q.ndim != 1 or len(q) < 2 or np.any(np.diff(q) < 0) or not np.isfinite(q).all():
                raise ValueError(f"quantiles[{domain!r}]: expected an increasing 1-D array of "
                                 f"at least 2 finite values, got shape {q.shape}")
            self.quantiles[domain] = q

    @classmethod
    def fit(cls, slices: SliceSet, n_quantiles: int = 1001) -> SimpleBaseline:
        """Quantiles of each domain's training intensities inside the brain."""
        levels = np.linspace(0.0, 1.0, n_quantiles)
        quantiles = {}
        for domain, images, mask in (("t1", slices.t1, slices.mask),
                                     ("t2", slices.t2, slices.t2_mask)):
            inside = np.asarray(images)[brain_masks(images, mask)]
            if inside.size == 0:
                raise ValueError(f"{slices.source}: no {domain.upper()} brain pixels to fit "
                                 "the Simple baseline on (all images are zero)")
            quantiles[domain] = np.quantile(inside, levels)
        return cls(quantiles)

    def translate(self, images: np.ndarray, mask: np.ndarray | None = None, *,
                  direction: str = "t1_to_t2") -> np.ndarray:
        """Translate (N, H, W, C) images in [0, 1]; returns float32 in [0, 1]."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
        target = self.quantiles[direction[-2:]]
        levels = np.linspace(0.0, 1.0, len(target))
        images = np.asarray(images, np.float32)
        masks = brain_masks(images, mask)
        out = np.zeros_like(images)
        for i in range(len(images)):
            inside = masks[i]
            values = 1.0 - images[i][inside]
            if values.size == 0:
                continue
            ranks = (rankdata(values, method="average") - 0.5) / values.size  # in (0, 1)
            out[i][inside] = np.interp(ranks, levels, target)
        return np.clip(out, 0.0, 1.0)

    def translator(self, direction: str):
        """A function ``(images, mask) -> images`` for one direction."""
        return lambda images, mask=None: self.translate(images, mask, direction=direction)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"method": self.method,
                           "quantiles": {k: v.tolist() for k, v in self.quantiles.items()}})
        atomic_write_bytes(path, text.encode())
        return path

    @classmethod
    def load(cls, path) -> SimpleBaseline:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Simple baseline file not found: {path}")
        try:
            values = json.loads(path.read_text())
            return cls(values["quantiles"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected a Simple baseline JSON with 'quantiles' for "
                             f"t1 and t2 ({err})") from err
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
