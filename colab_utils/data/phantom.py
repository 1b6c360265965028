"""An offline MRI phantom: T1/T2 NIfTI pairs made from nilearn's MNI152 template.

THESE ARE PHANTOMS, NOT SUBJECTS. Each pseudo-subject is the MNI152 2009
template brain (it ships with nilearn, so no download is needed) with:

* a random smooth deformation (a few mm), shared by its T1 and T2;
* a T1 contrast (the template itself) and a T2-like contrast built from the
  grey/white-matter maps (CSF bright, grey matter mid, white matter dark);
* a head pose in the scanner (nodding up to 20 degrees, turning and tilting
  up to 8, shifts up to 15 mm) and an adult brain's size (0.88–0.98 of the
  template's in each direction), written into the affine; for the T2 a small
  movement between the scans, another voxel size and storage orientation;
* a smooth multiplicative bias field and Rician noise per image.

Four kinds (``KINDS``), for the scans users bring:

* ``"head"`` (the default), like IXI: the whole head of :mod:`.head` (skull,
  scalp fat, face, neck), the T1 stored sagittally in a 256 × 256 field of
  view, the T2 an axial slab of 1.3 mm slices over the top 156 mm of the head,
  stored left-right flipped (LAS);
* ``"brain"``, like BraTS: the brain alone (skull-stripped), T2 as above;
* ``"thick"``, like a clinical scan: the whole head in 5 mm axial slices, T1
  and T2, over the top 150 mm of the head;
* ``"icbm"``, the real-contrast phantom: stored as ``"head"``, but the anatomy and
  both contrasts are the MNI ICBM 2009c T1/T2 pair (:mod:`.icbm`; real MRI, so the
  T2 is real T2 contrast, not a function of the T1), optionally with lesion-like
  spots (``lesions``). It needs the pair fetched once (:func:`.icbm.fetch_icbm`).

So the files need what real data needs: pairing by subject ID, reorientation,
T2 → T1 rigid registration, T1 → MNI152 affine registration that finds the
brain inside the head, and a brain mask of each subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..fileio import write_if_changed
from ..validation import check_choice
from .head import Head, brain_contrasts, head_model
from .nifti import save_volume
from .template import mni_template

DESCRIPTION = "colab_utils PHANTOM from MNI152 - not a real subject"
KINDS = ("head", "brain", "thick", "icbm")
_MARGIN = 6
FOV = 256  # in-plane field of view of the stored slices (voxels of 1 mm)
T2_SLAB_MM, THICK_SLAB_MM, THICK_SLICE_MM = 156.0, 150.0, 5.0


@dataclass
class Subject:
    """One pseudo-subject: both scans (scanner-like units, 0–1000), their affines and
    the truth they were made from (``truth``: pose, movement, kind)."""

    t1: np.ndarray
    t1_affine: np.ndarray
    t2: np.ndarray
    t2_affine: np.ndarray
    truth: dict


@lru_cache(maxsize=1)
def _brain_only() -> Head:
    """The template brain alone, cropped to it with a margin."""
    t1, t2, mask = brain_contrasts()
    _, _, affine = mni_template()
    inside = np.argwhere(t1 > 0.02)
    lo = np.maximum(inside.min(0) - _MARGIN, 0)
    hi = inside.max(0) + _MARGIN + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return Head(t1[crop], t2[crop], mask[crop], shifted)


def anatomy(kind: str, icbm_dir=None) -> Head:
    """The undeformed anatomy of a phantom kind (brain alone, the whole head, or the ICBM
    head from ``icbm_dir``)."""
    check_choice("kind", kind, KINDS)
    if kind == "icbm":
        from .icbm import icbm_head

        if icbm_dir is None:
            raise ValueError("phantom kind 'icbm': expected the folder of the ICBM 2009c "
                             "pair (icbm_dir; see colab_utils.data.icbm.fetch_icbm)")
        return icbm_head(str(icbm_dir))
    return _brain_only() if kind == "brain" else head_model()


@lru_cache(maxsize=8)
def _spline_weights(n: int, coarse: int) -> np.ndarray:
    """(n, coarse) weights of a cubic-spline zoom of ``coarse`` samples to ``n``."""
    return np.stack([ndimage.zoom(np.eye(coarse)[i], n / coarse, order=3, mode="nearest")[:n]
                     for i in range(coarse)], axis=1)


def _smooth_field(rng, shape, coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field of the given shape, about ``amplitude`` in size.

    A ``coarse``³ grid of normal samples zoomed to ``shape`` by cubic splines.
    The zoom is separable, so it is done as three small matrix products: the
    same field as a 3-D ``ndimage.zoom`` (to ~1e-15), much faster (docs/BENCHMARKS.md).
    """
    grid = rng.normal(size=(coarse, coarse, coarse))
    weights = [_spline_weights(n, coarse).astype(np.float32) for n in shape]
    field = np.einsum("ai,bj,ck,ijk->abc", *weights, grid.astype(np.float32), optimize=True)
    field *= np.float32(amplitude / (np.abs(field).max() + 1e-8))
    return field


def deformation(index: int, seed: int, shape, deformation_mm: float = 3.0) -> np.ndarray:
    """The subject's displacement field (3, *shape) in voxels: the subject's voxel ``v``
    shows the anatomy at ``v + field[:, v]``. It is the first thing drawn from the
    subject's random stream, so it can be recomputed alone (the tests' ground truth)."""
    rng = np.random.default_rng([seed, index])
    return np.stack([_smooth_field(rng, shape, 6, deformation_mm) for _ in range(3)])


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _pose(rng, degrees, mm: float, scale: tuple[float, float], centre) -> np.ndarray:
    """A 4×4 world transform: rotation (``degrees`` about x, y, z), isotropic scale drawn
    from ``scale`` and a translation of up to ``mm``, about ``centre``."""
    matrix = _rotation(np.deg2rad(rng.uniform(-1, 1, 3) * np.asarray(degrees)))
    matrix = matrix * rng.uniform(*scale)
    pose = np.eye(4)
    pose[:3, :3] = matrix
    pose[:3, 3] = centre - matrix @ centre + rng.uniform(-mm, mm, 3)
    return pose


def _rician(rng, image: np.ndarray, sigma: float) -> np.ndarray:
    real = image + rng.normal(0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real**2 + imaginary**2)


def _crop_top(volume: np.ndarray, affine: np.ndarray, slab_mm: float, top: int):
    """The axial slab of ``slab_mm`` below slice ``top`` (the head's top), and its affine."""
    start = max(0, top - int(round(slab_mm)))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ [0, 0, start] + affine[:3, 3]
    return volume[:, :, start:top + 1], shifted


def _reslice_z(volume: np.ndarray, affine: np.ndarray, mm: float, thick: bool):
    """Axial slices every ``mm``: interpolated (``thick=False``) or slab averages of that
    thickness (``thick``, as a thick-slice clinical scan)."""
    depth = volume.shape[2]
    if thick:
        k = int(round(mm))
        n = depth // k
        resliced = volume[:, :, :n * k].reshape(*volume.shape[:2], n, k).mean(axis=3)
        grid = affine @ np.diag([1.0, 1.0, float(k), 1.0])
        grid[:3, 3] = affine[:3, :3] @ [0, 0, (k - 1) / 2] + affine[:3, 3]
        return resliced.astype(np.float32), grid
    resliced = ndimage.zoom(volume, (1.0, 1.0, 1 / mm), order=1)
    # zoom maps the first and last slices onto each other: the exact new spacing.
    grid = affine @ np.diag([1.0, 1.0, (depth - 1) / (resliced.shape[2] - 1), 1.0])
    return resliced, grid


def _flip_x(volume: np.ndarray, affine: np.ndarray):
    """Stored left-right flipped (LAS), as scanners often store axial slices."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, volume.shape[0] - 1
    return volume[::-1], affine @ flip


def _sagittal(volume: np.ndarray, affine: np.ndarray):
    """Stored as sagittal slices (axes anterior, superior, left), as IXI's T1s are."""
    nx = volume.shape[0]
    permute = np.array([[0, 0, -1, nx - 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    return np.ascontiguousarray(volume.transpose(1, 2, 0)[:, :, ::-1]), affine @ permute


def _pad(volume: np.ndarray, affine: np.ndarray, size: int, axes=(0, 1)):
    """Zero-pad ``axes`` to ``size`` (centred), keeping world positions."""
    before = [max((size - volume.shape[a]) // 2, 0) if a in axes else 0 for a in range(3)]
    after = [max(size - volume.shape[a] - before[a], 0) if a in axes else 0 for a in range(3)]
    padded = np.pad(volume, list(zip(before, after)))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ [-b for b in before] + affine[:3, 3]
    return padded, shifted


def _store_t1(volume: np.ndarray, affine: np.ndarray, kind: str, top: int):
    """The T1 (or anything on its grid) as the scanner stores it for ``kind``."""
    if kind == "thick":
        volume, affine = _crop_top(volume, affine, THICK_SLAB_MM, top)
        volume, affine = _reslice_z(volume, affine, THICK_SLICE_MM, thick=True)
    elif kind in ("head", "icbm"):
        volume, affine = _sagittal(volume, affine)  # pads anterior-posterior, superior-inferior
    return _pad(volume, affine, FOV)


def _store_t2(volume: np.ndarray, affine: np.ndarray, kind: str, top: int):
    """The T2 as the scanner stores it for ``kind``: an axial slab (or the whole brain),
    thick or 1.3 mm slices, left-right flipped."""
    if kind != "brain":
        volume, affine = _crop_top(volume, affine,
                                   THICK_SLAB_MM if kind == "thick" else T2_SLAB_MM, top)
    volume, affine = _reslice_z(volume, affine, THICK_SLICE_MM if kind == "thick" else 1.3,
                                thick=kind == "thick")
    volume, affine = _flip_x(volume, affine)
    return _pad(volume, affine, FOV)


def make_subject(index: int, seed: int = 0, *, kind: str = "head",
                 deformation_mm: float = 3.0, noise: float = 0.02, bias: float = 0.15,
                 with_brain: bool = False, icbm_dir=None, lesions: int = 0) -> Subject:
    """Generate one pseudo-subject of a phantom ``kind`` (see the module docstring).

    Its random draws depend only on ``(seed, index)``: the same subject comes out of
    every call, whatever other subjects exist. ``with_brain`` adds its true brain mask
    on the T1's grid to ``truth["brain"]`` (for tests). ``icbm_dir``: the ICBM pair's
    folder (kind ``"icbm"``); ``lesions``: up to this many lesion-like spots (kind
    ``"icbm"``; drawn from a stream of their own, so the rest of the subject is the same
    with or without them).
    """
    head = anatomy(kind, icbm_dir)
    shape = head.t1.shape
    coords = np.indices(shape, dtype=np.float32)
    coords += deformation(index, seed, shape, deformation_mm)
    rng = np.random.default_rng([seed, index, 1])
    t1 = ndimage.map_coordinates(head.t1, coords, order=1)
    top = int(np.flatnonzero(t1.max(axis=(0, 1)) > 0.05).max())  # the head's top slice
    start = 0 if kind == "brain" else max(0, top - int(round(max(T2_SLAB_MM, THICK_SLAB_MM))))
    t2 = np.zeros(shape, np.float32)  # only the T2's axial slab is needed
    t2[:, :, start:] = ndimage.map_coordinates(head.t2, coords[:, :, :, start:], order=1)
    brain = (ndimage.map_coordinates(head.brain.astype(np.float32), coords, order=1)
             if with_brain or lesions else None)
    del coords
    spots = []
    if kind == "icbm" and lesions:
        from .icbm import add_lesions

        lesion_rng = np.random.default_rng([seed, index, 2])
        spots = add_lesions(lesion_rng, t1, t2, brain > 0.5,
                            int(lesion_rng.integers(0, lesions + 1)))
    t1 = _rician(rng, t1 * np.exp(_smooth_field(rng, shape, 4, bias)), noise)
    t2 = t2 * np.exp(_smooth_field(rng, shape, 4, bias))
    t2[:, :, start:] = _rician(rng, t2[:, :, start:], noise)  # the slab is all that is kept
    centre = head.affine[:3, :3] @ (np.array(shape) / 2) + head.affine[:3, 3]
    pose = _pose(rng, (20.0, 8.0, 8.0), 15.0, (0.88, 0.98), centre)
    movement = _pose(rng, (3.0, 3.0, 3.0), 3.0, (1.0, 1.0), centre)
    t1, t1_affine = _store_t1(t1, pose @ head.affine, kind, top)
    t2, t2_affine = _store_t2(t2, pose @ movement @ head.affine, kind, top)
    truth = {"index": index, "seed": seed, "kind": kind, "pose_t1": pose.round(6).tolist(),
             "movement_t2": movement.round(6).tolist(), "lesions": spots}
    if with_brain:
        truth["brain"] = _store_t1(brain, pose @ head.affine, kind, top)[0] > 0.5
    return Subject((1000 * t1).astype(np.float32), t1_affine, (1000 * t2).astype(np.float32),
                   t2_affine, truth)


def template_to_scanner(truth: dict, points_ras: np.ndarray, *,
                        deformation_mm: float = 3.0, icbm_dir=None) -> np.ndarray:
    """Where template points (RAS mm, inside the template box) lie in a phantom
    subject's scanner space (RAS mm): its pose after its deformation. The ground
    truth of a T1 → template registration (``truth``: :attr:`Subject.truth`)."""
    head = anatomy(truth["kind"], icbm_dir)
    voxels = (np.linalg.inv(head.affine) @ np.c_[points_ras, np.ones(len(points_ras))].T)[:3]
    field = deformation(truth["index"], truth["seed"], head.t1.shape, deformation_mm)
    at = np.clip(np.rint(voxels).astype(int).T, 0, np.array(head.t1.shape) - 1)
    # The subject's voxel v shows the anatomy at v + u(v): u is smooth and small, so
    # the anatomy at p is at p - u(p) to within a fraction of a millimetre.
    moved = voxels - field[:, at[:, 0], at[:, 1], at[:, 2]]
    world = np.asarray(truth["pose_t1"]) @ head.affine @ np.r_[moved, np.ones((1, len(at)))]
    return world[:3].T


def subject_id(index: int) -> str:
    return f"phantom-{index + 1:03d}"


def _write_subject(out_dir: Path, index: int, seed: int, kind: str, icbm_dir=None,
                   lesions: int = 0) -> dict:
    sid = subject_id(index)
    subject = make_subject(index, seed, kind=kind, icbm_dir=icbm_dir, lesions=lesions)
    # int16 like most scanners' files: a quarter of the size of float32 noise.
    save_volume(out_dir / f"{sid}-T2.nii.gz", subject.t2, subject.t2_affine,
                description=DESCRIPTION, dtype=np.int16)
    save_volume(out_dir / f"{sid}-T1.nii.gz", subject.t1, subject.t1_affine,
                description=DESCRIPTION, dtype=np.int16)
    return {"subject": sid, **subject.truth}


def write_phantom(out_dir, n_subjects: int = 8, seed: int = 0, *, kind: str = "head",
                  overwrite: bool = False, workers: int = 1, icbm_dir=None,
                  lesions: int = 0) -> Path:
    """Write ``phantom-001-T1.nii.gz``, ``phantom-001-T2.nii.gz``, … and a README.

    Existing subjects are kept unless ``overwrite`` (so an interrupted run
    continues where it stopped); ``workers`` > 1 generates subjects in parallel
    processes (each subject depends only on its index, the seed and the kind).
    Kind ``"icbm"`` needs ``icbm_dir`` (:func:`colab_utils.data.icbm.fetch_icbm`) and
    takes ``lesions`` (up to this many lesion-like spots per subject); its folder keeps
    the ICBM pair's copyright notice.

    Raises:
        ValueError: Bad counts or kind, or ``out_dir`` holds a phantom of another
            kind, seed or lesion count.
    """
    check_choice("kind", kind, KINDS)
    if n_subjects < 1:
        raise ValueError(f"n_subjects: expected >= 1, got {n_subjects}")
    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    lesions = lesions if kind == "icbm" else 0
    if kind == "icbm":
        anatomy(kind, icbm_dir)  # a clear error now, not in a worker
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / "phantom.json"
    previous = json.loads(record.read_text()) if record.is_file() else {}
    made = (previous.get("kind", "brain"), previous.get("seed"), previous.get("lesions", 0))
    if previous and not overwrite and made != (kind, seed, lesions):
        raise ValueError(f"{record}: this folder holds a phantom of kind {made[0]!r}, seed "
                         f"{made[1]} and {made[2]} lesions, not {kind!r}, {seed} and "
                         f"{lesions}; use another folder")
    write_if_changed(out_dir / "PHANTOM_README.txt", _readme(kind, lesions).encode())
    if kind == "icbm":
        from .icbm import NOTICE

        write_if_changed(out_dir / "COPYING-ICBM152.txt", NOTICE.encode())
    todo = [i for i in range(n_subjects) if overwrite or not (
        (out_dir / f"{subject_id(i)}-T1.nii.gz").is_file()
        and (out_dir / f"{subject_id(i)}-T2.nii.gz").is_file())]
    args = [(out_dir, i, seed, kind, str(icbm_dir) if icbm_dir else None, lesions)
            for i in todo]
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # no forked TensorFlow state
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            infos = list(pool.map(_write_subject, *zip(*args)))
    else:
        infos = [_write_subject(*a) for a in args]
    known = {s["subject"]: s for s in previous.get("subjects", []) + infos}
    write_if_changed(record, json.dumps(
        {"phantom": True, "seed": seed, "kind": kind, "lesions": lesions,
         "description": DESCRIPTION, "subjects": [known[k] for k in sorted(known)]},
        indent=1).encode())
    return out_dir


def _readme(kind: str, lesions: int) -> str:
    if kind == "icbm":
        return ("These NIfTI files are a PHANTOM generated by `python -m colab_utils phantom`\n"
                "(kind 'icbm') from the MNI ICBM 2009c symmetric T1/T2 pair (a population\n"
                "average of 152 adults; its copyright notice is in COPYING-ICBM152.txt), with\n"
                "random deformation, pose, bias field and noise per pseudo-subject"
                + (f" and up to\n{lesions} lesion-like spots each" if lesions else "")
                + ". They are not images of\nreal subjects.\n")
    return ("These NIfTI files are a PHANTOM generated by `python -m colab_utils phantom` from\n"
            "nilearn's MNI152 2009 template and tissue maps, with random deformation, pose,\n"
            f"bias field and noise per pseudo-subject (kind {kind!r}). They are not images of\n"
            "real subjects.\n")
