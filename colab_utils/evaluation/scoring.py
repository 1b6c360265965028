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
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..config import DIRECTIONS
from ..data.slices import SliceSet, fit_to_size, load_split
from ..fileio import atomic_write_bytes
from ..metrics import METRICS, plane_scores
from ..models.simple import brain_masks
from ..training.rundir import RunDir, read_record, write_record
from .inference import Method, load_method

REGIONS = ("masked", "unmasked")
COLUMNS = tuple(f"{m}_{r}" for r in REGIONS for m in METRICS)
# Direction in which each metric improves (for "best" in tables).
HIGHER_IS_BETTER = {"mae": False, "mse": False, "psnr": True, "ssim": True, "mi": True}
LABELS = {"t1_to_t2": "T1 → T2", "t2_to_t1": "T2 → T1"}


@dataclass
class Evaluation:
    """Where an evaluation wrote its tables, and its summary rows."""

    directory: Path
    per_slice: list[dict]
    per_subject: list[dict]
    summary: list[dict]


def write_csv(path: Path, rows: list[dict], columns=None) -> Path:
    """Write rows as CSV (atomically); floats with 6 significant digits."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`, numbers converted back to floats."""
    def convert(key, value):
        if key in ("direction", "subject", "method", "metric", "region", "level", "note"):
            return value
        try:
            return float(value)
        except ValueError:
            return value
    with open(path, newline="") as f:
        return [{k: convert(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


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


def per_subject_means(per_slice: list[dict]) -> list[dict]:
    """Mean of every metric over each (direction, subject)'s slices."""
    groups: dict[tuple, list[dict]] = {}
    for row in per_slice:
        groups.setdefault((row["direction"], row["subject"]), []).append(row)
    out = []
    for (direction, subject), rows in groups.items():
        out.append({"direction": direction, "subject": subject, "n_slices": len(rows),
                    **{c: float(np.nanmean([r[c] for r in rows])) for c in COLUMNS}})
    return out


def summarise(per_slice: list[dict]) -> list[dict]:
    """Per direction and metric column: mean, std, median and count over slices."""
    out = []
    for direction in DIRECTIONS:
        rows = [r for r in per_slice if r["direction"] == direction]
        if not rows:
            continue
        for column in COLUMNS:
            values = np.asarray([r[column] for r in rows], np.float64)
            values = values[np.isfinite(values)]
            metric, region = column.rsplit("_", 1)
            out.append({"direction": direction, "metric": metric, "region": region,
                        "mean": float(values.mean()) if values.size else float("nan"),
                        "std": float(values.std()) if values.size else float("nan"),
                        "median": float(np.median(values)) if values.size else float("nan"),
                        "n_slices": int(values.size),
                        "n_subjects": len({r["subject"] for r in rows})})
    return out


def summary_markdown(summary: list[dict], title: str) -> str:
    lines = [f"# {title}", ""]
    for direction in DIRECTIONS:
        rows = [r for r in summary if r["direction"] == direction]
        if not rows:
            continue
        n = rows[0]
        lines += [f"## {LABELS[direction]} ({n['n_slices']} slices, {n['n_subjects']} "
                  "subjects)", "", "| metric | in brain mask: mean ± std (median) | "
                  "whole image: mean ± std (median) |", "|---|---|---|"]
        for metric in METRICS:
            cells = []
            for region in REGIONS:
                r = next(x for x in rows if x["metric"] == metric and x["region"] == region)
                cells.append(f"{r['mean']:.4g} ± {r['std']:.3g} ({r['median']:.4g})")
            lines.append(f"| {metric.upper()} | {cells[0]} | {cells[1]} |")
        lines.append("")
    lines.append("Intensities on the [0, 1] scale, data_range = 1; PSNR in dB (capped at 100); "
                 "SSIM: Gaussian window σ 1.5; MI: mutual information in nats (64 bins).")
    return "\n".join(lines) + "\n"


def predict(method: Method, slices: SliceSet, mask: np.ndarray, direction: str) -> np.ndarray:
    """The method's translation of the split in ``direction`` (each slice with its
    neighbours for a 2.5-D method)."""
    from ..data.context import with_context

    seen = with_context(slices, method.context)
    inputs = seen.t1 if direction == "t1_to_t2" else seen.t2
    return method.translate(inputs, mask, direction=direction)


def load_paired(data, split: str, image_size: int | None) -> tuple[SliceSet, np.ndarray]:
    """A paired split at ``image_size`` and its brain masks (read once per process for
    a store that has not changed since: every method is scored on the same slices).

    Raises:
        ValueError: The split is not paired (nothing to compare against).
    """
    index = Path(data) / "index.csv"
    stamp = index.stat().st_mtime_ns if index.is_file() else None
    return _load_paired(str(Path(data).resolve()), split, image_size, stamp)


@lru_cache(maxsize=2)
def _load_paired(data: str, split: str, image_size: int | None,
                 stamp: int | None) -> tuple[SliceSet, np.ndarray]:
    slices = load_split(data, split)
    if not slices.paired:
        raise ValueError(f"{slices.source}: evaluation needs a paired split (the real T2 of "
                         "each T1 slice), but this one is unpaired")
    if image_size:
        slices = fit_to_size(slices, image_size)
    if slices.mask is not None:
        mask = slices.mask.astype(bool)
    else:
        mask = brain_masks(slices.t1, None) | brain_masks(slices.t2, None)
    return slices, mask


def _loaded(run, batch_size: int, precision: str | None) -> Method:
    """:func:`load_method`, kept for the next split's evaluation of the same export (the
    pipeline evaluates every run on validation, then on test)."""
    run = Path(run)
    files = sorted((run / "export").glob("*")) if run.is_dir() else [run]
    stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files if f.is_file())
    return _load_cached(str(run.resolve()), batch_size, precision, stamp)


@lru_cache(maxsize=8)
def _load_cached(run: str, batch_size: int, precision: str | None, stamp) -> Method:
    return load_method(run, batch_size=batch_size, precision=precision)


def check_no_leakage(run, slices: SliceSet, split: str) -> None:
    """Refuse to score a run on subjects it trained on.

    Raises:
        ValueError: Subjects of ``slices`` are among the run's training subjects
            (named, with what to do).
    """
    run = RunDir(run)
    trained = run.subjects("train")
    if trained is None or slices.t1_subjects is None:
        if run.path.is_dir() and slices.t1_subjects is not None:
            print(f"[colab_utils] {run.path}: the run does not record its training subjects "
                  "(trained by an earlier version); cannot check that it never saw the "
                  f"{split} subjects")
        return
    overlap = sorted(set(trained) & (set(slices.t1_subjects) | set(slices.t2_subjects)))
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
        run: A run directory or exported model (see :func:`load_method`).
        data: The slice store (or any layout :func:`load_split` reads).
        split: Which split (``"val"`` while choosing settings, ``"test"`` once).
        out: Output directory (default ``RUN/metrics/SPLIT``).
        batch_size: Inference batch size.
        examples: How many best and worst slices to show per direction.
        precision: ``None`` translates in the dtype policy the model was
            trained in; ``auto`` or a policy name overrides it.
        volumes: Also translate and score each subject's whole volume
            (:func:`evaluate_volumes`; needs a slice store and the scans it was
            made from).
        plane_step: Whole-volume metrics on every ``plane_step``-th plane (1: all;
            larger is faster, a sample of the same planes).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: The run trained on subjects of this split (:func:`check_no_leakage`),
            or the split is not paired.
    """
    method = _loaded(run, batch_size, precision)
    slices, mask = load_paired(data, split, method.image_size)
    check_no_leakage(run, slices, split)
    directory = Path(out) if out else RunDir(run).metrics(split)
    directory.mkdir(parents=True, exist_ok=True)
    subjects, numbers = _slice_ids(slices)
    per_slice = []
    for direction in method.translators:
        estimate = predict(method, slices, mask, direction)
        reference = slices.t2 if direction == "t1_to_t2" else slices.t1
        scores = score_predictions(reference, estimate, mask)
        for i, row in enumerate(scores):
            per_slice.append({"direction": direction, "subject": str(subjects[i]),
                              "slice": int(numbers[i]), "row": i, **row})
        if examples:
            inputs = slices.t1 if direction == "t1_to_t2" else slices.t2
            fig = examples_figure(inputs, estimate, reference, mask, scores, direction,
                                  method.name, examples)
            from ..training.callbacks import save_figure
            save_figure(fig, directory / f"examples_{direction}.png")
    per_subject = per_subject_means(per_slice)
    summary = summarise(per_slice)
    write_csv(directory / "per_slice.csv", per_slice)
    write_csv(directory / "per_subject.csv", per_subject)
    write_csv(directory / "summary.csv", summary)
    atomic_write_bytes(directory / "summary.md", summary_markdown(
        summary, f"{method.name}: {split} split of {data}").encode())
    if volumes:
        evaluate_volumes(method, data, sorted({str(s) for s in subjects}), directory,
                         plane_step=plane_step)
    write_record(directory / "evaluation.json", {
        "run": str(run), "method": method.name, "data": str(Path(data).resolve()),
        "split": split, "subjects": sorted({str(s) for s in subjects}),
        "image_size": method.image_size, "n_slices": len(slices.t1),
        "trained_step": RunDir(run).trained_step(), "policy": method.policy or None,
        "volumes": bool(volumes), "plane_step": plane_step if volumes else None})
    computed = f" in {method.policy}" if method.policy else ""
    print(f"[colab_utils] evaluated {method.name}{computed} on {len(slices.t1)} {split} slices "
          f"of {len(set(subjects))} subjects; tables and figures in {directory}")
    return Evaluation(directory, per_slice, per_subject, summary)


def is_current(run, data, split: str = "test", volumes: bool = False) -> bool:
    """Whether ``RUN/metrics/SPLIT`` holds a complete evaluation of the run as it is now.

    That is: the tables were written (the volume table too, when ``volumes``), and
    ``evaluation.json`` records the run's last training step, the same slice store,
    split and subjects, and the dtype policy the run was trained in (what
    :func:`evaluate` uses by default).
    """
    run = RunDir(run)
    record = run.evaluation_record(split)
    step = run.trained_step()
    if not record or step is None or not (run.metrics(split) / "summary.csv").is_file():
        return False
    subjects = store_subjects(data, split)  # None: slices without subject records
    # The Simple baseline computes in no dtype policy: its record says None.
    return (record.get("trained_step") == step
            and record.get("policy") in (None, run.summary().get("policy"))
            and record.get("split") == split
            and record.get("data") == str(Path(data).resolve())
            and (subjects is None or record.get("subjects") == subjects)
            and (not volumes or (record.get("volumes") and
                                 (run.metrics(split) / "volumes.csv").is_file())))


def store_subjects(data, split: str) -> list[str] | None:
    """The subjects of a slice store's split (``preprocess.json``), or ``None``."""
    splits = read_record(Path(data) / "preprocess.json").get("splits", {})
    return sorted(splits[split]) if split in splits else None


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


def evaluate_volumes(method: Method, store, subjects: list[str], directory, *,
                     plane_step: int = 1) -> list[dict]:
    """Translate and score each subject's whole volume in both directions
    (:func:`colab_utils.evaluation.volumes.score_subject`); writes ``volumes.csv`` and
    ``volumes.md`` to ``directory`` and returns the rows."""
    from .volumes import prepare_subjects, score_subject, subject_volumes

    settings = read_record(Path(store) / "preprocess.json").get("config")
    if not settings:
        raise ValueError(f"{store}: volume evaluation needs a slice store made by "
                         "`preprocess` (preprocess.json and the scans it records)")
    rows = []
    prepare_subjects(store, subjects, clip_low=settings["clip_low"],
                     clip_high=settings["clip_high"], workers=settings.get("workers", 2))
    for subject in subjects:
        volumes = subject_volumes(store, subject, clip_low=settings["clip_low"],
                                  clip_high=settings["clip_high"])
        for direction in method.translators:
            row, _ = score_subject(method, volumes, direction,
                                   slice_size=settings["slice_size"], plane_step=plane_step)
            rows.append(row)
    directory = Path(directory)
    write_csv(directory / "volumes.csv", rows)
    lines = [f"# {method.name}: whole volumes ({len(subjects)} subjects)", "",
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
    atomic_write_bytes(directory / "volumes.md", ("\n".join(lines) + "\n").encode())
    print(f"[colab_utils] {method.name}: whole volumes of {len(subjects)} subjects scored; "
          f"{directory / 'volumes.csv'}")
    return rows
