"""Registration quality control: numbers per subject, judged against the other subjects.

Per subject (:func:`quality_numbers`, on the registered T1 in template space):

* ``corr_t1_template``: correlation with the template inside its brain mask;
* ``volume_scale``: how much the template → subject map scales volume (an adult
  brain is about 0.8 of the template's; a head squeezed into the brain's
  outline gives more than 1);
* ``rim_ratio``: the T1 in the outer 3 mm of the template's brain mask over the
  T1 in its core. The rim should be cortex and CSF, darker than the core; on a
  registration that put the mask on the scalp it is fat, brighter than brain;
* ``mask_dice``: the subject's own brain mask against the template's
  (:mod:`.brain_mask`), and ``mask_fallback`` when it had to fall back.

:func:`flag_outliers` judges each subject against the batch (a robust z-score,
median and MAD, in the direction that means failure; with 5 subjects or more)
and against absolute limits (:data:`LIMITS`) that correctly registered scans
pass, real clinical ones included (their correlation with the template can be
as low as 0.3). ``qc.csv`` says why a subject is flagged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from .template import mni_template

RIM_MM = 3
# Absolute limits: (lowest, highest) acceptable value of each number.
LIMITS = {"corr_t1_template": (0.2, 1.0), "volume_scale": (0.5, 1.15),
          "rim_ratio": (0.0, 0.9), "mask_dice": (0.8, 1.0)}
# Which side is failure, for the batch-relative judgement.
BAD_SIDE = {"corr_t1_template": "low", "volume_scale": "both", "rim_ratio": "high",
            "mask_dice": "low"}
MIN_BATCH = 5
ROBUST_Z = 4.0


@lru_cache(maxsize=1)
def _rim_and_core() -> tuple[np.ndarray, np.ndarray]:
    _, mask, _ = mni_template()
    depth = ndimage.distance_transform_edt(mask)
    return mask & (depth <= RIM_MM), depth > 4 * RIM_MM


def quality_numbers(t1_template: np.ndarray, volume_scale: float, mask_info: dict) -> dict:
    """The QC numbers of one subject (see the module docstring).

    Args:
        t1_template: The subject's T1 on the template grid (registered, not normalised).
        volume_scale: |det| of the template → subject affine.
        mask_info: What :func:`colab_utils.data.brain_mask.subject_brain_mask` returned.
    """
    from .registration import masked_correlation

    template, mask, _ = mni_template()
    rim, core = _rim_and_core()
    inside = np.median(t1_template[core])
    return {"corr_t1_template": round(masked_correlation(t1_template, template, mask), 4),
            "volume_scale": round(float(volume_scale), 4),
            "rim_ratio": round(float(np.median(t1_template[rim]) / inside), 4)
            if inside > 0 else float("inf"),
            "mask_dice": mask_info["mask_dice"], "mask_fallback": mask_info["mask_fallback"]}


def flag_outliers(records: dict[str, dict]) -> None:
    """Set ``outlier`` and ``qc_reasons`` (a "; "-separated text) of every record in place.

    Args:
        records: ``{subject: numbers}`` as :func:`quality_numbers` gives them.
    """
    reasons = {subject: [] for subject in records}
    for name, (low, high) in LIMITS.items():
        for subject, record in records.items():
            value = record.get(name)
            if value is None:
                continue
            if not low <= value <= high:
                reasons[subject].append(f"{name} {value:.3g} outside [{low}, {high}]")
        values = {s: r[name] for s, r in records.items() if r.get(name) is not None}
        if len(values) < MIN_BATCH:
            continue
        median = float(np.median(list(values.values())))
        mad = max(float(np.median([abs(v - median) for v in values.values()])) * 1.4826, 1e-3)
        for subject, value in values.items():
            z = (value - median) / mad
            side = BAD_SIDE[name]
            if (side in ("low", "both") and z < -ROBUST_Z) or \
                    (side in ("high", "both") and z > ROBUST_Z):
                reasons[subject].append(f"{name} {value:.3g} far from the other subjects' "
                                        f"{median:.3g} (robust z {z:+.1f})")
    for subject, record in records.items():
        if record.get("mask_fallback"):
            reasons[subject].append("own brain mask implausible; the template's was used")
        record["outlier"] = bool(reasons[subject])
        record["qc_reasons"] = "; ".join(reasons[subject])


def qc_montage(t1: np.ndarray, t2: np.ndarray, template_mask: np.ndarray,
               subject_mask: np.ndarray, title: str):
    """Axial, coronal and sagittal planes of registered T1 and T2 (normalised, [0, 1])
    with the template's brain outline (red) and the subject's own mask (cyan)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=80)
    axes = fig.subplots(2, 3)
    centre = [s // 2 for s in template_mask.shape]
    for row, (name, volume) in enumerate((("T1", t1), ("T2", t2))):
        cut = (np.s_[:, :, centre[2] + 20], np.s_[:, centre[1], :], np.s_[centre[0], :, :])
        for col, where in enumerate(cut):
            ax = axes[row, col]
            ax.imshow(np.flipud(volume[where].T), cmap="gray", vmin=0, vmax=1)
            for outline, colour in ((template_mask, "r"), (subject_mask, "c")):
                ax.contour(np.flipud(outline[where].T).astype(float), levels=[0.5],
                           colors=colour, linewidths=0.5)
            ax.set_axis_off()
            ax.set_title(f"{name} {('axial', 'coronal', 'sagittal')[col]}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
