"""The comparison's report: sections rendered once, atomically, into ``report.md``.

:func:`colab_utils.evaluation.compare.compare` makes the comparison's sections;
the pipeline adds its own (:func:`pipeline_sections`: how the settings were
chosen, restarts, warnings about methods that failed to learn, the slice store
and its QC, how long each step took, the machine and each run's dtype policy,
the settings) and :func:`write_report` renders the page once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.store import SliceStore
from ..fileio import atomic_write_bytes
from ..training.rundir import RunDir


@dataclass
class Section:
    """One section of a report: a title (``""``: no heading) and its Markdown."""

    title: str
    markdown: str

    def render(self) -> str:
        heading = f"## {self.title}\n\n" if self.title else ""
        return heading + self.markdown.strip() + "\n"


def render(title: str, sections, figures=(), *, images: bool = True) -> str:
    """The report's Markdown: the title, each section, then the figures (as image links,
    relative to the report's folder; ``images=False`` leaves them out, for a notebook
    that shows the figures itself)."""
    parts = [f"# {title}\n"] + [section.render() for section in sections]
    if images and figures:
        parts.append("## Figures\n\n" + "\n".join(f"![{name}]({name})" for name in figures)
                     + "\n")
    return "\n".join(parts)


def write_report(comparison, extra=()) -> Path:
    """Render a comparison's sections and ``extra`` ones into ``report.md`` (atomically)
    and return its path (also set as ``comparison.report``)."""
    path = Path(comparison.directory) / "report.md"
    text = render(comparison.title, [*comparison.sections, *extra], comparison.figures)
    atomic_write_bytes(path, text.encode())
    comparison.report = path
    return path


# A learned method this far below the Simple baseline's mean masked SSIM, in either
# direction, has not learnt the translation (a collapsed run; see docs/EXPERIMENTS.md);
# a method that learns but blurs stays within it.
FAILED_MARGIN = 0.25


def failed_methods(table: list[dict], baseline: str = "simple",
                   margin: float = FAILED_MARGIN) -> list[str]:
    """Warnings for the methods whose mean masked SSIM, in either direction, is more
    than ``margin`` below the ``baseline`` method's (rows of
    :func:`colab_utils.evaluation.compare.comparison_table`, validation subjects)."""
    ssim = {(row["method"], row["direction"]): float(row["mean"]) for row in table
            if row["metric"] == "ssim" and row["region"] == "masked"}
    warnings = []
    for (method, direction), value in ssim.items():
        floor = ssim.get((baseline, direction))
        if method != baseline and floor is not None and value < floor - margin:
            warnings.append(
                f"{method} {direction}: masked SSIM {value:.3f} against {baseline}'s "
                f"{floor:.3f} on the validation subjects. This run has most likely failed to "
                "learn the translation (short runs depend on their seed); run the pipeline "
                "again with another --seed, or more --epochs, into a new --out directory.")
    return warnings


def store_report(store) -> str:
    """Markdown: subjects and slices per split, and each subject's registration QC."""
    store = SliceStore(store)
    counts: dict[str, int] = {}
    for row in store.index_rows():
        if row.get("modality", "t1") == "t1":
            counts[row["split"]] = counts.get(row["split"], 0) + 1
    lines = [f"**Slice store** `{store.path}`", "", "| split | subjects | T1 slices |",
             "|---|---|---|"]
    for split, subjects in store.splits().items():
        lines.append(f"| {split} | {len(subjects)} | {counts.get(split, 0)} |")
    if store.left_out():
        lines += ["", f"Left out of every split (QC): {', '.join(store.left_out())}"]
    lines += ["", "| subject | split | corr(T1, template) | volume scale | rim ratio | mask Dice "
              "| QC |", "|---|---|---|---|---|---|---|"]
    for row in store.qc_rows():
        if row.get("error"):
            lines.append(f"| {row['subject']} | – | failed: {row['error']} | | | | |")
            continue
        verdict = f"OUTLIER: {row['qc_reasons']}" if row.get("outlier") == "True" else "ok"
        if row.get("warnings"):
            verdict += f" (warning: {row['warnings']})"
        lines.append(f"| {row['subject']} | {row['split']} | "
                     f"{float(row['corr_t1_template']):.3f} | "
                     f"{float(row['volume_scale']):.3f} | {float(row['rim_ratio']):.3f} | "
                     f"{float(row['mask_dice']):.3f} | {verdict} |")
    return "\n".join(lines) + "\n"


def machine_record(runs) -> dict:
    """Where the runs were computed: :func:`colab_utils.runtime.devices.hardware` and the dtype
    policy each run trained in (its ``summary.json``; ``None`` when it has none)."""
    from ..runtime.devices import hardware

    policies = {Path(run).name: RunDir(run).summary().get("policy") for run in runs}
    return {**hardware(), "policies": policies}


def machine_markdown(machine: dict) -> str:
    """One paragraph on the machine and dtype policies behind a report's numbers."""
    policies = ", ".join(f"{name} {policy or 'unknown'}"
                         for name, policy in machine["policies"].items())
    return (f"Machine: {machine['device']}, {machine['cpus']} CPUs ({machine['cpu']}), "
            f"TensorFlow {machine['tensorflow']}. Dtype policy of each run: {policies}. "
            "The learned methods' numbers differ between policies (`--precision auto` "
            "trains in mixed_bfloat16 on CPUs with bfloat16 instructions, in float32 on "
            "others) and, a little, between machines and runs.")


def timings_markdown(steps: list[dict]) -> str:
    """A Markdown table of step timings."""
    lines = ["| step | seconds |", "|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']:.1f} |" for s in steps]
    lines.append(f"| **total** | **{sum(s['seconds'] for s in steps):.1f}** |")
    return "\n".join(lines)


def restarts_record(runs) -> dict:
    """Each run's collapse restarts (``summary.json``), for the runs that had any."""
    record = {}
    for run in runs:
        summary = RunDir(run).summary()
        if summary.get("restarts"):
            record[Path(run).name] = {"restarts": summary["restarts"], "seed": summary["seed"]}
    return record


def restarts_markdown(restarts: dict) -> str:
    """One line per collapsed attempt, and the seed each run finished with."""
    lines = []
    for name, entry in restarts.items():
        for r in entry["restarts"]:
            lines.append(f"- {name}: attempt {r['attempt'] + 1} (seed {r['seed']}) collapsed at "
                         f"epoch {r['epoch']}: {'; '.join(r['reasons'])}")
        lines.append(f"- {name}: trained to the end with seed {entry['seed']}")
    return ("The collapse check (colab_utils.training.health, on validation slices) "
            "restarted these runs with the next seed:\n\n" + "\n".join(lines) + "\n")


def pipeline_sections(validation_report: Path | None, store, record: dict) -> list[Section]:
    """The pipeline's sections of the test comparison's report (see the module
    docstring); ``validation_report`` is linked relative to the test report's folder."""
    link = ""
    if validation_report is not None:
        relative = Path("..") / Path(validation_report).parent.name / Path(
            validation_report).name
        link = f" ([their comparison]({relative.as_posix()}))"
    sections = [Section("How the settings were chosen", (
        "Every setting of this run (the preset's, and what was tried before it: "
        f"docs/EXPERIMENTS.md) was chosen on the validation subjects{link}; the test "
        "subjects above were scored once, after the choice."))]
    if record.get("restarts"):
        sections.append(Section("Restarts", restarts_markdown(record["restarts"])))
    if record.get("warnings"):
        sections.append(Section("Warnings",
                                "\n".join(f"- **{w}**" for w in record["warnings"])))
    sections += [Section("The data", store_report(store)),
                 Section("How long each step took (this run)",
                         timings_markdown(record["steps"]) + "\n\n"
                         + machine_markdown(record["machine"])
                         + f"\n\nSettings: `{json.dumps(record['settings'])}`")]
    return sections
