"""Evaluate a trained method on a paired split, both directions, with one protocol.

Every number is computed on the [0, 1] intensity scale with ``data_range=1``
(PSNR's peak is the data range, not the image maximum), inside the brain mask
(the template mask of the slice store) and, for reference, over the whole
image. Written to ``RUN/metrics/SPLIT/``::

    per_slice.csv     direction, subject, slice, row, every metric masked and unmasked
    per_subject.csv   the mean over each subject's slices
    summary.csv       per direction and metric: mean, std, median over slices
    summary.md        the same as Markdown tables
    examples_t1_to_t2.png, examples_t2_to_t1.png   best and worst slices (masked SSIM)
    evaluation.json   what was evaluated: run, data, split, subjects, image size
    volumes.csv       with ``volumes=True``: per direction and subject, the whole
                      translated volume (:mod:`colab_utils.evaluation.volumes`): each metric on
                      axial, coronal and sagittal planes, flicker, native space

A run is never scored on subjects it trained on: :func:`evaluate` refuses, with
the subjects named, when the split's subjects and the run's training subjects
(``RUN/data.json``) overlap, e.g. after a store was split again.

Whole volumes (``volumes=True``) are the business of :mod:`.volumes`; the tables
of :mod:`.tables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.slices import SliceSet
from ..data.store import SliceStore, load_split
from ..fileio import atomic_write_bytes, write_csv, write_record
from ..log import get_logger
from ..metrics import METRICS, plane_scores
from ..models.simple import brain_masks
from ..training.rundir import RunDir
from .inference import loaded_method
from .tables import LABELS, per_subject_means, summarise, summary_markdown

logger = get_logger(__name__)


@dataclass
class Evaluation:
    """Where an evaluation wrote its tables, and its summary rows."""

    directory: Path
    per_slice: list[dict]
    per_subject: list[dict]
    summary: list[dict]


def _slice_ids(slices: SliceSet) -> tuple[np.ndarray, np.ndarray]:
    n = len(slices.t1)
    subjects = slices.t1_subjects if slices.t1_subjects is not None else np.full(n, "-")
    numbers = slices.t1_slices if slices.t1_slices is not None else np.arange(n)
    return subjects, numbers


def score_predictions(reference: np.ndarray, estimate: np.ndarray,
                      mask: np.ndarray) -> list[dict]:
    """Every metric, masked and unmasked, for each slice of (N, H, W, C) arrays (a slice
    without brain has NaN masked scores)."""
    ref, est = np.asarray(reference)[..., 0], np.asarray(estimate)[..., 0]
    inside = np.asarray(mask, bool).reshape(ref.shape)
    masked = plane_scores(ref, est, inside, axis=0)
    whole = plane_scores(ref, est, None, axis=0)
    return [{**{f"{k}_masked": float(masked[k][i]) for k in METRICS},
             **{f"{k}_unmasked": float(whole[k][i]) for k in METRICS}}
            for i in range(len(ref))]


def paired_split(data, split: str, image_size: int | None) -> SliceSet:
    """A paired split at ``image_size`` with the brain mask of every row (a slice store's
    own; non-zero pixels of either contrast for slices without one).

    Raises:
        ValueError: The split is not paired (nothing to compare against).
    """
    slices = load_split(data, split, size=image_size)
    if not slices.paired:
        raise ValueError(f"{slices.source}: evaluation needs a paired split (the real T2 of "
                         "each T1 slice), but this one is unpaired")
    if slices.mask is None:
        mask = brain_masks(slices.t1, None) | brain_masks(slices.t2, None)
        slices = SliceSet(slices.t1, slices.t2, True, slices.source, slices.t1_subjects,
                          slices.t2_subjects, slices.t1_slices, slices.t2_slices, mask, mask)
    return slices


def check_no_leakage(run, slices: SliceSet, split: str) -> None:
    """Refuse to score a run on subjects it trained on.

    Raises:
        ValueError: Subjects of ``slices`` are among the run's training subjects
            (named, with what to do).
    """
    run = RunDir(run)
    if slices.t1_subjects is None:
        return
    overlap = run.trained_on(set(slices.t1_subjects) | set(slices.t2_subjects))
    if overlap is None:
        if run.path.is_dir():
            logger.warning("%s: the run does not record its training subjects (trained by an "
                           "earlier version); cannot check that it never saw the %s subjects",
                           run.path, split)
        return
    if overlap:
        raise ValueError(
            f"{run.data_file}: the run trained on {len(overlap)} of the {split} subjects "
            f"({', '.join(overlap[:5])}{' …' if len(overlap) > 5 else ''}); its scores would "
            "not measure generalisation. The store was split again since it trained: train "
            "a new run on this store")


def evaluate(run, data, *, split: str = "test", out=None, batch_size: int = 32,
             examples: int = 3, precision: str | None = None,
             volumes: bool = False, plane_step: int = 1) -> Evaluation:
    """Evaluate a run (or exported model) on a paired split, in both directions.

    Args:
        run: A run directory or exported model (see
            :func:`~colab_utils.evaluation.inference.load_method`).
        data: The slice store (or any layout
            :func:`~colab_utils.data.store.load_split` reads).
        split: Which split (``"val"`` while choosing settings, ``"test"`` once).
        out: Output directory (default ``RUN/metrics/SPLIT``).
        batch_size: Inference batch size.
        examples: How many best and worst slices to show per direction.
        precision: ``None`` translates in the dtype policy the model was
            trained in; ``auto`` or a policy name overrides it.
        volumes: Also translate and score each subject's whole volume
            (:func:`~colab_utils.evaluation.volumes.evaluate_volumes`; needs a slice
            store and the scans it was made from).
        plane_step: Whole-volume metrics on every ``plane_step``-th plane (1: all;
            larger is faster, a sample of the same planes).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: The run trained on subjects of this split (:func:`check_no_leakage`),
            or the split is not paired.
    """
    from ..viz import save_figure

    method = loaded_method(run, batch_size=batch_size, precision=precision)
    slices = paired_split(data, split, method.image_size)
    check_no_leakage(run, slices, split)
    directory = Path(out) if out else RunDir(run).metrics(split)
    directory.mkdir(parents=True, exist_ok=True)
    subjects, numbers = _slice_ids(slices)
    mask = slices.mask.astype(bool)
    per_slice = []
    for direction in method.translators:
        estimate = method.translate_split(slices, direction)
        reference = slices.t2 if direction == "t1_to_t2" else slices.t1
        scores = score_predictions(reference, estimate, mask)
        for i, row in enumerate(scores):
            per_slice.append({"direction": direction, "subject": str(subjects[i]),
                              "slice": int(numbers[i]), "row": i, **row})
        if examples:
            inputs = slices.t1 if direction == "t1_to_t2" else slices.t2
            save_figure(examples_figure(inputs, estimate, reference, mask, scores, direction,
                                        method.name, examples),
                        directory / f"examples_{direction}.png")
    per_subject = per_subject_means(per_slice)
    summary = summarise(per_slice)
    write_csv(directory / "per_slice.csv", per_slice)
    write_csv(directory / "per_subject.csv", per_subject)
    write_csv(directory / "summary.csv", summary)
    atomic_write_bytes(directory / "summary.md", summary_markdown(
        summary, f"{method.name}: {split} split of {data}").encode())
    if volumes:
        from .volumes import evaluate_volumes

        evaluate_volumes(method, data, sorted({str(s) for s in subjects}), directory,
                         plane_step=plane_step)
    write_record(directory / "evaluation.json", {
        "run": str(run), "method": method.name, "data": str(Path(data).resolve()),
        "split": split, "subjects": sorted({str(s) for s in subjects}),
        "image_size": method.image_size, "n_slices": len(slices.t1),
        "trained_step": RunDir(run).trained_step(), "policy": method.policy or None,
        "content_version": SliceStore(data).version if SliceStore.holds_store(data) else None,
        "volumes": bool(volumes), "plane_step": plane_step if volumes else None})
    logger.info("evaluated %s%s on %d %s slices of %d subjects; tables and figures in %s",
                method.name, f" in {method.policy}" if method.policy else "", len(slices.t1),
                split, len(set(subjects)), directory)
    return Evaluation(directory, per_slice, per_subject, summary)


def is_current(run, data, split: str = "test", volumes: bool = False,
               plane_step: int = 1) -> bool:
    """Whether ``RUN/metrics/SPLIT`` holds a complete evaluation of the run as it is now.

    That is: the tables were written (the volume table too, when ``volumes``, on every
    ``plane_step``-th plane), and ``evaluation.json`` records the run's last training
    step, the same slice store (and its content version), split and subjects, and the
    dtype policy the run was trained in (what :func:`evaluate` uses by default).
    """
    run = RunDir(run)
    record = run.evaluation_record(split)
    step = run.trained_step()
    if not record or step is None or not (run.metrics(split) / "summary.csv").is_file():
        return False
    store = SliceStore(data) if SliceStore.holds_store(data) else None
    subjects = store.subjects(split) if store else None  # None: slices without records
    # The Simple baseline computes in no dtype policy: its record says None.
    return (record.get("trained_step") == step
            and record.get("policy") in (None, run.summary().get("policy"))
            and record.get("split") == split
            and record.get("data") == str(Path(data).resolve())
            and (store is None or record.get("content_version") == store.version)
            and (subjects is None or record.get("subjects") == subjects)
            and (not volumes or (record.get("volumes") is True
                                 and record.get("plane_step") == plane_step
                                 and (run.metrics(split) / "volumes.csv").is_file())))


def examples_figure(inputs, estimate, reference, mask, scores, direction, name, count):
    """Best and worst slices by masked SSIM: input | synthetic | real | |error|."""
    from ..viz import image_table

    ssim = np.asarray([s["ssim_masked"] for s in scores], np.float64)
    order = np.argsort(np.where(np.isfinite(ssim), ssim, np.inf))
    picks = list(dict.fromkeys(list(order[::-1][:count]) + list(order[:count])))
    rows = []
    for i in picks:
        label = "best" if i in order[::-1][:count] else "worst"
        rows.append((f"{label}: row {i}, SSIM {ssim[i]:.3f}",
                     [inputs[i], estimate[i], reference[i],
                      np.abs(estimate[i] - reference[i]) * mask[i]]))
    source, target = direction.split("_to_")
    return image_table(rows, [f"{source.upper()} input", f"{name} {target.upper()}",
                              f"real {target.upper()}", "|error| in mask"],
                       error_columns={3}, title=f"{name}, {LABELS[direction]}")
