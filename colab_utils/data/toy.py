"""A synthetic 2-D task with a known answer: "T2" is the inverted "T1".

Each slice is a disc (the "head") with a dark rim and a few small bright
spots on a shaded grey interior. Inside the disc ``t1`` lies in [0.2, 1] and
``t2 = 1.2 - t1``; outside both are 0. It is
not anatomy (the MRI phantom is): it exists so that training can be checked
against an exact answer in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from .slices import save_split


def toy_slices(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(t1, t2, mask)``, each (n, size, size) float32; t1, t2 in [0, 1].

    T1 is a mid-grey disc with a dark rim and a few small bright spots; T2 is
    its inversion (bright rim, dark spots). The spots' polarity and the rim
    make the inversion the only mapping between the two distributions that
    keeps the shapes (a brightening that kept bright spots bright would be
    told apart by a discriminator).
    """
    if n < 1 or size < 8:
        raise ValueError(f"expected n >= 1 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    t1 = np.zeros((n, size, size), np.float32)
    masks = np.zeros_like(t1)
    for i in range(n):
        radius = rng.uniform(0.36, 0.46)
        centre = rng.uniform(-0.03, 0.03, size=2)
        r = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
        mask = r < radius
        shading = gaussian_filter(rng.normal(size=(size, size)), sigma=size / 6)
        image = 0.4 + 0.1 * shading / (np.abs(shading).max() + 1e-8)
        for _ in range(rng.integers(3, 7)):
            cy, cx = rng.uniform(-0.6, 0.6, size=2) * radius + centre
            sigma = rng.uniform(0.03, 0.07)
            image += rng.uniform(0.3, 0.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                                    / (2 * sigma**2))
        image = np.where(r > 0.85 * radius, 0.2, image)  # the dark rim
        t1[i] = np.where(mask, np.clip(image, 0.2, 1.0), 0.0)
        masks[i] = mask
    t2 = np.where(masks > 0, 1.2 - t1, 0.0).astype(np.float32)
    return t1, t2, masks


def write_toy_dataset(out_dir, *, n_train: int = 64, n_val: int = 8, n_test: int = 8,
                      size: int = 32, seed: int = 0) -> Path:
    """Write ``train.npz``, ``val.npz`` and ``test.npz`` (paired) under ``out_dir``."""
    out_dir = Path(out_dir)
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        if n == 0:
            continue
        t1, t2, _ = toy_slices(n, size, seed=seed * 1000 + offset)
        save_split(out_dir / f"{split}.npz", t1, t2, paired=True)
    return out_dir
