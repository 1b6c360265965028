"""Registration quality control: numbers per subject, judged against the other subjects.

Per subject (:func:`quality_numbers`, on the registered T1 in template space):

* ``corr_t1_template``: correlation with the template inside its brain mask;
* ``volume_scale``: how much the template → subject map scales volume (an adult
  brain is about 0.8 of the template's; a head squeezed into the brain's
  outline gives more than 1);
* ``rim_ratio``: the T1 in the outer 3 mm of the template's brain mask over the
  T1 in its core. The rim should be cortex and CSF, darker than the core; on a
  registration that put the mask on the scalp it is fat, brighter than brain.
  It means something only for a head with scalp: on skull-stripped input
  (``skull_stripped``, nothing bright outside the brain) it is not judged;
* ``mask_dice``: the subject's own brain mask against the template's
  (:mod:`.brain_mask`); not judged when the own mask fell back to the
  template's (``mask_fallback``: its Dice of 1.0 is a sentinel, not a value);
* ``slice_mm``: the thickest voxel side of the scans (thick clinical slices);
* ``t1_skew``, ``t2_skew``, ``corr_t1_t2`` (:func:`contrast_numbers`): the skewness of
  each scan inside the brain, and their correlation. A T1 and a T2 are anticorrelated
  inside the brain (white matter bright in one, dark in the other; CSF the other way
  round): -0.28 to -0.35 on the real-contrast ICBM phantom, about -0.9 on the
  tissue-map kinds. A "T2" correlated positively with its T1 (a second T1, the same scan
  twice, a post-contrast T1) is flagged by itself, with the files named. The skewness
  is recorded, not judged: on real MRI a T2's brain is skewed to the dark side as a
  T1's is (ICBM: -0.68 to -0.83), so it cannot tell the two apart. Swapped files show
  in ``corr_t1_template`` (the "T1" is then a T2, far from the template T1).
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
# The smallest spread (in the feature's own units) the batch statistics assume: below
# it, differences between correct registrations are noise.
SPREAD_FLOOR = {"corr_t1_template": 0.03, "volume_scale": 0.03, "rim_ratio": 0.05,
                "mask_dice": 0.015}
MIN_BATCH = 5
# Above this correlation with its T1 inside the brain a "T2" is ordered like a T1; above
# the second, it is the T1 again.
SAME_ORDER_CORRELATION = 0.0
COPY_CORRELATION = 0.95
ROBUST_Z, FAR_Z = 4.0, 8.0
# Skull-stripped input: the T1 just outside the template's brain (5-15 mm out) is darker
# than this fraction of the brain's core (a head's scalp and skull marrow are bright).
STRIPPED_BELOW = 0.08


@lru_cache(maxsize=1)
def _rim_core_shell() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template brain's outer rim, its core, and a shell 5-15 mm outside it."""
    _, mask, _ = mni_template()
    depth = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return mask & (depth <= RIM_MM), depth > 4 * RIM_MM, (outside > 5) & (outside <= 15)


def quality_numbers(t1_template: np.ndarray, volume_scale: float, mask_info: dict, *,
                    slice_mm: float = 1.0) -> dict:
    """The QC numbers of one subject (see the module docstring).

    Args:
        t1_template: The subject's T1 on the template grid (registered, not normalised).
        volume_scale: |det| of the template → subject affine.
        mask_info: What :func:`colab_utils.data.brain_mask.subject_brain_mask` returned.
        slice_mm: The thickest voxel side of the subject's scans.
    """
    from .registration import masked_correlation

    template, mask, _ = mni_template()
    rim, core, shell = _rim_core_shell()
    inside = np.median(t1_template[core])
    outside = float(np.percentile(t1_template[shell], 90)) / inside if inside > 0 else 0.0
    return {"corr_t1_template": round(masked_correlation(t1_template, template, mask), 4),
            "volume_scale": round(float(volume_scale), 4),
            "rim_ratio": round(float(np.median(t1_template[rim]) / inside), 4)
            if inside > 0 else float("inf"),
            "mask_dice": mask_info["mask_dice"], "mask_fallback": mask_info["mask_fallback"],
            "mask_reason": mask_info.get("mask_reason", ""),
            "skull_stripped": bool(outside < STRIPPED_BELOW),
            "slice_mm": round(float(slice_mm), 2)}


def contrast_numbers(t1: np.ndarray, t2: np.ndarray, mask: np.ndarray) -> dict:
    """``t1_skew``, ``t2_skew`` and ``corr_t1_t2`` inside ``mask`` (see the module
    docstring); the volumes on one grid, normalised or not."""
    def skew(values):
        spread = max(float(values.std()), 1e-12)
        return float(((values - values.mean()) ** 3).mean()) / spread ** 3

    a, b = t1[mask].astype(np.float64), t2[mask].astype(np.float64)
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0
    return {"t1_skew": round(skew(a), 3), "t2_skew": round(skew(b), 3),
            "corr_t1_t2": round(correlation, 4)}


def contrast_reasons(record: dict) -> list[str]:
    """Why a pair is not a T1 and a T2, one reason each ([] for a plausible pair or a
    record without the numbers)."""
    def number(name):
        value = record.get(name)
        return None if value in (None, "") else float(value)

    t1, t2 = record.get("t1") or "the T1", record.get("t2") or "the T2"
    reasons = []
    if (c := number("corr_t1_t2")) is not None and c > COPY_CORRELATION:
        reasons.append(f"the T2 {t2} is nearly the T1 {t1} (correlation {c:.3f} inside the "
                       "brain): a copy, or the same scan twice?")
    elif c is not None and c > SAME_ORDER_CORRELATION:
        reasons.append(f"the T2 {t2} is ordered like its T1 {t1} inside the brain "
                       f"(correlation {c:+.2f}; a T1 and a T2 are anticorrelated): a second "
                       "T1 or a post-contrast scan given as the T2?")
    return reasons


def _judged(name: str, record: dict) -> float | None:
    """The value of feature ``name`` where it means something (``None``: not judged)."""
    value = record.get(name)
    if value is None or value == "":
        return None
    if name == "rim_ratio" and record.get("skull_stripped"):
        return None  # the rim of a stripped brain is cortex against nothing
    if name == "mask_dice" and record.get("mask_fallback"):
        return None  # the template's own mask: a Dice of 1.0 by construction
    return float(value)


def flag_outliers(records: dict[str, dict]) -> None:
    """Set ``outlier``, ``qc_reasons`` and ``warnings`` (each a "; "-separated text) of
    every record in place (see the module docstring for the rules).

    Args:
        records: ``{subject: numbers}`` as :func:`quality_numbers` gives them.
    """
    reasons = {subject: [] for subject in records}
    borderline = {subject: [] for subject in records}
    warnings = {subject: [] for subject in records}
    for name, (low, high) in LIMITS.items():
        values = {s: v for s, r in records.items() if (v := _judged(name, r)) is not None}
        for subject, value in values.items():
            if not low <= value <= high:
                reasons[subject].append(f"{name} {value:.3g} outside [{low}, {high}]")
        if len(values) < MIN_BATCH:
            continue
        median = float(np.median(list(values.values())))
        mad = float(np.median([abs(v - median) for v in values.values()])) * 1.4826
        spread = max(mad, SPREAD_FLOOR[name])
        for subject, value in values.items():
            z = (value - median) / spread
            side = BAD_SIDE[name]
            if not ((side in ("low", "both") and z < -ROBUST_Z)
                    or (side in ("high", "both") and z > ROBUST_Z)):
                continue
            text = f"{name} {value:.3g} far from the other subjects' {median:.3g} " \
                   f"(robust z {z:+.1f})"
            (reasons if abs(z) > FAR_Z else borderline)[subject].append(text)
    for subject, record in records.items():
        reasons[subject] += contrast_reasons(record)
        if len(borderline[subject]) >= 2:
            reasons[subject] += borderline[subject]
        else:
            warnings[subject] += borderline[subject]
        if record.get("mask_fallback"):
            why = record.get("mask_reason") or "its volume was implausible"
            warnings[subject].append(f"own brain mask not used ({why}); the template's "
                                     "mask was used instead")
        record["outlier"] = bool(reasons[subject])
        record["qc_reasons"] = "; ".join(reasons[subject])
        record["warnings"] = "; ".join(warnings[subject])


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
