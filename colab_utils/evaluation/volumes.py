"""Whole volumes: what ``synthesize`` gives a user, measured against the real scan.

Slice evaluation (:mod:`colab_utils.evaluation`) scores the stored axial slices at
the model's size. Here each subject of a split is translated as a user gets it:
every axial plane of the brain (not only the store's slice range), at the
store's full resolution (the 1 mm template grid), stacked into a volume, and

* **template space**: the metrics of :mod:`colab_utils.metrics` on every axial,
  coronal and sagittal plane inside the brain mask (coronal and sagittal planes
  cut across the translated slices: through-plane consistency), and the
  slice-to-slice **flicker** (:func:`colab_utils.metrics.flicker`);
* **native space**: the synthetic volume resampled onto the source scan's own
  grid, as ``synthesize`` writes it, against the real target brought rigidly
  into that grid (T2 → T1 is the preprocessing's rigid registration), inside the
  brain mask pulled back to that grid.

The reference volumes of a subject (its registered, normalised T1, T2 and
mask, and what the native scoring needs) are computed once from the files the
store recorded and cached as ``STORE/volumes/SUBJECT.npz``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DIRECTIONS
from ..fileio import atomic_write_bytes
from ..metrics import METRICS, flicker, plane_metrics

PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))
CACHE_VERSION = 1
# Voxels kept around the brain's bounding box when scoring: more than the SSIM
# window's radius, so the crop changes no value.
_MARGIN = 8


@dataclass
class NativeGrid:
    """The source scan's grid for one direction, and the real target on it."""

    geometry: dict           # size, spacing, origin, direction of the SimpleITK image
    to_template: np.ndarray  # (3, 4) affine: source LPS point -> template LPS point
    target: np.ndarray       # the real target on the source grid (RAS, [0, 1])
    mask: np.ndarray         # the brain on the source grid

    def image(self):
        """An empty SimpleITK image with this grid (a resampling reference)."""
        import SimpleITK as sitk

        image = sitk.Image([int(n) for n in self.geometry["size"]], sitk.sitkFloat32)
        image.SetSpacing([float(v) for v in self.geometry["spacing"]])
        image.SetOrigin([float(v) for v in self.geometry["origin"]])
        image.SetDirection([float(v) for v in self.geometry["direction"]])
        return image

    def transform(self):
        import SimpleITK as sitk

        transform = sitk.AffineTransform(3)
        transform.SetMatrix(self.to_template[:, :3].ravel().tolist())
        transform.SetTranslation(self.to_template[:, 3].tolist())
        return transform


@dataclass
class SubjectVolumes:
    """One subject's reference volumes: template-space T1, T2 and brain mask on the
    [0, 1] scale of the slice store, and the native grid of each direction's source."""

    subject: str
    t1: np.ndarray
    t2: np.ndarray
    mask: np.ndarray
    native: dict

    def volume(self, contrast: str) -> np.ndarray:
        return self.t1 if contrast == "t1" else self.t2


def flatten_affine(transform) -> np.ndarray:
    """A (3, 4) matrix ``[A | t]`` with ``transform(p) = A p + t``, for any affine ITK
    transform (composites included), fitted through four points."""
    points = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], np.float64)
    moved = np.array([transform.TransformPoint(tuple(p)) for p in points])
    linear = (moved[1:] - moved[0]).T / 100.0
    return np.concatenate([linear, moved[0][:, None]], axis=1)


def _geometry(image) -> dict:
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def build_reference(t1_path, t2_path, *, clip_low: float, clip_high: float,
                    subject: str = "") -> SubjectVolumes:
    """Register and normalise a subject as preprocessing does, keeping what native
    scoring needs (see the module's docstring)."""
    from ..data import registration as reg
    from ..data.preprocess import clip_range, register_into_template
    from ..data.template import mni_template

    t1, t2, mask, pair = register_into_template(t1_path, t2_path)
    _, _, affine = mni_template()
    ranges = {"t1": clip_range(t1, mask, clip_low, clip_high),
              "t2": clip_range(t2, mask, clip_low, clip_high)}

    def scaled(volume, contrast, inside):
        lo, hi = ranges[contrast]
        out = np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        return np.where(inside, out, 0.0).astype(np.float32)

    template_mask = reg.to_sitk(mask.astype(np.float32), affine)
    template_to = {"t1": pair.t1_to_template.transform, "t2": pair.template_to_t2}
    images = {"t1": pair.t1_image, "t2": pair.t2_image}
    # Source point -> target point, for the real target on the source's grid.
    source_to_target = {"t1": pair.t2_to_t1.transform, "t2": pair.t2_to_t1.transform.GetInverse()}
    native = {}
    for direction in DIRECTIONS:
        source, target = direction.split("_to_")
        to_template = template_to[source].GetInverse()
        inside, _ = reg.from_sitk(reg.resample(template_mask, images[source], to_template))
        inside = inside > 0.5
        real, _ = reg.from_sitk(reg.resample(images[target], images[source],
                                             source_to_target[source]))
        native[direction] = NativeGrid(_geometry(images[source]), flatten_affine(to_template),
                                       scaled(real, target, inside), inside)
    return SubjectVolumes(subject, scaled(t1, "t1", mask), scaled(t2, "t2", mask), mask,
                          native)


def _cache_path(store, subject: str) -> Path:
    return Path(store) / "volumes" / f"{subject}.npz"


def _save(path: Path, volumes: SubjectVolumes, record: dict) -> None:
    arrays = {"t1": volumes.t1.astype(np.float16), "t2": volumes.t2.astype(np.float16),
              "mask": volumes.mask, "record": json.dumps(record)}
    for direction, grid in volumes.native.items():
        arrays[f"{direction}_target"] = grid.target.astype(np.float16)
        arrays[f"{direction}_mask"] = grid.mask
        arrays[f"{direction}_to_template"] = grid.to_template
        arrays[f"{direction}_geometry"] = json.dumps(grid.geometry)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path, subject: str, record: dict) -> SubjectVolumes | None:
    """The cached volumes, or ``None`` when missing or made from other files/settings."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if json.loads(str(data["record"])) != record:
                return None
            native = {d: NativeGrid(json.loads(str(data[f"{d}_geometry"])),
                                    data[f"{d}_to_template"],
                                    data[f"{d}_target"].astype(np.float32), data[f"{d}_mask"])
                      for d in DIRECTIONS}
            return SubjectVolumes(subject, data["t1"].astype(np.float32),
                                  data["t2"].astype(np.float32), data["mask"], native)
    except (OSError, ValueError, KeyError):
        return None  # unreadable (an interrupted write is never committed): rebuild


def store_subject_files(store, subject: str) -> tuple[Path, Path]:
    """The T1 and T2 files a store made a subject from (its per-subject record)."""
    path = Path(store) / "subjects" / f"{subject}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: subject {subject!r} is not in the slice store "
                                f"{store}")
    with np.load(path) as data:
        record = json.loads(str(data["record"]))
    files = Path(record["t1"]), Path(record["t2"])
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: volume evaluation of {subject} needs the scan the store was made "
                f"from (recorded in {path}); it is no longer there. Put it back or "
                "preprocess again from where the scans are now")
    return files


def _cache_record(store, subject: str, clip_low: float, clip_high: float) -> dict:
    """What a subject's cached volumes must have been made from to be used."""
    t1_path, t2_path = store_subject_files(store, subject)
    return {"version": CACHE_VERSION, "t1": str(t1_path), "t2": str(t2_path),
            "clip_low": clip_low, "clip_high": clip_high}


def _is_cached(path: Path, record: dict) -> bool:
    """Whether ``path`` holds volumes made from ``record`` (reads only the record)."""
    try:
        with np.load(path) as data:
            return json.loads(str(data["record"])) == record
    except (OSError, ValueError, KeyError):
        return False


def subject_volumes(store, subject: str, *, clip_low: float, clip_high: float
                    ) -> SubjectVolumes:
    """A subject's reference volumes, from the cache or computed (and cached)."""
    record = _cache_record(store, subject, clip_low, clip_high)
    t1_path, t2_path = record["t1"], record["t2"]
    path = _cache_path(store, subject)
    volumes = _load(path, subject, record)
    if volumes is None:
        volumes = build_reference(t1_path, t2_path, clip_low=clip_low, clip_high=clip_high,
                                  subject=subject)
        _save(path, volumes, record)
    return volumes


def prepare_subjects(store, subjects, *, clip_low: float, clip_high: float,
                     workers: int = 2) -> None:
    """Compute and cache the reference volumes of ``subjects`` that are not cached yet,
    ``workers`` subjects at a time in separate processes (one ITK thread each, as in
    preprocessing)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ..data.preprocess import _init_worker

    missing = [s for s in subjects if not _is_cached(
        _cache_path(store, s), _cache_record(store, s, clip_low, clip_high))]
    if len(missing) < 2 or workers < 2:
        return  # computed one by one where they are needed
    with ProcessPoolExecutor(max_workers=min(workers, len(missing)),
                             mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(1,)) as pool:
        for future in [pool.submit(_cache_subject, str(store), s, clip_low, clip_high)
                       for s in missing]:
            future.result()


def _cache_subject(store: str, subject: str, clip_low: float, clip_high: float) -> None:
    subject_volumes(store, subject, clip_low=clip_low, clip_high=clip_high)


def _crop(mask: np.ndarray) -> tuple[slice, ...]:
    """The brain's bounding box with :data:`_MARGIN` voxels around it."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(hits[0] - _MARGIN, 0), hits[-1] + _MARGIN + 1))
    return tuple(box)


def score_volume(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray, *,
                 plane_step: int = 1) -> dict:
    """Template-space scores of a synthetic volume: each metric on axial, coronal and
    sagittal planes (``axial_ssim``, ...; every ``plane_step``-th plane) and the flicker
    across axial planes (all of them)."""
    box = _crop(mask)
    reference, estimate, mask = reference[box], estimate[box], mask[box]
    row = {}
    for plane, axis in PLANES:
        scores = plane_metrics(reference, estimate, mask, axis=axis, step=plane_step)
        row.update({f"{plane}_{metric}": scores[metric] for metric in METRICS})
        row[f"{plane}_planes"] = scores["n_planes"]
    row.update(flicker(reference, estimate, mask, axis=2))
    return row


def score_native(grid: NativeGrid, synthetic_template: np.ndarray, template_mask: np.ndarray,
                 template_affine: np.ndarray, *, plane_step: int = 1) -> dict:
    """Native-space scores: the synthetic volume on the source's grid (as ``synthesize``
    writes it) against the real target there, on the grid's axial planes."""
    from .synthesis import to_grid

    synthetic = to_grid(synthetic_template, template_mask, template_affine, grid.image(),
                        grid.transform())
    box = _crop(grid.mask)
    scores = plane_metrics(grid.target[box], synthetic[box], grid.mask[box], axis=2,
                           step=plane_step)
    return {**{f"native_{metric}": scores[metric] for metric in METRICS},
            "native_planes": scores["n_planes"]}


def score_subject(method, volumes: SubjectVolumes, direction: str, *, slice_size: int,
                  batch_size: int = 16, plane_step: int = 1) -> tuple[dict, np.ndarray]:
    """Translate a subject's source volume with ``method`` and score it (plane metrics on
    every ``plane_step``-th plane); returns the row and the synthetic template-space
    volume."""
    from ..data.template import mni_template
    from .synthesis import translate_volume

    source, target = direction.split("_to_")
    synthetic = translate_volume(
        lambda images, masks: method.translate(images, masks, direction=direction),
        volumes.volume(source), volumes.mask, image_size=method.image_size or slice_size,
        slice_size=slice_size, batch_size=batch_size, context=method.context)
    row = {"direction": direction, "subject": volumes.subject,
           **score_volume(volumes.volume(target), synthetic, volumes.mask,
                          plane_step=plane_step)}
    _, _, affine = mni_template()
    row.update(score_native(volumes.native[direction], synthetic, volumes.mask, affine,
                            plane_step=plane_step))
    return row, synthetic


VOLUME_COLUMNS = tuple(f"{plane}_{metric}" for plane, _ in PLANES for metric in METRICS) + (
    "flicker", "flicker_ratio") + tuple(f"native_{metric}" for metric in METRICS)
