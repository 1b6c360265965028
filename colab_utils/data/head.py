"""A synthetic head around the MNI152 brain, for the full-head phantom.

nilearn ships the template brain without skull, so the head is built around
it from distances to the brain, with the tissues a real head scan shows and
a registration has to look past:

* CSF between brain and skull (dark on T1, bright on T2);
* the skull: two dark tables of cortical bone and fatty marrow between them;
* the scalp: muscle (thickest over the temples), a layer of subcutaneous fat
  that is the brightest tissue on T1 and bright on T2, and skin;
* a face with the eyes, and a neck with the spinal cord, down to the bottom
  of an IXI-like field of view (256 mm from the top of the head).

Intensities are relative to the template's (white matter about 0.84 on T1).
It is a phantom: tissue boundaries are smooth distance shells, not anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .template import mni_template, mni_template_t2

# The head's box in template (RAS, mm) coordinates: the brain with a scalp around
# it, the face in front and the neck below.
HEAD_BOX_MM = ((-96, 96), (-132, 108), (-155, 100))
# (T1, T2) of each tissue outside the brain; the brain's T2 is built from its maps.
TISSUES = {
    "csf": (0.12, 1.0), "bone": (0.03, 0.03), "marrow": (0.85, 0.6),
    "muscle": (0.55, 0.2), "fat": (1.0, 0.75), "skin": (0.55, 0.35),
    "eye": (0.1, 1.0), "cord": (0.6, 0.45),
}
# Shells outward from the brain's envelope (mm): CSF, inner table, marrow, outer table.
CSF_MM, INNER_TABLE_MM, MARROW_MM, SKULL_MM = 2.5, 4.0, 6.5, 8.0
SCALP_MM = 15.0  # the head's outline, plus up to 9 mm of temporal muscle
FAT_MM, SKIN_MM = 6.0, 1.5  # depths below the head's surface


@dataclass(frozen=True)
class Head:
    """Contrasts and the brain mask of the head on a 1 mm RAS grid, and its affine."""

    t1: np.ndarray
    t2: np.ndarray
    brain: np.ndarray
    affine: np.ndarray


def brain_contrasts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template's T1, a T2-like image of the same brain (CSF bright, grey matter
    mid, white matter dark) and the brain mask, on the template grid."""
    t1, mask, _ = mni_template()
    return t1, mni_template_t2(), mask


def _into_box(volume: np.ndarray, template_affine: np.ndarray, low: np.ndarray,
              shape: tuple) -> np.ndarray:
    """A template-grid volume placed into the head box (same 1 mm axes)."""
    out = np.zeros(shape, np.float32)
    offset = np.rint(template_affine[:3, 3] - low).astype(int)
    src, dst = [], []
    for o, n, m in zip(offset, volume.shape, shape):
        start, stop = max(0, -o), min(n, m - o)
        src.append(slice(start, stop))
        dst.append(slice(start + o, stop + o))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _distance_mm(inside: np.ndarray, outward: bool) -> np.ndarray:
    """Distance (mm) to the region's surface, from outside it (``outward``) or from
    inside it, computed on a 2 mm grid and interpolated back (layers are mm thick)."""
    coarse = inside[::2, ::2, ::2]
    distance = ndimage.distance_transform_edt(~coarse if outward else coarse) * 2.0
    zoom = [n / c for n, c in zip(inside.shape, coarse.shape)]
    return ndimage.zoom(distance.astype(np.float32), zoom, order=1)[
        :inside.shape[0], :inside.shape[1], :inside.shape[2]]


@lru_cache(maxsize=1)
def head_model() -> Head:
    """The head (built once per process: distance maps on a 2 mm grid)."""
    _, _, template_affine = mni_template()
    low = np.array([lo for lo, _ in HEAD_BOX_MM], np.float64)
    shape = tuple(int(hi - lo + 1) for lo, hi in HEAD_BOX_MM)
    t1_brain, t2_brain, mask = brain_contrasts()
    brain = _into_box(mask.astype(np.float32), template_affine, low, shape) > 0.5
    x, y, z = np.meshgrid(*[np.arange(lo, hi + 1, dtype=np.float32) for lo, hi in HEAD_BOX_MM],
                          indexing="ij", sparse=True)
    # The brain's envelope (sulci and cisterns filled) and the distance outward from it.
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=6))
    from_brain = _distance_mm(envelope, outward=True)
    temporal = 9.0 * np.exp(-((np.abs(x) - 70) / 14) ** 2) * np.exp(-((z - 5) / 30) ** 2)
    neck = ((x / 62) ** 2 + ((y + 12) / 66) ** 2 <= 1) & (z <= -20)
    face = (x / 66) ** 2 + ((y - 40) / 58) ** 2 + ((z + 70) / 62) ** 2 <= 1
    head = (from_brain <= SCALP_MM + temporal) | neck | face
    head = ndimage.gaussian_filter(head.astype(np.float32), 3.0) > 0.5
    depth = _distance_mm(head, outward=False)

    labels = {}
    labels["muscle"] = head
    labels["fat"] = head & (depth > SKIN_MM) & (depth <= FAT_MM)
    labels["skin"] = head & (depth <= SKIN_MM)
    bone = (from_brain > CSF_MM) & (from_brain <= SKULL_MM) & (depth > FAT_MM)
    labels["bone"] = bone
    labels["marrow"] = bone & (from_brain > INNER_TABLE_MM) & (from_brain <= MARROW_MM)
    spine = (z < -55) & neck
    cord_radius = np.sqrt(x ** 2 + (y + 38) ** 2)
    labels["csf_spine"] = spine & (cord_radius <= 9)
    labels["cord"] = spine & (cord_radius <= 5.5)
    labels["eye"] = ~envelope & (((np.abs(x) - 32) ** 2 + (y - 50) ** 2 + (z + 38) ** 2)
                                 <= 12 ** 2)
    labels["csf"] = ((from_brain > 0) & (from_brain <= CSF_MM)) | (envelope & ~brain)
    t1 = np.zeros(shape, np.float32)
    t2 = np.zeros(shape, np.float32)
    for name, region in labels.items():  # later tissues are painted over earlier ones
        t1[region], t2[region] = TISSUES[name.replace("csf_spine", "csf")]
    t1[brain] = _into_box(t1_brain, template_affine, low, shape)[brain]
    t2[brain] = _into_box(t2_brain, template_affine, low, shape)[brain]
    affine = np.eye(4)
    affine[:3, 3] = low
    # Partial volume at the tissue boundaries.
    return Head(ndimage.gaussian_filter(t1, 0.6), ndimage.gaussian_filter(t2, 0.6), brain,
                affine)
