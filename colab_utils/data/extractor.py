"""Who makes a subject's brain mask: the project's own refinement, or a learned extractor.

``brain_extractor`` (a data setting) chooses:

* ``"own"`` (the default): :func:`colab_utils.data.brain_mask.subject_brain_mask`,
  intensity and morphology around the registered template brain; no extra package;
* ``"deepbet"``: deepbet (Fisch et al. 2024, MIT licence), a pair of small networks
  whose weights ship inside its wheel, so it runs offline once installed
  (``pip install deepbet``; it needs torch, which Colab has). It is imported only when
  asked for; without it the request fails with an error naming the package.

Both work on the T1 already registered into the template (the template's 1 mm RAS+
grid), so the mask lands where the own mask would. The learned mask gets the same
plausibility check as the own one: a volume outside
:data:`colab_utils.data.brain_mask.VOLUME_RANGE` of the template mask's falls back to
the template's mask, and says so. ``mask_extractor`` in the mask's info names who made
it. Measured on the ICBM real-MRI head: docs/REGISTRATION.md.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..config import BRAIN_EXTRACTORS
from ..validation import check_choice

INSTALL_HINT = {"deepbet": "pip install deepbet (it needs torch; colab_utils' extra "
                           "'extractor' installs it)"}


def extractor_available(name: str) -> bool:
    """Whether extractor ``name`` can run here (``"own"`` always can)."""
    check_choice("brain_extractor", name, BRAIN_EXTRACTORS)
    if name == "own":
        return True
    try:
        require_extractor(name)
    except ImportError:
        return False
    return True


def require_extractor(name: str) -> None:
    """Check that extractor ``name`` is installed, before any subject is processed.

    Raises:
        ValueError: An unknown extractor.
        ImportError: A learned extractor whose package (or torch) cannot be imported;
            the message says what to install.
    """
    check_choice("brain_extractor", name, BRAIN_EXTRACTORS)
    if name == "deepbet":
        _deepbet_class()


def _deepbet_class():
    try:
        from deepbet import BrainExtraction
    except ImportError as err:  # deepbet itself, or torch, cc3d, fill_voids it imports
        raise ImportError(
            f"brain_extractor='deepbet' needs the deepbet package, which could not be "
            f"imported ({err}); {INSTALL_HINT['deepbet']}, or use brain_extractor='own'"
        ) from err
    return BrainExtraction


@lru_cache(maxsize=1)
def _deepbet():
    """One loaded deepbet per process (its two networks, about 17 MB)."""
    return _deepbet_class()()


def deepbet_mask(t1: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """deepbet's brain mask of a T1 (a boolean volume on the T1's grid).

    Args:
        t1: A T1 volume (any intensity scale; a full head or a brain).
        affine: Its voxel-to-world (RAS+) affine.
    """
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(t1, np.float32), np.asarray(affine, np.float64))
    _, mask, _ = _deepbet().run(image, threshold=0.5, n_dilate=0)
    return np.asarray(mask.dataobj) > 0


def brain_mask(t1: np.ndarray, extractor: str = "own") -> tuple[np.ndarray, dict]:
    """The subject's brain mask from its T1 registered into the template, by ``extractor``.

    Args:
        t1: The T1 on the template grid (registered, not yet normalised).
        extractor: One of :data:`colab_utils.config.BRAIN_EXTRACTORS`.

    Returns:
        ``(mask, info)`` as :func:`colab_utils.data.brain_mask.subject_brain_mask`
        returns them, with ``info["mask_extractor"]`` naming who made the mask.

    Raises:
        ValueError: An unknown extractor, or a volume not on the template grid.
        ImportError: A learned extractor that is not installed (naming the package).
    """
    from .brain_mask import VOLUME_RANGE, subject_brain_mask
    from .template import mni_template

    check_choice("brain_extractor", extractor, BRAIN_EXTRACTORS)
    if extractor == "own":
        mask, info = subject_brain_mask(t1=t1)
        return mask, {**info, "mask_extractor": "own"}
    _, template_mask, affine = mni_template()
    if t1 is None or np.shape(t1) != template_mask.shape:
        raise ValueError(f"brain_mask: expected a T1 on the template grid "
                         f"{template_mask.shape}, got {np.shape(t1)}")
    require_extractor(extractor)
    mask = deepbet_mask(t1, affine)
    ratio = float(mask.sum() / template_mask.sum())
    fallback = not VOLUME_RANGE[0] <= ratio <= VOLUME_RANGE[1]
    reason = ("" if not fallback else
              f"{extractor}'s mask had {ratio:.2f} of the template mask's volume, outside "
              f"{VOLUME_RANGE[0]}-{VOLUME_RANGE[1]}")
    if fallback:
        mask = template_mask.copy()
    dice = float(2 * (mask & template_mask).sum() / (mask.sum() + template_mask.sum()))
    return mask, {"mask_fallback": fallback, "mask_reason": reason,
                  "mask_volume_ratio": round(ratio, 4), "mask_dice": round(dice, 4),
                  "mask_extractor": extractor}
