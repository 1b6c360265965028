"""Figures: per-epoch translation grids, loss curves and tables of images.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they
save the same way in a terminal, in CI and in a notebook; they draw arrays and
run no model.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .fileio import atomic_write_bytes


def save_figure(fig, path) -> Path:
    """Save a figure as PNG atomically (readers never see half a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def cycle_images(forward, backward, t1: np.ndarray, t2: np.ndarray) -> dict:
    """What a translation grid shows: each input translated and translated back, with
    ``forward`` (T1 → T2) and ``backward`` (T2 → T1) functions of [0, 1] images."""
    fake_t2, fake_t1 = forward(t1), backward(t2)
    return {"t1": t1, "t2": t2, "fake_t2": fake_t2, "rec_t1": backward(fake_t2),
            "fake_t1": fake_t1, "rec_t2": forward(fake_t1)}


def translation_grid(images: dict, *, paired: bool, title: str = "") -> Figure:
    """Grid of rows ``input | translated | reconstructed [| ground truth]`` per slice.

    For each slice there is a T1 row (T1 → synthetic T2 → reconstructed T1,
    real T2 when paired) and a T2 row (the reverse).

    Args:
        images: :func:`cycle_images`: slices (N, H, W, C) in [0, 1], T1 and T2 aligned if
            ``paired``. With several channels (2.5-D neighbourhoods) the middle one
            is shown.
        paired: Add a ground-truth column.
        title: Figure title (e.g. the epoch).
    """
    t1, t2 = images["t1"], images["t2"]
    fake_t2, rec_t1 = images["fake_t2"], images["rec_t1"]
    fake_t1, rec_t2 = images["fake_t1"], images["rec_t2"]
    rows = []
    for i in range(len(t1)):
        rows.append((("T1 input", t1[i]), ("T1→T2", fake_t2[i]), ("T1→T2→T1", rec_t1[i]))
                    + ((("real T2", t2[i]),) if paired else ()))
        rows.append((("T2 input", t2[i]), ("T2→T1", fake_t1[i]), ("T2→T1→T2", rec_t2[i]))
                    + ((("real T1", t1[i]),) if paired else ()))
    n_cols = len(rows[0])
    title_lines = title.count("\n") + 1 if title else 0
    fig = Figure(figsize=(2.2 * n_cols, 2.2 * len(rows) + 0.3 * title_lines), dpi=100)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            ax = axes[r, c]
            # The middle channel: the slice itself when the networks see neighbours (2.5-D).
            ax.imshow(image[..., image.shape[-1] // 2], cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r < 2 or c == 0:
                ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=12 if title_lines == 1 else 9)
    fig.tight_layout()
    return fig


def read_history(path) -> list[dict]:
    """Rows of a ``history.csv`` with numeric values as floats."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def health_caption(logs: dict) -> str:
    """The collapse check's figures of an epoch (``health_*`` in ``logs``), one line per
    direction to append to a title; empty when the epoch has none."""
    parts = []
    for direction, label in (("t1_to_t2", "T1→T2"), ("t2_to_t1", "T2→T1")):
        if f"health_ssim_{direction}" in logs:
            parts.append(f"{label} SSIM {logs[f'health_ssim_{direction}']:.2f} (Simple "
                         f"{logs[f'health_simple_{direction}']:.2f}), tissue order "
                         f"{logs[f'health_order_{direction}']:+.2f}")
    return "".join("\n" + part for part in parts)


def loss_curves(history: list[dict]) -> Figure:
    """Loss curves per epoch: generator terms, discriminator terms, validation, and
    the collapse check's scores (linear scale; the Simple baseline's dashed).

    A term missing from some rows (validation runs every ``validate_every``
    epochs) is drawn through the epochs that have it.
    """
    keys = list(dict.fromkeys(k for row in history for k in row))
    groups = {
        "generator": [k for k in keys if k.startswith((
            "gen_", "adv_", "cycle_", "identity_", "structure_", "supervised_", "kl_", "recon_"))],
        "discriminator": [k for k in keys if k.startswith("disc_")],
        "validation": [k for k in keys if k.startswith("val_")],
        # Masked SSIM and rank correlation on validation slices (colab_utils.training.health).
        "collapse check": [k for k in keys if k.startswith("health_")],
    }
    groups = {name: keys for name, keys in groups.items() if keys}
    fig = Figure(figsize=(5 * len(groups), 3.6), dpi=100)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, keys) in zip(axes, groups.items()):
        for key in keys:
            points = [(row["epoch"], row[key]) for row in history
                      if isinstance(row.get(key), float)]
            if points and any(v != 0 for _, v in points):
                ax.plot(*zip(*points), marker="o", markersize=3, label=key,
                        linestyle="--" if "_simple_" in key else "-")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if name == "collapse check":  # scores in [-1, 1], not losses
            ax.axhline(0.0, color="grey", linewidth=0.5)
        else:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def image_table(rows, columns, *, error_columns=(), error_max: float = 0.5,
                title: str = "") -> Figure:
    """A table of images: one row per ``(row_label, [image, ...])``, one column per label.

    Images are (H, W, C) or (H, W) in [0, 1], shown in grey; the columns in
    ``error_columns`` are absolute-error maps, shown in ``magma`` from 0 to
    ``error_max``.
    """
    fig = Figure(figsize=(2.0 * len(columns), 2.0 * len(rows) + 0.5), dpi=100)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, (row_label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            image = np.asarray(image)
            image = image[..., 0] if image.ndim == 3 else image
            error = c in error_columns
            ax.imshow(image, cmap="magma" if error else "gray", vmin=0.0,
                      vmax=error_max if error else 1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def volume_centre(data: np.ndarray) -> tuple[int, int, int]:
    """The middle voxel of a volume's non-zero voxels (of the whole grid when none)."""
    inside = np.argwhere(data != 0)
    centre = (inside.min(0) + inside.max(0)) // 2 if len(inside) else np.array(data.shape) // 2
    return tuple(int(c) for c in centre)


def orthogonal_views(volumes: list[tuple[str, np.ndarray, tuple]], point=None) -> Figure:
    """Axial, coronal and sagittal planes through one point of volumes in one RAS grid.

    Args:
        volumes: ``(title, data, voxel_sizes)`` per row: arrays in RAS order (as
            :func:`colab_utils.data.nifti.load_volume` returns them), all of one shape.
        point: The voxel ``(i, j, k)`` the planes go through; by default the middle of
            the first volume's non-zero voxels.

    Raises:
        ValueError: The volumes are not of one shape, or ``point`` is outside them.
    """
    shape = volumes[0][1].shape
    for title, data, _ in volumes:
        if data.shape != shape:
            raise ValueError(f"{title}: expected the grid of {volumes[0][0]} {shape}, "
                             f"got {data.shape}")
    point = volume_centre(volumes[0][1]) if point is None else tuple(int(p) for p in point)
    if not all(0 <= p < n for p, n in zip(point, shape)):
        raise ValueError(f"point {point}: expected a voxel inside {shape}")
    i, j, k = point
    fig = Figure(figsize=(9, 3 * len(volumes)), layout="constrained")
    axes = fig.subplots(len(volumes), 3, squeeze=False)
    for row, (title, data, sizes) in enumerate(volumes):
        sx, sy, sz = (float(s) for s in sizes)
        lo, hi = np.percentile(data[data != 0], (0.5, 99.5)) if (data != 0).any() else (0, 1)
        planes = [("axial", data[:, :, k], sy / sx), ("coronal", data[:, j, :], sz / sx),
                  ("sagittal", data[i, :, :], sz / sy)]
        for ax, (name, plane, aspect) in zip(axes[row], planes):
            # Rows of the image are the plane's second axis, pointing up; the first axis
            # runs left to right on screen: in a RAS+ volume the patient's right is on the
            # image's right (neurological convention).
            ax.imshow(plane.T, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6),
                      aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{title}: {name}", fontsize=9)
    fig.suptitle(f"voxel {point}", fontsize=9)
    return fig
