"""An offline MRI phantom: T1/T2 NIfTI pairs made from nilearn's MNI152 template.

THESE ARE PHANTOMS, NOT SUBJECTS. Each pseudo-subject is the MNI152 2009
template (which ships with nilearn, so no download is needed) with:

* a random smooth deformation (a few mm), shared by its T1 and T2;
* a T1 contrast (the template itself) and a T2-like contrast built from the
  grey/white-matter maps (CSF bright, grey matter mid, white matter dark);
* a random head pose in the scanner (rotation, translation, scale), written
  into the affine, and for the T2 a small extra movement between the scans,
  another voxel size (1 × 1 × 1.3 mm) and another storage orientation (LAS);
* a smooth multiplicative bias field and Rician noise per image;
* a 256 × 256 in-plane field of view (about IXI's 256 × 256 × 150 voxels).

So the files need what real data needs: pairing by subject ID, reorientation,
T2 → T1 rigid registration and T1 → MNI152 affine registration.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from .nifti import save_volume

DESCRIPTION = "colab_utils PHANTOM from MNI152 - not a real subject"
T2_TISSUE = {"csf": 1.0, "gm": 0.55, "wm": 0.3}
_MARGIN = 6


@lru_cache(maxsize=1)
def _tissues():
    """Template T1, CSF, GM and WM maps cropped to the brain, and their affine."""
    import nibabel as nib
    from nilearn.datasets import GM_MNI152_FILE_PATH, MNI152_FILE_PATH, WM_MNI152_FILE_PATH

    def load(path):
        image = nib.as_closest_canonical(nib.load(path))
        return np.asarray(image.dataobj, np.float32), image.affine

    t1, affine = load(MNI152_FILE_PATH)
    gm, _ = load(GM_MNI152_FILE_PATH)
    wm, _ = load(WM_MNI152_FILE_PATH)
    t1, gm, wm = t1 / t1.max(), gm / gm.max(), wm / wm.max()
    brain = t1 > 0.02
    lo = np.maximum(np.argwhere(brain).min(0) - _MARGIN, 0)
    hi = np.argwhere(brain).max(0) + _MARGIN + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1)
    return t1[crop], csf[crop], gm[crop], wm[crop], shifted


@lru_cache(maxsize=1)
def _contrasts():
    """The T1 template and the T2-like image made from its tissue maps, and their affine."""
    t1, csf, gm, wm, affine = _tissues()
    t2 = T2_TISSUE["csf"] * csf + T2_TISSUE["gm"] * gm + T2_TISSUE["wm"] * wm
    return t1, t2.astype(np.float32), affine


@lru_cache(maxsize=8)
def _spline_weights(n: int, coarse: int) -> np.ndarray:
    """(n, coarse) weights of a cubic-spline zoom of ``coarse`` samples to ``n``."""
    return np.stack([ndimage.zoom(np.eye(coarse)[i], n / coarse, order=3, mode="nearest")[:n]
                     for i in range(coarse)], axis=1)


def _smooth_field(rng, shape, coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field of the given shape, about ``amplitude`` in size.

    A ``coarse``³ grid of normal samples zoomed to ``shape`` by cubic splines.
    The zoom is separable, so it is done as three small matrix products: the
    same field as a 3-D ``ndimage.zoom`` (to ~1e-15), 50–100× faster.
    """
    grid = rng.normal(size=(coarse, coarse, coarse))
    weights = [_spline_weights(n, coarse) for n in shape]
    field = np.einsum("ai,bj,ck,ijk->abc", *weights, grid, optimize=True)
    return (amplitude * field / (np.abs(field).max() + 1e-8)).astype(np.float32)


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _pose(rng, degrees: float, mm: float, scale: float, centre) -> np.ndarray:
    """A 4×4 world transform: rotation, isotropic scale and translation about ``centre``."""
    matrix = _rotation(np.deg2rad(rng.uniform(-degrees, degrees, 3)))
    matrix = matrix * rng.uniform(1 - scale, 1 + scale)
    pose = np.eye(4)
    pose[:3, :3] = matrix
    pose[:3, 3] = centre - matrix @ centre + rng.uniform(-mm, mm, 3)
    return pose


def _rician(rng, image: np.ndarray, sigma: float) -> np.ndarray:
    real = image + rng.normal(0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real**2 + imaginary**2)


def _pad_in_plane(volume: np.ndarray, affine: np.ndarray, size: int):
    """Zero-pad the first two axes to ``size`` (centred), keeping world positions."""
    before = [max((size - n) // 2, 0) for n in volume.shape[:2]]
    after = [max(size - n - b, 0) for n, b in zip(volume.shape[:2], before)]
    padded = np.pad(volume, [(before[0], after[0]), (before[1], after[1]), (0, 0)])
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ [-before[0], -before[1], 0] + affine[:3, 3]
    return padded, shifted


def make_subject(index: int, seed: int = 0, *, deformation_mm: float = 3.0,
                 noise: float = 0.02, bias: float = 0.15, fov: int = 256):
    """Generate one pseudo-subject.

    Returns:
        ``(t1, t1_affine, t2, t2_affine, info)``: float32 volumes (scanner-like
        units, 0–1000) with their affines, and a dict of the true parameters.
    """
    rng = np.random.default_rng([seed, index])
    t1_template, t2_template, affine = _contrasts()
    shape = t1_template.shape
    # One smooth deformation of the anatomy, shared by both contrasts.
    coords = np.indices(shape, dtype=np.float32)
    for axis in range(3):
        coords[axis] += _smooth_field(rng, shape, 6, deformation_mm)
    warp = lambda volume: ndimage.map_coordinates(volume, coords, order=1)  # noqa: E731
    t1, t2 = warp(t1_template), warp(t2_template)
    del coords
    # Bias fields and Rician noise, independently per image.
    t1 = _rician(rng, t1 * np.exp(_smooth_field(rng, shape, 4, bias)), noise)
    t2 = _rician(rng, t2 * np.exp(_smooth_field(rng, shape, 4, bias)), noise)
    # Head pose in the scanner, and a small movement between the two scans.
    centre = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    pose_t1 = _pose(rng, 10.0, 10.0, 0.05, centre)
    movement = _pose(rng, 3.0, 3.0, 0.0, centre)
    t1_affine = pose_t1 @ affine
    # T2: 1.3 mm slices, stored left-right flipped (LAS) as scanners often do.
    depth = t2.shape[2]
    t2 = ndimage.zoom(t2, (1.0, 1.0, 1 / 1.3), order=1)
    # zoom maps first and last slices onto each other: the exact new spacing.
    t2_grid = affine @ np.diag([1.0, 1.0, (depth - 1) / (t2.shape[2] - 1), 1.0])
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, t2.shape[0] - 1
    t2 = t2[::-1]
    t2_affine = pose_t1 @ movement @ t2_grid @ flip
    # Scanner field of view: the head inside a 256 × 256 in-plane grid of air.
    t1, t1_affine = _pad_in_plane(t1, t1_affine, fov)
    t2, t2_affine = _pad_in_plane(t2, t2_affine, fov)
    info = {"index": index, "seed": seed, "pose_t1": pose_t1.round(5).tolist(),
            "movement_t2": movement.round(5).tolist()}
    return (1000 * t1).astype(np.float32), t1_affine, (1000 * t2).astype(np.float32), \
        t2_affine, info


def subject_id(index: int) -> str:
    return f"phantom-{index + 1:03d}"


def _write_subject(out_dir: Path, index: int, seed: int) -> dict:
    sid = subject_id(index)
    t1, t1_affine, t2, t2_affine, info = make_subject(index, seed)
    # int16 like most scanners' files: a quarter of the size of float32 noise.
    save_volume(out_dir / f"{sid}-T2.nii.gz", t2, t2_affine, description=DESCRIPTION,
                dtype=np.int16)
    save_volume(out_dir / f"{sid}-T1.nii.gz", t1, t1_affine, description=DESCRIPTION,
                dtype=np.int16)
    return {"subject": sid, **info}


def write_phantom(out_dir, n_subjects: int = 8, seed: int = 0, *, overwrite: bool = False,
                  workers: int = 1) -> Path:
    """Write ``phantom-001-T1.nii.gz``, ``phantom-001-T2.nii.gz``, … and a README.

    Existing subjects are kept unless ``overwrite`` (so an interrupted run
    continues where it stopped); ``workers`` > 1 generates subjects in parallel
    processes (each subject depends only on its index and the seed).
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects: expected >= 1, got {n_subjects}")
    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "PHANTOM_README.txt").write_text(
        "These NIfTI files are a PHANTOM generated by `python -m colab_utils phantom` from\n"
        "nilearn's MNI152 2009 template and tissue maps, with random deformation, pose,\n"
        "bias field and noise per pseudo-subject. They are not images of real subjects.\n")
    todo = [i for i in range(n_subjects) if overwrite or not (
        (out_dir / f"{subject_id(i)}-T1.nii.gz").is_file()
        and (out_dir / f"{subject_id(i)}-T2.nii.gz").is_file())]
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no forked TensorFlow state
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            infos = list(pool.map(_write_subject, [out_dir] * len(todo), todo,
                                  [seed] * len(todo)))
    else:
        infos = [_write_subject(out_dir, i, seed) for i in todo]
    record = out_dir / "phantom.json"
    previous = json.loads(record.read_text())["subjects"] if record.is_file() else []
    known = {s["subject"]: s for s in previous + infos}
    record.write_text(json.dumps({"phantom": True, "seed": seed, "description": DESCRIPTION,
                                  "subjects": [known[k] for k in sorted(known)]}, indent=1))
    return out_dir
