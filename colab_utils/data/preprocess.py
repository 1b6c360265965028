"""Preprocessing: registered, normalised axial slices in a sharded slice store.

Per subject (in parallel worker processes, each subject independent):

1. load T1 and T2 (RAS+); register T1 → MNI152 (affine, driven by the brain:
   :mod:`.registration`) and T2 → T1 (rigid, inside the T1's brain region);
   resample both into template space (1 mm, 197 × 233 × 189);
2. the subject's own brain mask (:mod:`.brain_mask`); clip intensities to
   percentiles inside it, scale to [0, 1], zero outside it;
3. take axial slices (the article's single slice, a range, or every slice
   with enough brain), padded/cropped to ``size`` × ``size``, with the mask;
4. record quality numbers (:mod:`.qc`) and a QC montage; write
   ``subjects/ID.npz`` atomically.

Then the subjects are split (:mod:`.splits`: stable per subject ID, or a split
file; outliers left out with ``exclude_outliers``) and the store is
assembled::

    STORE/preprocess.json      version, settings, splits (a re-run with other
                               per-subject settings is refused)
    STORE/index.csv            split, subject, slice, modality, shard, row
    STORE/qc.csv, STORE/qc/ID.png
    STORE/train/shard-000.npz  t1 (N, size, size), t2 (M, ...), t1_mask, t2_mask
    STORE/subjects/ID.npz      per-subject results (what makes re-runs resumable)

Re-running skips subjects already done; changing only the split settings
re-splits without registering anything again. Memory stays flat in the number
of subjects: one subject per worker is in memory, shards are written one at a
time.
"""

from __future__ import annotations

import csv
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..fileio import atomic_write_bytes
from . import axial
from .nifti import load_volume

STORE_VERSION = 2
# Settings that change what is computed per subject (the rest only split the store).
SUBJECT_FIELDS = ("slices", "seed_slice", "slice_range", "min_brain_fraction", "slice_size",
                  "clip_low", "clip_high")
QC_COLUMNS = ("subject", "split", "outlier", "qc_reasons", "corr_t1_template", "volume_scale",
              "rim_ratio", "mask_dice", "mask_fallback", "metric_t1_to_template",
              "metric_t2_to_t1", "start_t1_to_template", "start_t2_to_t1", "n_slices",
              "seconds", "t1", "t2")


def subject_settings(config: DataConfig) -> dict:
    """The settings a subject's slices depend on."""
    values = config.to_dict()
    return {k: values[k] for k in SUBJECT_FIELDS}


def _atomic_savez(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def clip_range(volume: np.ndarray, mask: np.ndarray, low: float, high: float):
    """The ``low``/``high`` percentiles of ``volume`` inside ``mask`` (the [0, 1] scale's
    ends)."""
    lo, hi = np.percentile(volume[mask], [low, high])
    if hi <= lo:
        raise ValueError(f"expected varying intensities inside the brain mask, got a constant "
                         f"{lo:.4g}")
    return float(lo), float(hi)


def normalise(volume: np.ndarray, mask: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to the ``low``/``high`` percentiles inside ``mask``, scale to [0, 1], zero outside."""
    lo, hi = clip_range(volume, mask, low, high)
    out = np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out[~mask] = 0.0
    return out


@dataclass
class RegisteredPair:
    """A subject's T1 and T2 as loaded (SimpleITK images) and the fitted transforms."""

    t1_image: object
    t2_image: object
    t1_to_template: object  # Registration: template point -> T1 point
    t2_to_t1: object        # Registration: T1 point -> T2 point
    mask_info: dict | None = None  # set with the brain mask (register_into_template)

    @property
    def template_to_t2(self):
        """Template point -> T2 point (ITK composites apply the last-added first)."""
        import SimpleITK as sitk

        return sitk.CompositeTransform([self.t2_to_t1.transform,
                                        self.t1_to_template.transform])


def register_pair(t1_path, t2_path) -> RegisteredPair:
    """Load a subject's T1 and T2; register T1 → MNI152 and T2 → T1 (rigid, inside the
    T1's brain region)."""
    from . import registration as reg

    t1, t1_affine = load_volume(t1_path)
    t2, t2_affine = load_volume(t2_path)
    for path, volume in ((t1_path, t1), (t2_path, t2)):
        if volume.max() <= volume.min():  # registration cannot align a flat image
            raise ValueError(f"{path}: expected an image with varying intensities, got a "
                             f"constant volume (every voxel {float(volume.min()):.4g})")
    t1_image, t2_image = reg.to_sitk(t1, t1_affine), reg.to_sitk(t2, t2_affine)
    t1_to_template = reg.register_to_template(t1_image)          # template -> T1
    t2_to_t1 = reg.register_rigid(t1_image, t2_image,            # T1 point -> T2 point
                                  fixed_mask=reg.brain_region_in(t1_image,
                                                                 t1_to_template.transform))
    return RegisteredPair(t1_image, t2_image, t1_to_template, t2_to_t1)


def register_subject(t1_path, t2_path):
    """Load a subject's T1 and T2 and bring both into MNI152 template space.

    Returns:
        ``(t1, t2, mask, quality)``: float32 volumes on the template grid (not
        yet normalised), the subject's brain mask there, and a dict of quality
        numbers (:func:`colab_utils.data.qc.quality_numbers`, the registrations'
        final metrics and winning starts).
    """
    t1_in_template, t2_in_template, mask, pair = register_into_template(t1_path, t2_path)
    from .qc import quality_numbers

    quality = quality_numbers(t1_in_template, pair.t1_to_template.volume_scale, pair.mask_info)
    quality.update({"metric_t1_to_template": round(pair.t1_to_template.metric, 4),
                    "metric_t2_to_t1": round(pair.t2_to_t1.metric, 4),
                    "start_t1_to_template": pair.t1_to_template.start,
                    "start_t2_to_t1": pair.t2_to_t1.start})
    return t1_in_template, t2_in_template, mask, quality


def register_into_template(t1_path, t2_path):
    """:func:`register_pair`, then T1, T2 and the subject's brain mask on the template grid:
    ``(t1, t2, mask, pair)`` (``pair.mask_info`` describes the mask)."""
    from . import registration as reg
    from .brain_mask import subject_brain_mask

    pair = register_pair(t1_path, t2_path)
    template, _ = reg.template_images()
    t1_in_template, _ = reg.from_sitk(reg.resample(pair.t1_image, template,
                                                   pair.t1_to_template.transform))
    t2_in_template, _ = reg.from_sitk(reg.resample(pair.t2_image, template,
                                                   pair.template_to_t2))
    mask, pair.mask_info = subject_brain_mask(t1=t1_in_template)
    return t1_in_template, t2_in_template, mask, pair


def process_subject(subject: str, t1_path, t2_path, store, config: DataConfig) -> dict:
    """Register, mask, normalise and slice one subject; write ``subjects/ID.npz`` and its
    QC montage."""
    from .qc import qc_montage
    from .template import mni_template

    store = Path(store)
    started = time.perf_counter()
    t1, t2, mask, quality = register_subject(t1_path, t2_path)
    _, template_mask, _ = mni_template()
    t1 = normalise(t1, mask, config.clip_low, config.clip_high)
    t2 = normalise(t2, mask, config.clip_low, config.clip_high)
    fig = qc_montage(t1, t2, template_mask, mask,
                     f"{subject}: corr(T1, template) {quality['corr_t1_template']:.3f}, "
                     f"volume scale {quality['volume_scale']:.2f}, rim {quality['rim_ratio']:.2f}")
    (store / "qc").mkdir(exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    (store / "qc" / f"{subject}.png").write_bytes(buffer.getvalue())
    zs = axial.select_slices(template_mask, config.slices, seed_slice=config.seed_slice,
                             slice_range=config.slice_range,
                             min_brain_fraction=config.min_brain_fraction)
    record = {"subject": subject, "t1": str(t1_path), "t2": str(t2_path), **quality,
              "n_slices": len(zs), "seconds": round(time.perf_counter() - started, 2)}
    _atomic_savez(store / "subjects" / f"{subject}.npz",
                  t1=axial.stack(t1, zs, config.slice_size),
                  t2=axial.stack(t2, zs, config.slice_size),
                  mask=axial.stack(mask, zs, config.slice_size) > 0.5,
                  slices=np.asarray(zs, np.int32), record=json.dumps(record))
    return record


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _subject_done(store: Path, subject: str) -> dict | None:
    path = store / "subjects" / f"{subject}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mask" not in data.files:  # written by a version without subject masks
                return None
            return json.loads(str(data["record"]))
    except Exception:  # a damaged file is redone, never used
        return None


def preprocess(pairs: dict, store, config: DataConfig | None = None, *,
               workers: int | None = None, log=print) -> Path:
    """Preprocess subject pairs into a slice store (resumable).

    Args:
        pairs: ``{subject_id: (t1_path, t2_path)}`` (e.g. ``find_pairs(...).pairs``).
        store: Output directory.
        config: The data settings (the preprocessing and split ones are used;
            defaults: the article's single slice, 256 px).
        workers: Worker processes for subjects (default: ``config.workers``).
        log: Progress output.

    Returns:
        The store directory.

    Raises:
        ValueError: Per-subject settings differ from the store's, the split cannot
            be made (naming why), or no subject could be processed.
    """
    config = config.validated() if config else DataConfig()
    workers = workers or config.workers
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
                        f"{record['corr_t1_template']:.3f}, volume scale "
                        f"{record['volume_scale']:.3f}, rim {record['rim_ratio']:.3f}, "
                        f"mask Dice {record['mask_dice']:.3f}")
                except (ValueError, FileNotFoundError, RuntimeError) as err:
                    failures[subject] = str(err)
                    log(f"[preprocess] {subject}: skipped: {err}")
    done = {s: r for s in pairs if (r := _subject_done(store, s)) is not None}
    if not done:
        raise ValueError(f"{store}: no subject could be preprocessed ({failures})")
    assemble(store, done, config, failures, log=log)
    log(f"[preprocess] slice store written to {store}")
    return store


def _check_settings(store: Path, config: DataConfig) -> None:
    path = store / "preprocess.json"
    if path.is_file():
        meta = json.loads(path.read_text())
        if meta.get("version") != STORE_VERSION:
            raise ValueError(f"{path}: this store was made by an earlier version of "
                             "colab_utils (no per-subject brain masks, registration of the "
                             "head); preprocess into a new store directory")
        saved = meta.get("config", {})
        mine = subject_settings(config)
        changed = sorted(k for k in mine if saved.get(k) != mine[k])
        if changed:
            raise ValueError(f"{path}: this store was made with other settings ({changed}); "
                             "use the same settings or a new store directory")
        meta["config"] = config.to_dict()
    else:
        meta = {"version": STORE_VERSION, "config": config.to_dict()}
    atomic_write_bytes(path, (json.dumps(meta, indent=2) + "\n").encode())


def assemble(store: Path, records: dict, config: DataConfig, failures: dict, *,
             log=print) -> dict[str, str]:
    """Judge QC, split the subjects and write the shards, ``index.csv`` and ``qc.csv``.

    Returns:
        ``{subject: split}`` (outliers left out with ``exclude_outliers``).
    """
    from .qc import flag_outliers
    from .splits import assign, unpaired_modalities

    flag_outliers(records)
    flagged = sorted(s for s, r in records.items() if r["outlier"])
    for subject in flagged:
        log(f"[preprocess] {subject}: QC OUTLIER ({records[subject]['qc_reasons']})"
            + ("; left out" if config.exclude_outliers else ""))
    kept = [s for s in sorted(records) if not (config.exclude_outliers and s in flagged)]
    assignment = assign(kept, seed=config.split_seed, val_fraction=config.val_fraction,
                        test_fraction=config.test_fraction, split_file=config.split_file or None)
    rows = []
    for split in ("train", "val", "test"):
        members = [s for s in sorted(assignment) if assignment[s] == split]
        # Strictly unpaired training: each subject gives its T1 or its T2, never both.
        use = {s: ("t1", "t2") for s in members}
        if config.unpaired and split == "train":
            modality = unpaired_modalities(members, seed=config.split_seed)
            use = {s: (modality[s],) for s in members}
        rows += _write_split(store, split, members, use, config.shard_size)
    _write_rows(store / "index.csv", rows, ["split", "subject", "slice", "modality", "shard",
                                            "row"])
    qc_rows = [{**records[s], "split": assignment.get(s, "excluded")} for s in sorted(records)]
    qc_rows += [{"subject": s, "error": error} for s, error in sorted(failures.items())]
    _write_rows(store / "qc.csv", qc_rows, list(QC_COLUMNS) + ["error"])
    meta = json.loads((store / "preprocess.json").read_text())
    meta["splits"] = {k: sorted(s for s in assignment if assignment[s] == k)
                      for k in ("train", "val", "test")}
    meta["left_out"] = sorted(set(records) - set(assignment))
    meta["paired"] = {"train": not config.unpaired, "val": True, "test": True}
    atomic_write_bytes(store / "preprocess.json", (json.dumps(meta, indent=2) + "\n").encode())
    counts = {k: len(v) for k, v in meta["splits"].items()}
    log(f"[preprocess] split: {counts['train']} train, {counts['val']} val, {counts['test']} "
        f"test subjects" + (f"; {len(meta['left_out'])} left out" if meta["left_out"] else ""))
    return assignment


def _write_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def _write_split(store: Path, split: str, members: list[str], use: dict,
                 shard_size: int) -> list[dict]:
    """Write a split's shards one at a time; return its index rows."""
    folder = store / split
    folder.mkdir(exist_ok=True)
    for old in folder.glob("shard-*.npz"):
        old.unlink()
    rows, shard = [], 0
    buffers = {"t1": [], "t2": [], "t1_mask": [], "t2_mask": []}

    def flush():
        nonlocal shard, buffers
        if not buffers["t1"] and not buffers["t2"]:
            return
        arrays = {m: (np.stack(b) if b else np.zeros((0, 1, 1), np.float32))
                  for m, b in buffers.items()}
        _atomic_savez(folder / f"shard-{shard:03d}.npz", **arrays)
        shard, buffers = shard + 1, {k: [] for k in buffers}

    for subject in members:
        with np.load(store / "subjects" / f"{subject}.npz", allow_pickle=False) as data:
            volumes = {m: data[m] for m in use[subject]}
            masks, zs = data["mask"], data["slices"]
        for i, z in enumerate(zs):
            if max(len(b) for b in buffers.values()) >= shard_size:
                flush()
            for modality, images in volumes.items():
                rows.append({"split": split, "subject": subject, "slice": int(z),
                             "modality": modality, "shard": shard,
                             "row": len(buffers[modality])})
                buffers[modality].append(images[i])
                buffers[f"{modality}_mask"].append(masks[i])
    flush()
    return rows
