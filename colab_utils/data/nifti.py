"""NIfTI input and output, and pairing of T1/T2 files by subject ID.

Volumes are returned as float32 arrays in RAS+ orientation (first axis
towards the subject's Right, second Anterior, third Superior) with the
matching affine, whatever orientation they were stored in.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

IXI_PATTERN = r"(?P<id>IXI\d{3}-[A-Za-z]+-\d{4})-(?P<modality>T1|T2)\.nii(\.gz)?$"
# ``ID-T1.nii.gz``, ``ID_t2.nii``, ``sub-01_T1w.nii.gz`` and BraTS 2023's native scans
# ``BraTS-GLI-00000-000-t1n.nii.gz`` / ``-t2w.nii.gz`` (not its contrast-enhanced t1c or
# FLAIR t2f).
FOLDER_PATTERN = r"(?P<id>.+?)[-_.](?P<modality>(?i:t1[wn]?|t2w?))\.nii(\.gz)?$"
MAX_DIM = 2048


def load_volume(path) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3-D NIfTI as a float32 RAS+ array and its 4×4 affine.

    A singleton fourth dimension is dropped.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Empty, unreadable or truncated file, not 3-D, absurd
            dimensions, zero voxel sizes, or non-finite voxels; the message
            names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: expected a NIfTI file, got an empty file")
    try:
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ValueError(f"{path}: expected a NIfTI image, got {type(image).__name__}")
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            image = image.slicer[..., 0]
        if len(image.shape) != 3:
            raise ValueError(f"{path}: expected a 3-D volume, got shape {shape}")
        if any(d < 2 or d > MAX_DIM for d in image.shape):
            raise ValueError(f"{path}: expected 2..{MAX_DIM} voxels per axis, got {shape}")
        zooms = _stored_voxel_sizes(path, image)
        if any(not np.isfinite(z) or z <= 0 for z in zooms):
            raise ValueError(f"{path}: expected positive voxel sizes, got "
                             f"{tuple(map(float, zooms))}")
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except ValueError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
            MemoryError) as err:
        raise ValueError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise ValueError(f"{path}: expected finite voxel values, got {bad} NaN/Inf voxels")
    return data, image.affine.astype(np.float64)


def _stored_voxel_sizes(path: Path, image) -> tuple:
    """Voxel sizes as the file states them (nibabel silently turns a 0 into 1)."""
    if image.header["qform_code"] > 0 or image.header["sform_code"] > 0:
        return tuple(np.linalg.norm(image.affine[:3, :3], axis=0))
    with nib.openers.ImageOpener(path) as f:
        raw = type(image.header).from_fileobj(f, check=False)
    return tuple(float(z) for z in raw["pixdim"][1:4])


def save_volume(path, data: np.ndarray, affine: np.ndarray, *, description: str = "",
                dtype=np.float32) -> Path:
    """Write a NIfTI (``.nii`` or ``.nii.gz``) atomically; return the path.

    Args:
        path: Output file.
        data: 3-D array in the orientation ``affine`` describes.
        affine: 4×4 voxel-to-world (RAS+ mm) matrix.
        description: Text for the header's ``descrip`` field (79 characters).
        dtype: Stored type (integer types are rounded and clipped to range).
    """
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: expected a .nii or .nii.gz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    image = nib.Nifti1Image(data.astype(dtype), np.asarray(affine, np.float64))
    image.header.set_xyzt_units("mm")
    if description:
        image.header["descrip"] = description[:79].encode()
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name[: -len(suffix)]}{suffix}")
    nib.save(image, tmp)
    os.replace(tmp, path)
    return path


@dataclass
class Pairing:
    """Subjects with both modalities, and those missing one."""

    pairs: dict[str, tuple[Path, Path]]
    missing_t2: list[str] = field(default_factory=list)
    missing_t1: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{len(self.pairs)} subjects with T1 and T2"]
        if self.missing_t2:
            lines.append(f"{len(self.missing_t2)} with T1 only: {', '.join(self.missing_t2[:10])}"
                         + (" …" if len(self.missing_t2) > 10 else ""))
        if self.missing_t1:
            lines.append(f"{len(self.missing_t1)} with T2 only: {', '.join(self.missing_t1[:10])}"
                         + (" …" if len(self.missing_t1) > 10 else ""))
        return "; ".join(lines)


def pair_subjects(files, pattern: str = FOLDER_PATTERN) -> Pairing:
    """Pair T1 and T2 files by subject ID.

    Args:
        files: Paths of NIfTI files (others, and names the pattern does not
            match, are ignored).
        pattern: Regular expression with named groups ``id`` and
            ``modality`` (matched case-insensitively against "t1"/"t2",
            optionally followed by "w"), searched in the file name.

    Raises:
        ValueError: Two files claim the same subject and modality, or the
            pattern lacks the named groups.
    """
    regex = re.compile(pattern)
    if not {"id", "modality"} <= set(regex.groupindex):
        raise ValueError(f"pattern {pattern!r}: expected named groups 'id' and 'modality'")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(map(Path, files)):
        match = regex.search(path.name)
        if not match:
            continue
        modality = "t1" if match["modality"].lower().startswith("t1") else "t2"
        slot = found.setdefault(match["id"], {})
        if modality in slot:
            raise ValueError(f"duplicate subject {match['id']!r} {modality.upper()}: "
                             f"{slot[modality]} and {path}")
        slot[modality] = path
    pairs = {sid: (m["t1"], m["t2"]) for sid, m in found.items() if len(m) == 2}
    return Pairing(pairs,
                   missing_t2=sorted(s for s, m in found.items() if "t2" not in m),
                   missing_t1=sorted(s for s, m in found.items() if "t1" not in m))


def pairing_pattern(name: str) -> str:
    """A pairing pattern from a setting: ``""`` or ``"folder"`` (:data:`FOLDER_PATTERN`),
    ``"ixi"`` (:data:`IXI_PATTERN`), or a regular expression as it is."""
    return {"": FOLDER_PATTERN, "folder": FOLDER_PATTERN, "ixi": IXI_PATTERN}.get(name, name)


def find_pairs(folder, pattern: str = FOLDER_PATTERN) -> Pairing:
    """Pair all NIfTI files below ``folder`` (recursively) by subject ID (``pattern``: a
    regular expression, or a name :func:`pairing_pattern` knows)."""
    pattern = pairing_pattern(pattern)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}")
    files = [p for p in folder.rglob("*") if p.name.endswith((".nii", ".nii.gz"))]
    if not files:
        raise FileNotFoundError(f"{folder}: expected .nii or .nii.gz files, found none")
    pairing = pair_subjects(files, pattern)
    if not pairing.pairs:
        raise ValueError(f"{folder}: no subject has both a T1 and a T2 file matching "
                         f"{pattern!r} ({pairing.report()})")
    return pairing
