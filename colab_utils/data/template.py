"""The MNI152 2009 template (brain only, 1 mm), its tissue maps, and a T2-like template.

nilearn ships the template as a T1; :func:`mni_template_t2` makes a T2-like
image of the same brain from its tissue maps (CSF bright, grey matter mid,
white matter dark), so that a T2 scan is registered to a template of its own
contrast. The files are read straight from nilearn's package data, so this works
offline and without importing ``nilearn.datasets`` (seconds of imports that
every worker process would pay). The brain mask is nilearn's own definition: the
template above 0.2 of its maximum (``load_mni152_brain_mask``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
         "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
         "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
MASK_THRESHOLD = 0.2


def template_file(name: str) -> Path:
    """The path of one of nilearn's packaged template files (``"t1"``, ``"gm"``, ``"wm"``).

    Raises:
        FileNotFoundError: nilearn is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MNI152 template ships with nilearn, which is not "
                                "installed (pip install nilearn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected nilearn's packaged MNI152 template file")
    return path


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(template_file(name)))
    data = np.asarray(image.dataobj, np.float32)
    return data / data.max(), image.affine.astype(np.float64)


@lru_cache(maxsize=1)
def mni_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template at 1 mm, RAS+: ``(t1 in [0, 1], brain mask, affine)``, 197 × 233 × 189."""
    t1, affine = _load("t1")
    return t1, t1 > MASK_THRESHOLD, affine


@lru_cache(maxsize=1)
def tissue_maps() -> dict[str, np.ndarray]:
    """Grey- and white-matter probability maps on the template's grid, in [0, 1], and
    CSF as what is left of the brain (``{"csf", "gm", "wm"}``)."""
    t1, _, _ = mni_template()
    gm, _ = _load("gm")
    wm, _ = _load("wm")
    csf = np.clip((t1 > 0.02).astype(np.float32) - gm - wm, 0.0, 1.0)
    return {"csf": csf, "gm": gm, "wm": wm}


# T2-like intensities of the tissues (relative; CSF brightest).
T2_TISSUE = {"csf": 1.0, "gm": 0.55, "wm": 0.3}


@lru_cache(maxsize=1)
def mni_template_t2() -> np.ndarray:
    """A T2-like image of the template brain on its grid, in [0, 1]."""
    maps = tissue_maps()
    return sum(T2_TISSUE[name] * maps[name] for name in T2_TISSUE).astype(np.float32)
