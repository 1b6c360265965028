"""Each subject's own brain mask in template space.

The template's brain mask carried by an affine registration is not the
subject's brain: brains differ in shape by more than an affine map takes up,
and at the mask's edge that is CSF, skull or, on a full-head scan, scalp. So
the mask is refined from the subject's registered image:

1. the core (the template mask eroded by :data:`CORE_MM`) is brain for any
   registration worth keeping; the search region is the mask dilated by
   :data:`REACH_MM`;
2. brain tissue is what is brighter than half the core's median on T1 (grey
   and white matter; CSF, bone and air are darker). With a T2 alone (when
   synthesising from one), it is what lies between half and 1.8 times the
   core's median (CSF and fat are brighter);
3. inside the search region, the tissue connected to the core (after an
   opening that cuts thin bridges, e.g. through a thin skull to the scalp)
   is kept, closed and its holes (ventricles, sulci) filled.

Its cost and its accuracy on the phantoms are in docs/REGISTRATION.md. A mask
whose volume is implausible for the template's (outside :data:`VOLUME_RANGE`)
falls back to the template's mask and says so (QC reports it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from .template import mni_template

CORE_MM, REACH_MM = 4, 6
# The subject mask's volume over the template mask's: below, little but the core was
# brain-like (the wrong contrast, say); above, tissue leaked past the skull.
VOLUME_RANGE = (0.86, 1.2)


def _ball(radius: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * 3) - radius
    return (grid ** 2).sum(axis=0) <= radius ** 2


@lru_cache(maxsize=1)
def template_regions() -> tuple[np.ndarray, np.ndarray, tuple]:
    """``(core, reach, box)``: the template brain mask eroded by :data:`CORE_MM` and
    dilated by :data:`REACH_MM` (template grid), and the bounding box of ``reach``."""
    _, mask, _ = mni_template()
    corners = np.argwhere(mask)
    box = tuple(slice(max(a - REACH_MM - 1, 0), b + REACH_MM + 2)
                for a, b in zip(corners.min(0), corners.max(0)))
    inside = mask[box]
    core, reach = np.zeros_like(mask), np.zeros_like(mask)
    core[box] = ndimage.distance_transform_edt(inside) > CORE_MM
    reach[box] = ndimage.distance_transform_edt(~inside) <= REACH_MM
    return core, reach, box


def _tissue(t1: np.ndarray | None, t2: np.ndarray | None, core: np.ndarray) -> np.ndarray:
    if t1 is not None:
        return t1 > 0.5 * np.median(t1[core])
    reference = np.median(t2[core])
    return (t2 > 0.5 * reference) & (t2 < 1.8 * reference)


def subject_brain_mask(t1: np.ndarray | None = None, t2: np.ndarray | None = None
                       ) -> tuple[np.ndarray, dict]:
    """The subject's brain mask from its registered T1 (preferred) or T2.

    Args:
        t1, t2: Volumes on the template grid (registered, not yet normalised).

    Returns:
        ``(mask, info)``: a boolean volume on the template grid, and
        ``{"mask_fallback": bool, "mask_reason": str, "mask_volume_ratio": float,
        "mask_dice": float}``
        (its volume and Dice overlap against the template's mask).

    Raises:
        ValueError: Neither volume given, or a shape other than the template's.
    """
    _, template_mask, _ = mni_template()
    given = t1 if t1 is not None else t2
    if given is None:
        raise ValueError("subject_brain_mask: expected a registered T1 or T2, got neither")
    if given.shape != template_mask.shape:
        raise ValueError(f"subject_brain_mask: expected a volume on the template grid "
                         f"{template_mask.shape}, got {given.shape}")
    core, reach, box = template_regions()
    core_box, reach_box = core[box], reach[box]
    tissue = _tissue(None if t1 is None else t1[box], None if t2 is None else t2[box],
                     core_box)
    candidate = ndimage.binary_opening(tissue & reach_box)
    labels, _ = ndimage.label(candidate)
    keep = np.unique(labels[core_box & candidate])
    brain = np.isin(labels, keep[keep > 0]) | core_box
    brain = ndimage.binary_closing(brain, _ball(2))
    brain = ndimage.binary_fill_holes(brain) & reach_box
    mask = np.zeros_like(template_mask)
    mask[box] = brain
    ratio = float(mask.sum() / template_mask.sum())
    fallback = not VOLUME_RANGE[0] <= ratio <= VOLUME_RANGE[1]
    reason = ("" if not fallback else
              f"its volume was {ratio:.2f} of the template's, outside {VOLUME_RANGE[0]}-"
              f"{VOLUME_RANGE[1]}: " + ("little but the core looked like brain tissue"
                                        if ratio < VOLUME_RANGE[0] else
                                        "tissue outside the brain leaked in"))
    if fallback:
        mask = template_mask.copy()
    dice = float(2 * (mask & template_mask).sum() / (mask.sum() + template_mask.sum()))
    return mask, {"mask_fallback": fallback, "mask_reason": reason,
                  "mask_volume_ratio": round(ratio, 4),
                  "mask_dice": round(dice, 4)}
