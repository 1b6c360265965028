"""The QC test set: correct registrations of phantom subjects of each kind, and the same
subjects deliberately mis-registered, judged by the QC rules as a preprocessing batch
would judge them.

Per kind, ``--subjects`` subjects are registered as preprocessing does (correct). Each
broken registration is the correct one composed with a known error in template space:
``shift`` (12 mm along each axis), ``scale`` (the brain 15% too large), ``flip`` (upside
down), ``head_into_brain`` (the template's brain stretched 1.2× over the head: the head
squeezed into the brain's outline, the error registration used to make on full heads).
Correct subjects are judged as one batch; each broken one is judged in a batch with the
correct ones. Prints one JSON line per kind and a
summary line: correct ones flagged (the goal is 0) and broken ones missed (the goal is 0).

    python benchmarks/qc_set.py [--kinds head,brain,thick,icbm] [--subjects 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ERRORS = {"shift": ("translate", (12.0, 12.0, 12.0)), "scale": ("scale", 1 / 1.15),
          "flip": ("flip", None), "head_into_brain": ("scale", 1.2)}


def _error(kind: str, value):
    """The error as a template -> template transform (applied before the registration)."""
    import SimpleITK as sitk

    from colab_utils.data.template import mni_template

    _, mask, affine = mni_template()
    centre = affine[:3, :3] @ (np.argwhere(mask).mean(0)) + affine[:3, 3]
    centre_lps = (centre * np.array([-1, -1, 1])).tolist()
    transform = sitk.AffineTransform(3)
    transform.SetCenter(centre_lps)
    if kind == "translate":
        transform.SetTranslation(value)
    elif kind == "scale":
        transform.SetMatrix((np.eye(3) * value).ravel().tolist())
    else:  # upside down: superior <-> inferior
        transform.SetMatrix(np.diag([1.0, 1.0, -1.0]).ravel().tolist())
    return transform


def numbers(pair, transform, volume_scale: float, slice_mm: float, contrast=False) -> dict:
    from colab_utils.data import registration as reg
    from colab_utils.data.brain_mask import subject_brain_mask
    from colab_utils.data.intensity import normalise
    from colab_utils.data.qc import contrast_numbers, quality_numbers

    template, _ = reg.template_images()
    t1, _ = reg.from_sitk(reg.resample(pair.t1_image, template, transform))
    mask, info = subject_brain_mask(t1=t1)
    record = quality_numbers(t1, volume_scale, info, slice_mm=slice_mm)
    if contrast:  # the pair's contrast check, as preprocessing makes it
        t2, _ = reg.from_sitk(reg.resample(pair.t2_image, template, pair.template_to_t2))
        record.update(contrast_numbers(normalise(t1, mask, 0.5, 99.5),
                                       normalise(t2, mask, 0.5, 99.5), mask))
    return record


def run_kind(kind: str, subjects: int, seed: int, icbm_dir) -> dict:
    import SimpleITK as sitk

    from colab_utils.data.nifti import save_volume
    from colab_utils.data.phantom import make_subject
    from colab_utils.data.preprocess import register_pair
    from colab_utils.data.qc import flag_outliers

    correct, broken = {}, {}
    for index in range(subjects):
        subject = make_subject(index, seed, kind=kind, icbm_dir=icbm_dir)
        with tempfile.TemporaryDirectory() as tmp:
            t1 = save_volume(Path(tmp) / "t1.nii.gz", subject.t1, subject.t1_affine)
            t2 = save_volume(Path(tmp) / "t2.nii.gz", subject.t2, subject.t2_affine)
            pair = register_pair(t1, t2)
        slice_mm = max(max(pair.t1_image.GetSpacing()), max(pair.t2_image.GetSpacing()))
        found = pair.t1_to_template
        correct[f"s{index}"] = numbers(pair, found.transform, found.volume_scale, slice_mm,
                                       contrast=True)
        for name, (how, value) in ERRORS.items():
            error = _error(how, value)
            composite = sitk.CompositeTransform([found.transform, error])
            det = abs(np.linalg.det(np.asarray(error.GetMatrix()).reshape(3, 3)))
            broken[f"s{index}-{name}"] = numbers(pair, composite, found.volume_scale * det,
                                                 slice_mm)
    batch = {k: dict(v) for k, v in correct.items()}
    flag_outliers(batch)
    flagged = sorted(k for k, r in batch.items() if r["outlier"])
    missed, reasons = [], {}
    for name, record in broken.items():
        trial = {**{k: dict(v) for k, v in correct.items()}, name: dict(record)}
        flag_outliers(trial)
        if not trial[name]["outlier"]:
            missed.append(name)
        reasons[name] = trial[name]["qc_reasons"] or trial[name]["warnings"]
    return {"benchmark": "qc_set", "kind": kind, "correct": len(correct),
            "correct_flagged": flagged, "broken": len(broken), "broken_missed": missed,
            "warned_correct": sorted(k for k, r in batch.items() if r["warnings"]),
            "contrast": {k: [r["t1_skew"], r["t2_skew"], r["corr_t1_t2"]]
                         for k, r in correct.items()},
            "reasons": reasons}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="head,brain,thick,icbm")
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--icbm-dir", default="data/icbm152")
    args = parser.parse_args(argv)
    icbm_dir = None
    kinds = args.kinds.split(",")
    if "icbm" in kinds:
        from colab_utils.data.icbm import fetch_icbm

        icbm_dir = fetch_icbm(Path(args.icbm_dir), progress=False)
    lines, started = [], time.perf_counter()
    for kind in kinds:
        line = run_kind(kind, args.subjects, args.seed, icbm_dir)
        print(json.dumps(line), flush=True)
        lines.append(line)
    print(json.dumps({"benchmark": "qc_set", "kinds": kinds,
                      "correct": sum(x["correct"] for x in lines),
                      "correct_flagged": sum(len(x["correct_flagged"]) for x in lines),
                      "broken": sum(x["broken"] for x in lines),
                      "broken_missed": sum(len(x["broken_missed"]) for x in lines),
                      "seconds": round(time.perf_counter() - started, 1)}))
    return lines


if __name__ == "__main__":
    main()
