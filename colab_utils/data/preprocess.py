"""Preprocessing: registered, normalised axial slices in a sharded slice store.

Per subject (in parallel worker processes, each subject independent):

1. load T1 and T2 (RAS+); register T1 → MNI152 (affine, driven by the brain:
   :mod:`.registration`) and T2 → T1 (rigid, inside the T1's brain region);
   resample both into template space (1 mm, 197 × 233 × 189);
2. the subject's brain mask (:mod:`.brain_mask`, the project's own; or a learned
   extractor, :mod:`.extractor`, with ``brain_extractor``); clip intensities to
   percentiles inside it, scale to [0, 1], zero outside it;
3. take axial slices (the article's single slice, a range, or every slice
   with enough brain), padded/cropped to ``size`` × ``size``, with the mask;
4. record quality numbers (:mod:`.qc`) and a QC montage; write
   ``subjects/ID.npz`` atomically.

Then the subjects are split (:mod:`.splits`: stable per subject ID, or a split
file; outliers left out with ``exclude_outliers``) and the store is assembled
(:class:`.store.SliceStore`, which owns the store's files and their layout).

Re-running skips subjects already done; changing only the split settings
re-splits without registering anything again, and a store whose content would
not change is not rewritten. Memory stays flat in the number of subjects: one
subject per worker is in memory, shards are written one at a time.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..log import get_logger, progress
from . import axial
from .intensity import normalise
from .nifti import load_volume
from .store import SliceStore, split_settings

logger = get_logger(__name__)


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


    def transforms(self) -> dict:
        """Both transforms as (3, 4) matrices (lists), as a subject's record keeps them."""
        from .registration import flatten_affine

        return {"t1_to_template": flatten_affine(self.t1_to_template.transform).tolist(),
                "t2_to_t1": flatten_affine(self.t2_to_t1.transform).tolist()}


def register_pair(t1_path, t2_path, transforms: dict | None = None) -> RegisteredPair:
    """Load a subject's T1 and T2; register T1 → MNI152 and T2 → T1 (rigid, inside the
    T1's brain region), or, given the ``transforms`` a subject's record kept
    (:meth:`RegisteredPair.transforms`), use those."""
    from . import registration as reg

    t1, t1_affine = load_volume(t1_path)
    t2, t2_affine = load_volume(t2_path)
    for path, volume in ((t1_path, t1), (t2_path, t2)):
        if volume.max() <= volume.min():  # registration cannot align a flat image
            raise ValueError(f"{path}: expected an image with varying intensities, got a "
                             f"constant volume (every voxel {float(volume.min()):.4g})")
    t1_image, t2_image = reg.to_sitk(t1, t1_affine), reg.to_sitk(t2, t2_affine)
    if transforms:
        return RegisteredPair(
            t1_image, t2_image,
            reg.Registration(reg.affine_transform(transforms["t1_to_template"]), float("nan"),
                             "recorded"),
            reg.Registration(reg.affine_transform(transforms["t2_to_t1"]), float("nan"),
                             "recorded"))
    t1_to_template = reg.register_to_template(t1_image)          # template -> T1
    t2_to_t1 = reg.register_rigid(t1_image, t2_image,            # T1 point -> T2 point
                                  fixed_mask=reg.brain_region_in(t1_image,
                                                                 t1_to_template.transform))
    return RegisteredPair(t1_image, t2_image, t1_to_template, t2_to_t1)


def register_subject(t1_path, t2_path, extractor: str = "own"):
    """Load a subject's T1 and T2 and bring both into MNI152 template space (the brain
    mask made by ``extractor``, :func:`.extractor.brain_mask`).

    Returns:
        ``(t1, t2, mask, quality)``: float32 volumes on the template grid (not
        yet normalised), the subject's brain mask there, and a dict of quality
        numbers (:func:`colab_utils.data.qc.quality_numbers`, the registrations'
        final metrics and winning starts).
    """
    t1_in_template, t2_in_template, mask, pair = register_into_template(
        t1_path, t2_path, extractor=extractor)
    from .qc import quality_numbers

    slice_mm = max(max(pair.t1_image.GetSpacing()), max(pair.t2_image.GetSpacing()))
    quality = quality_numbers(t1_in_template, pair.t1_to_template.volume_scale, pair.mask_info,
                              slice_mm=slice_mm)
    quality.update({"metric_t1_to_template": round(pair.t1_to_template.metric, 4),
                    "metric_t2_to_t1": round(pair.t2_to_t1.metric, 4),
                    "start_t1_to_template": pair.t1_to_template.start,
                    "start_t2_to_t1": pair.t2_to_t1.start, "transforms": pair.transforms()})
    if pair.mask_info["mask_extractor"] != "own":  # the own mask's records stay as they were
        quality["mask_extractor"] = pair.mask_info["mask_extractor"]
    return t1_in_template, t2_in_template, mask, quality


def register_into_template(t1_path, t2_path, transforms: dict | None = None, *,
                           extractor: str = "own"):
    """:func:`register_pair`, then T1, T2 and the subject's brain mask on the template grid
    (made by ``extractor``: "own" or a learned one, :func:`.extractor.brain_mask`):
    ``(t1, t2, mask, pair)`` (``pair.mask_info`` describes the mask, ``mask_extractor``
    who made it)."""
    from . import registration as reg
    from .extractor import brain_mask

    pair = register_pair(t1_path, t2_path, transforms)
    template, _ = reg.template_images()
    t1_in_template, _ = reg.from_sitk(reg.resample(pair.t1_image, template,
                                                   pair.t1_to_template.transform))
    t2_in_template, _ = reg.from_sitk(reg.resample(pair.t2_image, template,
                                                   pair.template_to_t2))
    mask, pair.mask_info = brain_mask(t1_in_template, extractor)
    return t1_in_template, t2_in_template, mask, pair


def process_subject(subject: str, t1_path, t2_path, store, config: DataConfig) -> dict:
    """Register, mask, normalise and slice one subject; write it into the store (its
    slices, mask, record and QC montage)."""
    from .qc import contrast_numbers, qc_montage
    from .template import mni_template

    store = SliceStore(store)
    started = time.perf_counter()
    t1, t2, mask, quality = register_subject(t1_path, t2_path, config.brain_extractor)
    _, template_mask, _ = mni_template()
    t1 = normalise(t1, mask, config.clip_low, config.clip_high)
    t2 = normalise(t2, mask, config.clip_low, config.clip_high)
    quality.update(contrast_numbers(t1, t2, mask))
    fig = qc_montage(t1, t2, template_mask, mask,
                     f"{subject}: corr(T1, template) {quality['corr_t1_template']:.3f}, "
                     f"volume scale {quality['volume_scale']:.2f}, rim {quality['rim_ratio']:.2f}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    zs = axial.select_slices(template_mask, config.slices, seed_slice=config.seed_slice,
                             slice_range=config.slice_range,
                             min_brain_fraction=config.min_brain_fraction)
    record = {"subject": subject, "t1": str(t1_path), "t2": str(t2_path), **quality,
              "n_slices": len(zs), "seconds": round(time.perf_counter() - started, 2)}
    store.write_subject(subject, {"t1": axial.stack(t1, zs, config.slice_size),
                                  "t2": axial.stack(t2, zs, config.slice_size),
                                  "mask": axial.stack(mask, zs, config.slice_size) > 0.5,
                                  "slices": np.asarray(zs, np.int32)},
                        record, buffer.getvalue())
    return record


def preprocess(pairs: dict, store, config: DataConfig | None = None, *,
               workers: int | None = None) -> Path:
    """Preprocess subject pairs into a slice store (resumable).

    Args:
        pairs: ``{subject_id: (t1_path, t2_path)}`` (e.g. ``find_pairs(...).pairs``).
        store: Output directory.
        config: The data settings (the preprocessing and split ones are used;
            defaults: the article's single slice, 256 px).
        workers: Worker processes for subjects (default: ``config.workers``).

    Returns:
        The store directory.

    Raises:
        ValueError: Per-subject settings differ from the store's, the split cannot
            be made (naming why), or no subject could be processed.
        ImportError: ``brain_extractor`` names a learned extractor that is not
            installed (the message names the package).
    """
    from .extractor import require_extractor

    config = config.validated() if config else DataConfig()
    require_extractor(config.brain_extractor)
    workers = workers or config.workers
    store = SliceStore(store)
    # A store made before the setting existed had the own masks.
    made_with = store.settings().get("brain_extractor", "own")
    if store.settings() and made_with != config.brain_extractor:
        raise ValueError(f"{store.record_file}: this store's brain masks were made by "
                         f"brain_extractor={made_with!r}, not {config.brain_extractor!r}; "
                         "use the same setting or a new store directory")
    store.open_for(config)
    todo = {s: p for s, p in sorted(pairs.items()) if store.subject_record(s) is None}
    logger.info("%d subjects, %d already done, %d to do with %d worker(s)", len(pairs),
                len(pairs) - len(todo), len(todo), workers)
    failures = {}
    if todo:
        # One ITK thread per subject: a multi-threaded registration metric sums its
        # partial results in a scheduling-dependent order, and the result would then
        # depend on the number of workers (a run resumed with other --workers would
        # not equal an uninterrupted one). Parallelism comes from the workers.
        # Workers are replaced every 16 subjects, so that whatever a long run
        # accumulates (allocator fragmentation, library caches) stays bounded.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=init_worker, initargs=(1,),
                                 max_tasks_per_child=16) as pool:
            futures = {s: pool.submit(process_subject, s, t1, t2, store.path, config)
                       for s, (t1, t2) in todo.items()}
            for subject, future in progress(futures.items(), total=len(futures),
                                            desc="subjects", unit="subject"):
                try:
                    record = future.result()
                    logger.info("%s: %s s, corr %.3f, volume scale %.3f, rim %.3f, mask Dice "
                                "%.3f", subject, record["seconds"], record["corr_t1_template"],
                                record["volume_scale"], record["rim_ratio"],
                                record["mask_dice"])
                except (ValueError, FileNotFoundError, RuntimeError) as err:
                    failures[subject] = str(err)
                    logger.warning("%s: skipped: %s", subject, err)
    done = {s: r for s in pairs if (r := store.subject_record(s)) is not None}
    if not done:
        raise ValueError(f"{store.path}: no subject could be preprocessed ({failures})")
    assemble(store, done, config, failures)
    logger.info("slice store written to %s", store.path)
    return store.path


def init_worker(threads: int) -> None:
    """A worker process's SimpleITK threads (1: results independent of scheduling)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def assemble(store: SliceStore, records: dict, config: DataConfig,
             failures: dict) -> dict[str, str]:
    """Judge QC, split the subjects and commit the store (its shards, index and QC).

    Returns:
        ``{subject: split}`` (outliers left out with ``exclude_outliers``).
    """
    from .qc import flag_outliers
    from .splits import assign, small_split_notes, unpaired_modalities

    flag_outliers(records)
    flagged = sorted(s for s, r in records.items() if r["outlier"])
    for subject in flagged:
        logger.warning("%s: QC OUTLIER (%s)%s", subject, records[subject]["qc_reasons"],
                       "; left out" if config.exclude_outliers else "")
    kept = [s for s in sorted(records) if not (config.exclude_outliers and s in flagged)]
    assignment = assign(kept, seed=config.split_seed, val_fraction=config.val_fraction,
                        test_fraction=config.test_fraction, split_file=config.split_file or None,
                        recorded=store.recorded_splits(config))
    for note in small_split_notes(assignment):
        logger.warning("%s", note)
    train = sorted(s for s in assignment if assignment[s] == "train")
    modality = unpaired_modalities(train, seed=config.split_seed) if config.unpaired else None
    written = store.commit(assignment, records, failures, unpaired_modality=modality,
                           shard_size=config.shard_size, split_settings=split_settings(config))
    counts = {k: sum(v == k for v in assignment.values()) for k in ("train", "val", "test")}
    left_out = len(records) - len(assignment)
    logger.info("split: %d train, %d val, %d test subjects%s%s", counts["train"],
                counts["val"], counts["test"], f"; {left_out} left out" if left_out else "",
                "" if written else " (the store already held them; nothing rewritten)")
    return assignment
