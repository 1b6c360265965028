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
mask, and what the native scoring needs) are made from the scans and the
transforms the store recorded when it registered them (scans of stores made
before transforms were recorded are registered again, single-threaded, so the
result does not depend on scheduling), and cached in the store
(:meth:`colab_utils.data.store.SliceStore.volume_file`). They are stored as
float16 and used as such, whether just computed or read from the cache: every
method of a pipeline is scored against the same reference.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DIRECTIONS
from ..data.store import SliceStore
from ..fileio import atomic_write_bytes, write_csv
from ..log import get_logger, progress
from ..metrics import METRICS, flicker, plane_metrics
from .tables import LABELS

logger = get_logger(__name__)

PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))
CACHE_VERSION = 2
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


def _geometry(image) -> dict:
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def _as_stored(volume: np.ndarray) -> np.ndarray:
    """A [0, 1] volume as the cache stores it (float16), back in float32."""
    return volume.astype(np.float16).astype(np.float32)


def build_reference(t1_path, t2_path, *, clip_low: float, clip_high: float, subject: str = "",
                    transforms: dict | None = None) -> SubjectVolumes:
    """Bring a subject into template space and normalise it as preprocessing did (with
    its recorded ``transforms``, or registering it again), keeping what native scoring
    needs (see the module's docstring)."""
    from ..data import registration as reg
    from ..data.intensity import clip_range, to_unit
    from ..data.preprocess import register_into_template
    from ..data.template import mni_template

    t1, t2, mask, pair = register_into_template(t1_path, t2_path, transforms)
    _, _, affine = mni_template()
    ranges = {"t1": clip_range(t1, mask, clip_low, clip_high),
              "t2": clip_range(t2, mask, clip_low, clip_high)}

    def scaled(volume, contrast, inside):
        return _as_stored(to_unit(volume, *ranges[contrast], inside))

    template_mask = reg.to_sitk(mask.astype(np.float32), affine)
    template_to = {"t1": pair.t1_to_template.transform, "t2": pair.template_to_t2}
    images = {"t1": pair.t1_image, "t2": pair.t2_image}
    # Source point -> target point, for the real target on the source's grid.
    source_to_target = {"t1": pair.t2_to_t1.transform,
                        "t2": pair.t2_to_t1.transform.GetInverse()}
    native = {}
    for direction in DIRECTIONS:
        source, target = direction.split("_to_")
        to_template = template_to[source].GetInverse()
        inside, _ = reg.from_sitk(reg.resample(template_mask, images[source], to_template))
        inside = inside > 0.5
        real, _ = reg.from_sitk(reg.resample(images[target], images[source],
                                             source_to_target[source]))
        native[direction] = NativeGrid(_geometry(images[source]),
                                       reg.flatten_affine(to_template),
                                       scaled(real, target, inside), inside)
    return SubjectVolumes(subject, scaled(t1, "t1", mask), scaled(t2, "t2", mask), mask,
                          native)


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
    if not _is_cached(path, record):
        return None
    try:
        with np.load(path) as data:
            native = {d: NativeGrid(json.loads(str(data[f"{d}_geometry"])),
                                    data[f"{d}_to_template"],
                                    data[f"{d}_target"].astype(np.float32), data[f"{d}_mask"])
                      for d in DIRECTIONS}
            return SubjectVolumes(subject, data["t1"].astype(np.float32),
                                  data["t2"].astype(np.float32), data["mask"], native)
    except (OSError, ValueError, KeyError):
        return None  # unreadable (an interrupted write is never committed): rebuild


def _cache_record(store: SliceStore, subject: str) -> dict:
    """What a subject's cached volumes must have been made from to be used."""
    t1_path, t2_path = store.subject_scans(subject)
    settings = store.settings()
    return {"version": CACHE_VERSION, "t1": str(t1_path), "t2": str(t2_path),
            "clip_low": settings["clip_low"], "clip_high": settings["clip_high"],
            "transforms": (store.subject_record(subject) or {}).get("transforms")}


def _is_cached(path: Path, record: dict) -> bool:
    """Whether ``path`` holds volumes made from ``record`` (reads only the record)."""
    try:
        with np.load(path) as data:
            return json.loads(str(data["record"])) == record
    except (OSError, ValueError, KeyError):
        return False


def subject_volumes(store, subject: str) -> SubjectVolumes:
    """A subject's reference volumes, from the store's cache or computed (and cached).

    Raises:
        FileNotFoundError: The subject is not in the store, or its scans are gone.
        ValueError: The store records no settings (not made by ``preprocess``).
    """
    store = SliceStore(store)
    if not store.settings():
        raise ValueError(f"{store.path}: volume evaluation needs a slice store made by "
                         "`preprocess` (its settings and the scans it records)")
    record = _cache_record(store, subject)
    path = store.volume_file(subject)
    volumes = _load(path, subject, record)
    if volumes is None:
        with _single_itk_thread():
            volumes = build_reference(record["t1"], record["t2"], clip_low=record["clip_low"],
                                      clip_high=record["clip_high"], subject=subject,
                                      transforms=record["transforms"])
        _save(path, volumes, record)
    return volumes


class _single_itk_thread:
    """SimpleITK on one thread inside the block (a registration's result then does not
    depend on scheduling), as preprocessing's workers run."""

    def __enter__(self):
        import SimpleITK as sitk

        self.before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

    def __exit__(self, *exc):
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.before)


def prepare_subjects(store, subjects, *, workers: int = 2) -> None:
    """Compute and cache the reference volumes of ``subjects`` that are not cached yet,
    ``workers`` subjects at a time in separate processes."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ..data.preprocess import init_worker

    store = SliceStore(store)
    missing = [s for s in subjects
               if not _is_cached(store.volume_file(s), _cache_record(store, s))]
    if len(missing) < 2 or workers < 2:
        return  # computed one by one where they are needed
    with ProcessPoolExecutor(max_workers=min(workers, len(missing)),
                             mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(1,)) as pool:
        for future in [pool.submit(subject_volumes, str(store.path), s) for s in missing]:
            future.result()


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
    row.update(whole_volume(reference, estimate, mask))
    return row


def whole_volume(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> dict:
    """MAE, PSNR and mutual information over every brain voxel of the volume at once
    (``volume_*``): the voxel-wise figures papers report per volume, beside the plane
    means (a plane mean weighs a small edge plane as much as a central one, and its
    PSNR averages logarithms)."""
    from ..metrics import mae, mutual_information, psnr

    ref, est = reference[mask][:, None], estimate[mask][:, None]
    return {"volume_mae": mae(ref, est), "volume_psnr": psnr(ref, est),
            "volume_mi": mutual_information(ref, est)}


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
    synthetic = translate_volume(method, direction, volumes.volume(source), volumes.mask,
                                 slice_size=slice_size, batch_size=batch_size)
    row = {"direction": direction, "subject": volumes.subject,
           **score_volume(volumes.volume(target), synthetic, volumes.mask,
                          plane_step=plane_step)}
    _, _, affine = mni_template()
    row.update(score_native(volumes.native[direction], synthetic, volumes.mask, affine,
                            plane_step=plane_step))
    return row, synthetic


VOLUME_COLUMNS = tuple(f"{plane}_{metric}" for plane, _ in PLANES for metric in METRICS) + (
    "flicker", "flicker_ratio", "volume_mae", "volume_psnr", "volume_mi") + tuple(
    f"native_{metric}" for metric in METRICS)


def evaluate_volumes(method, store, subjects: list[str], directory, *,
                     plane_step: int = 1) -> list[dict]:
    """Translate and score each subject's whole volume in both directions
    (:func:`score_subject`); writes ``volumes.csv`` and ``volumes.md`` to ``directory``
    and returns the rows."""
    store = SliceStore(store)
    settings = store.settings()
    if not settings:
        raise ValueError(f"{store.path}: volume evaluation needs a slice store made by "
                         "`preprocess` (its settings and the scans it records)")
    prepare_subjects(store, subjects, workers=settings.get("workers", 2))
    rows = []
    for subject in progress(subjects, desc=f"{method.name} volumes", unit="subject"):
        volumes = subject_volumes(store, subject)
        for direction in method.translators:
            row, _ = score_subject(method, volumes, direction,
                                   slice_size=settings["slice_size"], plane_step=plane_step)
            rows.append(row)
    directory = Path(directory)
    write_csv(directory / "volumes.csv", rows)
    atomic_write_bytes(directory / "volumes.md",
                       volumes_markdown(rows, method.name, len(subjects)).encode())
    logger.info("%s: whole volumes of %d subjects scored; %s", method.name, len(subjects),
                directory / "volumes.csv")
    return rows


def volumes_markdown(rows: list[dict], name: str, n_subjects: int) -> str:
    """One method's whole-volume scores per direction and plane orientation."""
    lines = [f"# {name}: whole volumes ({n_subjects} subjects)", "",
             "Mean over subjects of each subject's mean over planes inside the brain mask; "
             "native: on the source scan's own grid. Flicker: the error of the change from "
             "one axial plane to the next (ratio: over the real change; 0 is perfect).", ""]
    for direction in DIRECTIONS:
        mine = [r for r in rows if r["direction"] == direction]
        if not mine:
            continue
        lines += [f"## {LABELS[direction]}", "", "| planes | " + " | ".join(
            m.upper() for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for plane in ("axial", "coronal", "sagittal", "native"):
            lines.append(f"| {plane} | " + " | ".join(
                f"{np.mean([r[f'{plane}_{m}'] for r in mine]):.4g}" for m in METRICS) + " |")
        lines += ["", f"Flicker {np.mean([r['flicker'] for r in mine]):.4g}, ratio "
                      f"{np.mean([r['flicker_ratio'] for r in mine]):.3g}.", ""]
    return "\n".join(lines) + "\n"
