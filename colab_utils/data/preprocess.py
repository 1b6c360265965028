"""Preprocessing: registered, normalised axial slices in a sharded slice store.

Per subject (in parallel worker processes, each subject independent):

1. load T1 and T2 (RAS+), register T2 → T1 (rigid) and T1 → MNI152 (affine),
   resample both into template space (1 mm, 197 × 233 × 189);
2. clip intensities to percentiles inside the template's brain mask, scale
   to [0, 1], zero outside the mask;
3. take axial slices (the article's single slice, a range, or every slice
   with enough brain), padded/cropped to ``size`` × ``size``;
4. record quality numbers and write a QC montage; write ``subjects/ID.npz``
   atomically.

Then the subjects are split by subject (train/val/test, no subject in two
splits) and the store is assembled::

    STORE/preprocess.json      the settings (a re-run with others is refused)
    STORE/index.csv            split, subject, slice, modality, shard, row
    STORE/qc.csv, STORE/qc/ID.png
    STORE/template_mask.npz    the brain mask of every axial slice (size × size)
    STORE/train/shard-000.npz  arrays t1 (N, size, size), t2 (M, size, size)
    STORE/subjects/ID.npz      per-subject results (what makes re-runs resumable)

Re-running skips subjects already done. Memory stays flat in the number of
subjects: only one subject per worker is in memory, and shards are written
one at a time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes
from ..validation import check_choice
from .nifti import load_volume

SLICE_MODES = ("seed", "range", "brain")


@dataclass
class PreprocessConfig:
    """Settings of a preprocessing run.

    ``seed_slice`` 120 is the axial slice of the article this project follows;
    in the MNI152 template grid it lies at z = +48 mm (centrum semiovale).
    """

    slices: str = "seed"
    seed_slice: int = 120
    slice_range: tuple[int, int] = (40, 150)
    min_brain_fraction: float = 0.25
    size: int = 256
    clip_low: float = 0.5
    clip_high: float = 99.5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    unpaired: bool = False
    shard_size: int = 512
    qc_outlier_correlation: float = 0.6

    def validated(self) -> "PreprocessConfig":
        check_choice("slices", self.slices, SLICE_MODES)
        if not 0 <= self.clip_low < self.clip_high <= 100:
            raise ValueError("clip_low/clip_high: expected 0 <= low < high <= 100, got "
                             f"{self.clip_low}, {self.clip_high}")
        if self.val_fraction < 0 or self.test_fraction < 0 or \
                self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction: expected non-negative and < 1, got "
                             f"{self.val_fraction} + {self.test_fraction}")
        if self.size < 32 or self.size % 4:
            raise ValueError(f"size: expected a multiple of 4 >= 32, got {self.size}")
        lo, hi = self.slice_range
        if not 0 <= lo < hi:
            raise ValueError(f"slice_range: expected 0 <= start < stop, got {self.slice_range}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size: expected >= 1, got {self.shard_size}")
        return self

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["slice_range"] = list(self.slice_range)
        return values


def _atomic_savez(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def to_slice(plane: np.ndarray, size: int) -> np.ndarray:
    """An axial plane (x, y) of a RAS volume as an image: anterior up, left-right across,
    centred and padded/cropped to ``size`` × ``size``."""
    image = np.flipud(plane.T)
    out = np.zeros((size, size), np.float32)
    rows, cols = image.shape
    src_r, dst_r = max((rows - size) // 2, 0), max((size - rows) // 2, 0)
    src_c, dst_c = max((cols - size) // 2, 0), max((size - cols) // 2, 0)
    n_r, n_c = min(rows, size), min(cols, size)
    out[dst_r:dst_r + n_r, dst_c:dst_c + n_c] = image[src_r:src_r + n_r, src_c:src_c + n_c]
    return out


def from_slice(image: np.ndarray, plane_shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`to_slice`: a ``size`` × ``size`` image back to an axial
    plane of shape ``plane_shape`` (x, y); what padding added is dropped, what
    cropping removed is zero."""
    size = image.shape[0]
    rows, cols = plane_shape[1], plane_shape[0]
    src_r, dst_r = max((rows - size) // 2, 0), max((size - rows) // 2, 0)
    src_c, dst_c = max((cols - size) // 2, 0), max((size - cols) // 2, 0)
    n_r, n_c = min(rows, size), min(cols, size)
    out = np.zeros((rows, cols), np.float32)
    out[src_r:src_r + n_r, src_c:src_c + n_c] = image[dst_r:dst_r + n_r, dst_c:dst_c + n_c]
    return np.flipud(out).T


def normalise(volume: np.ndarray, mask: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the ``low``/``high`` percentiles inside ``mask``, scale to [0, 1], zero outside."""
    inside = volume[mask]
    lo, hi = np.percentile(inside, [low, high])
    if hi <= lo:
        raise ValueError(f"expected varying intensities inside the brain mask, got a constant "
                         f"{lo:.4g}")
    out = np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out[~mask] = 0.0
    return out


def select_slices(mask: np.ndarray, config: PreprocessConfig) -> list[int]:
    """Axial slice indices (template grid) for the configured mode."""
    depth = mask.shape[2]
    if config.slices == "seed":
        if not 0 <= config.seed_slice < depth:
            raise ValueError(f"seed_slice: expected 0..{depth - 1}, got {config.seed_slice}")
        return [config.seed_slice]
    if config.slices == "range":
        return list(range(config.slice_range[0], min(config.slice_range[1], depth)))
    area = mask.sum(axis=(0, 1))
    return [int(k) for k in np.flatnonzero(area >= config.min_brain_fraction * area.max())]


def register_subject(t1_path, t2_path):
    """Load a subject's T1 and T2 and bring both into MNI152 template space.

    Returns:
        ``(t1, t2, quality)``: float32 volumes on the template grid (not yet
        normalised) and a dict of quality numbers.
    """
    import SimpleITK as sitk

    from . import registration as reg

    template, mask, template_affine = reg.mni_template()
    t1, t1_affine = load_volume(t1_path)
    t2, t2_affine = load_volume(t2_path)
    for path, volume in ((t1_path, t1), (t2_path, t2)):
        if volume.max() <= volume.min():  # registration cannot align a flat image
            raise ValueError(f"{path}: expected an image with varying intensities, got a "
                             f"constant volume (every voxel {float(volume.min()):.4g})")
    fixed_template = reg.to_sitk(template, template_affine)
    t1_image, t2_image = reg.to_sitk(t1, t1_affine), reg.to_sitk(t2, t2_affine)
    t2_to_t1 = reg.register_rigid(t1_image, t2_image)           # T1 point -> T2 point
    t1_to_template = reg.register_affine(fixed_template, t1_image)  # template -> T1
    # ITK composite transforms apply the last-added transform first:
    # template point -> T1 point -> T2 point.
    template_to_t2 = sitk.CompositeTransform([t2_to_t1.transform, t1_to_template.transform])
    t1_in_template, _ = reg.from_sitk(reg.resample(t1_image, fixed_template,
                                                   t1_to_template.transform))
    t2_in_template, _ = reg.from_sitk(reg.resample(t2_image, fixed_template, template_to_t2))
    quality = {
        "metric_t2_to_t1": t2_to_t1.metric,
        "metric_t1_to_template": t1_to_template.metric,
        "corr_t1_template": reg.masked_correlation(t1_in_template, template, mask),
    }
    return t1_in_template, t2_in_template, quality


def qc_montage(t1: np.ndarray, t2: np.ndarray, mask: np.ndarray, title: str):
    """Axial, coronal and sagittal mid-planes of registered T1 and T2 with the mask outline."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=80)
    axes = fig.subplots(2, 3)
    centre = [s // 2 for s in mask.shape]
    for row, (name, volume) in enumerate((("T1", t1), ("T2", t2))):
        planes = (volume[:, :, centre[2] + 20], volume[:, centre[1], :], volume[centre[0], :, :])
        outlines = (mask[:, :, centre[2] + 20], mask[:, centre[1], :], mask[centre[0], :, :])
        for col, (plane, outline) in enumerate(zip(planes, outlines)):
            ax = axes[row, col]
            ax.imshow(np.flipud(plane.T), cmap="gray", vmin=0, vmax=1)
            ax.contour(np.flipud(outline.T).astype(float), levels=[0.5], colors="r",
                       linewidths=0.5)
            ax.set_axis_off()
            ax.set_title(f"{name} {('axial', 'coronal', 'sagittal')[col]}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def process_subject(subject: str, t1_path, t2_path, store, config: PreprocessConfig) -> dict:
    """Register, normalise and slice one subject; write ``subjects/ID.npz`` and its QC PNG."""
    from .registration import mni_template

    store = Path(store)
    started = time.perf_counter()
    t1, t2, quality = register_subject(t1_path, t2_path)
    _, mask, _ = mni_template()
    t1 = normalise(t1, mask, config.clip_low, config.clip_high)
    t2 = normalise(t2, mask, config.clip_low, config.clip_high)
    flagged = quality["corr_t1_template"] < config.qc_outlier_correlation
    fig = qc_montage(t1, t2, mask, f"{subject}: corr(T1, template) = "
                     f"{quality['corr_t1_template']:.3f}" + ("  OUTLIER" if flagged else ""))
    (store / "qc").mkdir(exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    (store / "qc" / f"{subject}.png").write_bytes(buffer.getvalue())
    zs = select_slices(mask, config)
    record = {"subject": subject, "t1": str(t1_path), "t2": str(t2_path), **quality,
              "outlier": bool(flagged), "n_slices": len(zs),
              "seconds": round(time.perf_counter() - started, 2)}
    _atomic_savez(store / "subjects" / f"{subject}.npz",
                  t1=np.stack([to_slice(t1[:, :, k], config.size) for k in zs]),
                  t2=np.stack([to_slice(t2[:, :, k], config.size) for k in zs]),
                  slices=np.asarray(zs, np.int32), record=json.dumps(record))
    return record


def split_subjects(subjects, config: PreprocessConfig) -> dict[str, str]:
    """Deterministic subject-level split: ``{subject: "train" | "val" | "test"}``."""
    ordered = sorted(subjects)
    rng = np.random.default_rng(config.split_seed)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    n = len(shuffled)
    n_test = int(round(config.test_fraction * n)) if n >= 3 else 0
    n_val = int(round(config.val_fraction * n)) if n >= 3 else 0
    if config.test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    if config.val_fraction > 0 and n >= 3:
        n_val = max(n_val, 1)
    assignment = {}
    for i, subject in enumerate(shuffled):
        assignment[subject] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _subject_done(store: Path, subject: str) -> dict | None:
    path = store / "subjects" / f"{subject}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["record"]))
    except Exception:  # a damaged file is redone, never used
        return None


def preprocess(pairs: dict, store, config: PreprocessConfig | None = None, *,
               workers: int = 2, log=print) -> Path:
    """Preprocess subject pairs into a slice store (resumable).

    Args:
        pairs: ``{subject_id: (t1_path, t2_path)}`` (e.g. ``find_pairs(...).pairs``).
        store: Output directory.
        config: Settings (defaults: the article's single slice, 256 px).
        workers: Worker processes for subjects.
        log: Progress output.

    Returns:
        The store directory.

    Raises:
        ValueError: Settings differ from the store's, or no subject could be
            processed.
    """
    config = (config or PreprocessConfig()).validated()
    store = Path(store)
    (store / "subjects").mkdir(parents=True, exist_ok=True)
    _check_settings(store, config)
    todo = {s: p for s, p in sorted(pairs.items()) if _subject_done(store, s) is None}
    log(f"[preprocess] {len(pairs)} subjects, {len(pairs) - len(todo)} already done, "
        f"{len(todo)} to do with {workers} worker(s)")
    failures = {}
    if todo:
        # One ITK thread per subject: a multi-threaded registration metric sums its
        # partial results in a scheduling-dependent order, and the result would then
        # depend on the number of workers (a run resumed with other --workers would
        # not equal an uninterrupted one). Parallelism comes from the workers.
        threads = 1
        # Workers are replaced every 16 subjects, so that whatever a long run
        # accumulates (allocator fragmentation, library caches) stays bounded.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,),
                                 max_tasks_per_child=16) as pool:
            futures = {s: pool.submit(process_subject, s, t1, t2, store, config)
                       for s, (t1, t2) in todo.items()}
            for subject, future in futures.items():
                try:
                    record = future.result()
                    log(f"[preprocess] {subject}: {record['seconds']} s, corr "
                        f"{record['corr_t1_template']:.3f}"
                        + (" OUTLIER" if record["outlier"] else ""))
                except (ValueError, FileNotFoundError, RuntimeError) as err:
                    failures[subject] = str(err)
                    log(f"[preprocess] {subject}: skipped: {err}")
    done = {s: r for s in pairs if (r := _subject_done(store, s)) is not None}
    if not done:
        raise ValueError(f"{store}: no subject could be preprocessed ({failures})")
    assemble(store, sorted(done), config, done, failures)
    log(f"[preprocess] slice store written to {store}")
    return store


def _check_settings(store: Path, config: PreprocessConfig) -> None:
    path = store / "preprocess.json"
    if path.is_file():
        saved = json.loads(path.read_text()).get("config", {})
        if saved != config.to_dict():
            changed = sorted(k for k in config.to_dict() if saved.get(k) != config.to_dict()[k])
            raise ValueError(f"{path}: this store was made with other settings ({changed}); "
                             "use the same settings or a new store directory")
    path.write_text(json.dumps({"config": config.to_dict()}, indent=2) + "\n")


def assemble(store: Path, subjects: list[str], config: PreprocessConfig, records: dict,
             failures: dict) -> None:
    """Split subjects and write the shards, ``index.csv``, ``qc.csv`` and the mask."""
    from .registration import mni_template

    _, mask, _ = mni_template()
    _atomic_savez(store / "template_mask.npz",
                  mask=np.stack([to_slice(mask[:, :, k].astype(np.float32), config.size)
                                 for k in range(mask.shape[2])]) > 0.5)
    assignment = split_subjects(subjects, config)
    rows = []
    for split in ("train", "val", "test"):
        members = [s for s in subjects if assignment[s] == split]
        # Strictly unpaired training: T1 from one half of the subjects, T2 from the other.
        use = {s: ("t1", "t2") for s in members}
        if config.unpaired and split == "train":
            use = {s: (("t1",) if i % 2 == 0 else ("t2",)) for i, s in enumerate(members)}
        rows += _write_split(store, split, members, use, config.shard_size)
    with open(store / ".index.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, ["split", "subject", "slice", "modality", "shard", "row"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(store / ".index.csv.tmp", store / "index.csv")
    flag_outliers(records)
    fields = ["subject", "split", "corr_t1_template", "metric_t1_to_template",
              "metric_t2_to_t1", "outlier", "n_slices", "seconds", "t1", "t2"]
    with open(store / ".qc.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fields + ["error"], extrasaction="ignore")
        writer.writeheader()
        for s in subjects:
            writer.writerow({**records[s], "split": assignment[s]})
        for s, error in sorted(failures.items()):
            writer.writerow({"subject": s, "error": error})
    os.replace(store / ".qc.csv.tmp", store / "qc.csv")
    meta = json.loads((store / "preprocess.json").read_text())
    meta["splits"] = {k: sorted(s for s in subjects if assignment[s] == k)
                      for k in ("train", "val", "test")}
    meta["paired"] = {"train": not config.unpaired, "val": True, "test": True}
    (store / "preprocess.json").write_text(json.dumps(meta, indent=2) + "\n")


def flag_outliers(records: dict, *, mads: float = 4.0) -> None:
    """Mark subjects whose T1-to-template correlation is below the configured
    floor (already in ``outlier``) or far below the others' (median − 4 MAD)."""
    values = np.array([r["corr_t1_template"] for r in records.values()])
    if len(values) < 5:
        return
    median = np.median(values)
    mad = max(np.median(np.abs(values - median)), 1e-3)
    for record in records.values():
        if record["corr_t1_template"] < median - mads * mad:
            record["outlier"] = True


def _write_split(store: Path, split: str, members: list[str], use: dict,
                 shard_size: int) -> list[dict]:
    """Write a split's shards one at a time; return its index rows."""
    folder = store / split
    folder.mkdir(exist_ok=True)
    for old in folder.glob("shard-*.npz"):
        old.unlink()
    rows, buffers, shard = [], {"t1": [], "t2": []}, 0

    def flush():
        nonlocal shard, buffers
        if not buffers["t1"] and not buffers["t2"]:
            return
        arrays = {m: (np.stack(b) if b else np.zeros((0, 1, 1), np.float32))
                  for m, b in buffers.items()}
        _atomic_savez(folder / f"shard-{shard:03d}.npz", **arrays)
        shard, buffers = shard + 1, {"t1": [], "t2": []}

    for subject in members:
        with np.load(store / "subjects" / f"{subject}.npz", allow_pickle=False) as data:
            volumes = {m: data[m] for m in use[subject]}
            zs = data["slices"]
        for i, z in enumerate(zs):
            if max(len(b) for b in buffers.values()) >= shard_size:
                flush()
            for modality, images in volumes.items():
                rows.append({"split": split, "subject": subject, "slice": int(z),
                             "modality": modality, "shard": shard,
                             "row": len(buffers[modality])})
                buffers[modality].append(images[i])
    flush()
    return rows
