"""Compare evaluated methods: one table, paired tests against CycleGAN, figures.

Reads each run's ``metrics/SPLIT/`` (written by
:func:`colab_utils.evaluation.scoring.evaluate`; runs not yet evaluated are
evaluated first when the slice store is known) and writes to ``OUT``::

    table.csv, table.md     per method, direction and metric: the mean over
                            subjects of each subject's mean, its std, and n subjects
    table_slices.csv        the same over slices (slices are not independent)
    tests.csv               Wilcoxon signed-rank tests, each method vs the reference
                            (CycleGAN), per subject and per slice
    table_volumes.csv, tests_volumes.csv   the same per subject for the whole
                            volumes of the runs evaluated with ``volumes=True``
                            (template space on three plane orientations,
                            flicker, native space)
    boxplots_t1_to_t2.png, boxplots_t2_to_t1.png   masked metrics per subject
    qualitative_t1_to_t2.png, ...                   input | each method | real | |errors|
    report.md               all of the above in one page

Subjects are the unit: the headline table and the primary test are per subject
(slices of one subject are not independent). With n subjects the smallest
two-sided exact p-value is 2 / 2**n, so with fewer than 6 no per-subject test
can reach 0.05; the report says so next to the test. The per-slice test is
reported beside it, labelled as not independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from ..config import DIRECTIONS
from ..fileio import atomic_write_bytes, read_csv, write_csv
from ..log import get_logger
from ..metrics import METRICS
from ..training.rundir import RunDir
from .inference import loaded_method
from .report import Section, write_report
from .scoring import evaluate, paired_split
from .tables import HIGHER_IS_BETTER, LABELS

logger = get_logger(__name__)


@dataclass
class MethodResults:
    """One evaluated method: its label, run directory and metric rows."""

    label: str
    run: Path
    per_slice: list[dict]
    per_subject: list[dict]
    summary: list[dict]
    data: str | None
    volumes: list[dict] = field(default_factory=list)
    # How the run was scored: the image size of its slices, the plane step of its volumes.
    image_size: int | None = None
    plane_step: int | None = None


@dataclass
class Comparison:
    """What :func:`compare` wrote: its tables and tests, the report's sections (in
    order) and figures, and the report (``None`` until rendered)."""

    directory: Path
    table: list[dict]
    tests: list[dict]
    sections: list[Section]
    figures: list[str]
    title: str
    report: Path | None = None


def load_results(run, split: str = "test", data=None) -> MethodResults:
    """A run's evaluation tables (evaluating it first when they are missing and
    ``data`` is given)."""
    run = Path(run)
    directory = RunDir(run).metrics(split)
    if not (directory / "per_slice.csv").is_file():
        if data is None:
            raise FileNotFoundError(
                f"{directory / 'per_slice.csv'}: run {run} has no {split!r} evaluation; run "
                f"`python -m colab_utils evaluate --run {run} --data STORE` or pass --data")
        evaluate(run, data, split=split)
    record = RunDir(run).evaluation_record(split)
    # Whole volumes only when the evaluation on record scored them (an older volume
    # table may describe another state of the run).
    volumes = record.get("volumes") is True and (directory / "volumes.csv").is_file()
    return MethodResults(RunDir(run).model(), run, read_csv(directory / "per_slice.csv"),
                         read_csv(directory / "per_subject.csv"),
                         read_csv(directory / "summary.csv"), record.get("data"),
                         read_csv(directory / "volumes.csv") if volumes else [],
                         record.get("image_size"), record.get("plane_step"))


def _unique_labels(results: list[MethodResults]) -> None:
    seen: dict[str, int] = {}
    for r in results:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in results:
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.run.name})"


def comparison_table(results: list[MethodResults], level: str = "subject") -> list[dict]:
    """Long table: method, direction, metric, region, mean, std, median, n_subjects,
    n_slices; ``level`` ``"subject"``: statistics over the subjects' means (the
    headline), ``"slice"``: over slices."""
    if level == "slice":
        return [{"method": r.label, "level": "slice", **row} for r in results
                for row in r.summary]
    rows = []
    for r in results:
        for direction in DIRECTIONS:
            subjects = [s for s in r.per_subject if s["direction"] == direction]
            if not subjects:
                continue
            slices = sum(int(s["n_slices"]) for s in subjects)
            for metric in METRICS:
                for region in ("masked", "unmasked"):
                    values = np.asarray([s[f"{metric}_{region}"] for s in subjects], float)
                    values = values[np.isfinite(values)]
                    rows.append({"method": r.label, "level": "subject", "direction": direction,
                                 "metric": metric, "region": region,
                                 "mean": float(values.mean()) if values.size else np.nan,
                                 "std": float(values.std()) if values.size else np.nan,
                                 "median": float(np.median(values)) if values.size else np.nan,
                                 "n_subjects": int(values.size), "n_slices": slices})
    return rows


def paired_tests(results: list[MethodResults], reference: MethodResults) -> list[dict]:
    """Wilcoxon signed-rank test of each method against ``reference`` per masked metric,
    on per-subject means and on per-slice values (pairs matched by subject / slice)."""
    rows = []
    for r in results:
        if r is reference:
            continue
        for direction in DIRECTIONS:
            if not comparable(r.image_size, reference.image_size):
                rows += [_untested(r, reference, direction, level, metric,
                                   f"scored at {r.image_size} px, {reference.label} at "
                                   f"{reference.image_size} px: not comparable")
                         for level in ("subject", "slice") for metric in METRICS]
                continue
            for level, mine, theirs, key in (
                    ("subject", r.per_subject, reference.per_subject, ("subject",)),
                    ("slice", r.per_slice, reference.per_slice, ("subject", "slice"))):
                for metric in METRICS:
                    rows.append(_wilcoxon(r.label, reference.label, direction, level, metric,
                                          mine, theirs, key))
    return rows


def comparable(a, b) -> bool:
    """Whether two evaluations' settings (image sizes, plane steps) allow a paired test:
    the same, or one of them unknown (the Simple baseline works at any size)."""
    return a is None or b is None or a == b


def _untested(r, reference, direction, level, metric, note) -> dict:
    return {"method": r.label, "reference": reference.label, "direction": direction,
            "level": level, "metric": metric, "n": 0, "median_difference": float("nan"),
            "statistic": float("nan"), "p_value": float("nan"), "note": note}


def _wilcoxon(label, ref_label, direction, level, metric, mine, theirs, key,
              column=None) -> dict:
    column = column or f"{metric}_masked"

    def values(rows):
        return {tuple(row[k] for k in key): row[column] for row in rows
                if row["direction"] == direction and np.isfinite(row.get(column, np.nan))}

    a, b = values(mine), values(theirs)
    common = sorted(set(a) & set(b))
    x = np.asarray([a[k] for k in common])
    y = np.asarray([b[k] for k in common])
    row = {"method": label, "reference": ref_label, "direction": direction, "level": level,
           "metric": metric, "n": len(common),
           "median_difference": float(np.median(x - y)) if common else float("nan"),
           "statistic": float("nan"), "p_value": float("nan"), "note": ""}
    if len(common) < 2:
        row["note"] = f"too few matched {level}s ({len(common)}) for a test"
    elif np.all(x == y):
        row["note"] = "identical values"
    else:
        result = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
        row["statistic"], row["p_value"] = float(result.statistic), float(result.pvalue)
        better = (row["median_difference"] > 0) == _higher_is_better(metric)
        row["note"] = f"{label} {'better' if better else 'worse'} by the median difference"
    return row


# The whole-volume columns the comparison shows and tests (colab_utils.evaluation.volumes).
VOLUME_TABLE = ("axial_ssim", "coronal_ssim", "sagittal_ssim", "volume_psnr", "volume_mae",
                "flicker_ratio", "native_ssim", "native_psnr")


def _higher_is_better(metric: str) -> bool:
    name = metric.rsplit("_", 1)[-1] if metric not in HIGHER_IS_BETTER else metric
    return HIGHER_IS_BETTER.get(name, False)  # flicker: lower is better


def volume_table(results: list[MethodResults]) -> list[dict]:
    """Per method, direction and whole-volume column: mean, std, median over subjects."""
    rows = []
    for r in results:
        for direction in DIRECTIONS:
            subjects = [v for v in r.volumes if v["direction"] == direction]
            for column in VOLUME_TABLE:  # tables of earlier versions may lack a column
                values = np.asarray([v.get(column, np.nan) for v in subjects], float)
                values = values[np.isfinite(values)]
                if values.size:
                    rows.append({"method": r.label, "direction": direction, "metric": column,
                                 "mean": float(values.mean()), "std": float(values.std()),
                                 "median": float(np.median(values)),
                                 "n_subjects": int(values.size)})
    return rows


def volume_tests(results: list[MethodResults], reference: MethodResults) -> list[dict]:
    """Wilcoxon signed-rank tests per subject of each method's whole-volume columns
    against ``reference``'s."""
    return [_wilcoxon(r.label, reference.label, direction, "subject", column, r.volumes,
                      reference.volumes, ("subject",), column=column)
            if comparable(r.plane_step, reference.plane_step) else
            _untested(r, reference, direction, "subject", column,
                      f"every {r.plane_step} planes against every {reference.plane_step}: "
                      "not comparable")
            for r in results if r is not reference and r.volumes
            for direction in DIRECTIONS for column in VOLUME_TABLE]


def volume_markdown(table: list[dict], labels: list[str]) -> str:
    """Markdown of the whole-volume table per direction (best mean in bold)."""
    lines = []
    for direction in DIRECTIONS:
        rows = [r for r in table if r["direction"] == direction]
        if not rows:
            continue
        n = max(int(r["n_subjects"]) for r in rows)
        lines += [f"### {LABELS[direction]}, whole volumes (mean ± std over n = {n} subjects)",
                  "", "| method | " + " | ".join(c.replace("_", " ") for c in VOLUME_TABLE)
                  + " |", "|---|" + "---|" * len(VOLUME_TABLE)]
        best = {}
        for column in VOLUME_TABLE:
            means = {r["method"]: r["mean"] for r in rows if r["metric"] == column}
            pick = max if _higher_is_better(column) else min
            best[column] = pick(means, key=means.get) if means else None
        for label in labels:
            mine = {r["metric"]: r for r in rows if r["method"] == label}
            if not mine:
                continue
            cells = []
            for column in VOLUME_TABLE:
                r = mine.get(column)
                cell = "–" if r is None else f"{r['mean']:.4g} ± {r['std']:.2g}"
                cells.append(f"**{cell}**" if r is not None and best[column] == label else cell)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def table_markdown(table: list[dict], labels: list[str]) -> str:
    """Markdown of the masked metrics per direction (best mean in bold)."""
    lines = []
    for direction in DIRECTIONS:
        rows = [r for r in table if r["direction"] == direction and r["region"] == "masked"]
        if not rows:
            continue
        if rows[0].get("level") == "slice":
            over = f"mean ± std over {int(rows[0]['n_slices'])} slices, not independent"
        else:
            over = (f"mean ± std over n = {int(rows[0]['n_subjects'])} subjects' means "
                    f"({int(rows[0]['n_slices'])} slices)")
        lines += [f"### {LABELS[direction]}, inside the brain mask ({over})", "",
                  "| method | " + " | ".join(m.upper() for m in METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        best = {}
        for metric in METRICS:
            means = {r["method"]: r["mean"] for r in rows if r["metric"] == metric}
            pick = max if HIGHER_IS_BETTER[metric] else min
            best[metric] = pick(means, key=means.get) if means else None
        for label in labels:
            cells = []
            for metric in METRICS:
                r = next((x for x in rows if x["method"] == label and x["metric"] == metric),
                         None)
                if r is None:
                    cells.append("–")
                    continue
                cell = f"{r['mean']:.4g} ± {r['std']:.2g}"
                cells.append(f"**{cell}**" if best[metric] == label else cell)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def smallest_p(n: int) -> float:
    """The smallest two-sided p a Wilcoxon signed-rank test of ``n`` pairs can give."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else 1.0


def tests_markdown(tests: list[dict], level: str) -> str:
    """Markdown of the tests of one ``level`` (``subject`` or ``slice``), masked
    metrics, with what they can and cannot show."""
    rows = [t for t in tests if t["level"] == level]
    if not rows:
        return ""
    n = int(max(t["n"] for t in rows))
    if level == "subject":
        head = (f"Per subject (n = {n}; the primary test). "
                + (f"With {n} subjects the smallest possible two-sided p is "
                   f"{smallest_p(n):.3g}: no difference can reach p < 0.05 here, whatever "
                   "its size." if smallest_p(n) >= 0.05 else
                   f"The smallest possible two-sided p is {smallest_p(n):.3g}."))
    else:
        head = (f"Per slice (n = {n} slices). Slices of one subject are not independent, "
                "so these p-values overstate the evidence; for orientation only.")
    lines = [head, "", "| method vs reference | direction | metric | n | median diff. | p | "
             "note |", "|---|---|---|---|---|---|---|"]
    for t in rows:
        p = "–" if not np.isfinite(t["p_value"]) else f"{t['p_value']:.3g}"
        lines.append(f"| {t['method']} vs {t['reference']} | {LABELS[t['direction']]} | "
                     f"{t['metric'].upper()} | {int(t['n'])} | "
                     f"{t['median_difference']:.3g} | {p} | {t['note']} |")
    return "\n".join(lines) + "\n"


def boxplots(results: list[MethodResults], direction: str):
    """Box plots of the masked metrics (each subject's mean, one point per subject),
    one panel per metric."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(METRICS), 3.6), dpi=100)
    axes = fig.subplots(1, len(METRICS), squeeze=False)[0]
    for ax, metric in zip(axes, METRICS):
        data = []
        for r in results:
            values = np.asarray([row[f"{metric}_masked"] for row in r.per_subject
                                 if row["direction"] == direction], np.float64)
            data.append(values[np.isfinite(values)])
        ax.boxplot(data, showmeans=True)
        for i, values in enumerate(data, start=1):
            ax.plot(np.full(len(values), i), values, "k.", markersize=4)
        ax.set_xticks(range(1, len(results) + 1), [r.label for r in results], rotation=30,
                      ha="right", fontsize=7)
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        ax.set_title(f"{metric.upper()} {arrow}", fontsize=9)
    fig.suptitle(f"{LABELS[direction]}, inside the brain mask, per subject", fontsize=9)
    fig.tight_layout()
    return fig


def qualitative_figure(results: list[MethodResults], data, split: str, direction: str,
                       n_slices: int = 3, methods=None):
    """Fixed slices of the split: input | each method | ground truth | each method's
    |error| (a 2.5-D method sees each slice's real neighbours from the whole split).

    ``methods``: the results' methods already loaded, so that drawing both directions
    loads each model once.
    """
    from ..viz import image_table

    methods = methods or [loaded_method(r.run) for r in results]
    sizes = {m.image_size for m in methods if m.image_size}
    if len(sizes) > 1:
        raise ValueError(f"the runs work at different image sizes {sorted(sizes)}; a "
                         "qualitative figure needs one size")
    slices = paired_split(data, split, sizes.pop() if sizes else None)
    picks = slices.spread(n_slices)
    estimates = [m.translate_split(slices, direction, picks) for m in methods]
    inputs = (slices.t1 if direction == "t1_to_t2" else slices.t2)[picks]
    truth = (slices.t2 if direction == "t1_to_t2" else slices.t1)[picks]
    mask = slices.mask[picks]
    rows = []
    for j, i in enumerate(picks):
        errors = [np.abs(e[j] - truth[j]) * mask[j] for e in estimates]
        rows.append((f"{split} row {i}", [inputs[j], *[e[j] for e in estimates], truth[j],
                                          *errors]))
    source, target = direction.split("_to_")
    k = len(methods)
    columns = ([f"{source.upper()} input"] + [r.label for r in results]
               + [f"real {target.upper()}"] + [f"|error| {r.label}" for r in results])
    return image_table(rows, columns, error_columns=set(range(k + 2, 2 * k + 2)),
                       title=f"{LABELS[direction]} on {split} slices")


def few_subjects_notes(data) -> list[str]:
    """What the store's splits of fewer than 3 subjects mean for the statistics (none for
    larger splits, or without a store)."""
    from ..data.splits import SPLITS, small_split_notes
    from ..data.store import SliceStore

    if not data or not Path(data).is_dir():
        return []
    store = SliceStore(data)
    if not store.splits():  # not a store (a folder of slice files) or not split
        return []
    return small_split_notes({subject: split for split in SPLITS
                              for subject in store.subjects(split) or []})


def compare(runs, out, *, split: str = "test", data=None, reference: str = "cyclegan",
            qualitative_slices: int = 3, render: bool = True) -> Comparison:
    """Compare evaluated runs: tables, tests and figures in ``out``, and the report.

    Args:
        runs: Run directories (two or more).
        out: Output directory.
        split: The evaluated split.
        data: The slice store: evaluates runs that lack metrics, and draws the
            qualitative figure (default: the store recorded by the evaluations).
        reference: The method the others are tested against (its ``model``
            name or run directory name; CycleGAN by default).
        qualitative_slices: Slices in the qualitative figure (0: none).
        render: Write ``report.md`` from the sections; ``False`` leaves it to the
            caller (:func:`colab_utils.evaluation.report.write_report` with sections of
            its own, as the pipeline does).
    """
    from ..viz import save_figure

    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError(f"compare: expected at least two runs, got {len(runs)}")
    results = [load_results(r, split, data) for r in runs]
    _unique_labels(results)
    ref = next((r for r in results
                if reference in (r.label, r.run.name, RunDir(r.run).model())), None)
    if ref is None:
        raise ValueError(f"compare: no run of the reference method {reference!r} among "
                         f"{[r.label for r in results]}; pass --reference")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = comparison_table(results)
    tests = paired_tests(results, ref)
    write_csv(out / "table.csv", table)
    write_csv(out / "table_slices.csv", comparison_table(results, level="slice"))
    write_csv(out / "tests.csv", tests)
    labels = [r.label for r in results]
    table_md = table_markdown(table, labels)
    atomic_write_bytes(out / "table.md", table_md.encode())
    sections = [Section("", "Runs: " + ", ".join(f"{r.label} (`{r.run}`)" for r in results)
                        + "\n\nIntensities on [0, 1]; PSNR in dB; MI in nats; best mean in "
                        "bold. Each subject's metrics are the mean over its slices; the table "
                        "gives their mean and standard deviation over subjects.\n\n"
                        + table_md),
                Section(f"Paired Wilcoxon signed-rank tests against {ref.label} (masked "
                        "metrics)", tests_markdown(tests, "subject") + "\n"
                        + tests_markdown(tests, "slice"))]
    volumed = [r for r in results if r.volumes]
    if volumed:
        volumes = volume_table(volumed)
        write_csv(out / "table_volumes.csv", volumes)
        tested = volume_tests(volumed, ref) if ref.volumes else []
        write_csv(out / "tests_volumes.csv", tested)
        sections.append(Section("Whole volumes", (
            "Each subject's whole brain translated plane by plane at the store's resolution "
            "(colab_utils.evaluation.volumes): metrics on axial, coronal and sagittal planes "
            "inside the brain mask (coronal and sagittal cut across the translated slices), "
            "the flicker ratio (error of the slice-to-slice change over the real change; 0 "
            "is perfect) and the metrics on the source scan's own grid (native).\n\n"
            + volume_markdown(volumes, [r.label for r in volumed]) + "\n"
            + (tests_markdown(tested, "subject") if tested else
               f"No tests: {ref.label} has no whole-volume evaluation." if not ref.volumes
               else "No tests: no other method has a whole-volume evaluation."))))
    data = data or results[0].data
    few = few_subjects_notes(data)
    if few:
        sections.insert(1, Section("Few subjects", "\n".join(f"- {note}" for note in few)))
    methods = ([loaded_method(r.run) for r in results]
               if qualitative_slices and data else None)
    figures = []
    for direction in DIRECTIONS:
        figures.append(save_figure(boxplots(results, direction),
                                   out / f"boxplots_{direction}.png").name)
        if methods:
            figures.append(save_figure(
                qualitative_figure(results, data, split, direction, qualitative_slices,
                                   methods), out / f"qualitative_{direction}.png").name)
    comparison = Comparison(out, table, tests, sections, figures,
                            f"Method comparison on the {split} split")
    if render:
        write_report(comparison)
    logger.info("compared %d methods against %s; %s", len(results), ref.label,
                f"report in {comparison.report}" if render else f"tables in {out}")
    return comparison
