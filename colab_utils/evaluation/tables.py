"""Tables of scores: per slice, per subject, summarised, and as Markdown.

Every number is on the [0, 1] intensity scale with ``data_range=1``; each metric
has a masked (inside the brain) and an unmasked column (:data:`COLUMNS`).
"""

from __future__ import annotations

import numpy as np

from ..config import DIRECTIONS
from ..metrics import METRICS

REGIONS = ("masked", "unmasked")
COLUMNS = tuple(f"{m}_{r}" for r in REGIONS for m in METRICS)
# Direction in which each metric improves (for "best" in tables).
HIGHER_IS_BETTER = {"mae": False, "mse": False, "psnr": True, "ssim": True, "mi": True}
LABELS = {"t1_to_t2": "T1 → T2", "t2_to_t1": "T2 → T1"}


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
