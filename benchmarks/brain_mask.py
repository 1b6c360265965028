"""The subject brain mask on real anatomy: the MNI ICBM 2009c full head (real MRI with
scalp, face and neck) as the real-contrast phantom makes it (deformed, posed, stored like
a scanner), registered and masked as preprocessing does, against its true brain (the
pair's own brain mask carried through the same deformation and pose).

Per subject: Dice with the true brain, the share of the mask's voxels outside it (and
more than 3 mm outside: scalp, not a boundary disagreement), and what that does to the
intensity normalisation (the 99.5th percentile inside the mask against inside the true
brain). The template's own mask (the fallback) is measured the same way for scale.
With ``--extractor deepbet`` the learned extractor's mask (:mod:`colab_utils.data.
extractor`) is made from the same registered T1 and measured the same way too (it needs
the deepbet package and torch). Prints one JSON line; ``*_seconds`` are per subject, for
the mask alone (the registration is shared), after a one-off load (``*_load_seconds``).

    python benchmarks/brain_mask.py [--subjects 6] [--seed 0] [--icbm-dir data/icbm152]
                                    [--extractor deepbet]
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


def measure(subject, folder: Path, extractor: str = "own") -> dict:
    from scipy import ndimage

    from colab_utils.data import registration as reg
    from colab_utils.data.extractor import brain_mask
    from colab_utils.data.intensity import clip_range
    from colab_utils.data.nifti import save_volume
    from colab_utils.data.preprocess import register_into_template
    from colab_utils.data.template import mni_template

    t1_path = save_volume(folder / "t1.nii.gz", subject.t1, subject.t1_affine)
    t2_path = save_volume(folder / "t2.nii.gz", subject.t2, subject.t2_affine)
    t1, _, mask, pair = register_into_template(t1_path, t2_path)
    template, _ = reg.template_images()
    truth_image = reg.to_sitk(subject.truth["brain"].astype(np.float32), subject.t1_affine)
    truth = reg.from_sitk(reg.resample(truth_image, template,
                                       pair.t1_to_template.transform))[0] > 0.5
    outside_3mm = ndimage.distance_transform_edt(~truth) > 3
    _, template_mask, _ = mni_template()

    def figures(m):
        inside = max(int(m.sum()), 1)
        return {"dice": round(float(2 * (m & truth).sum() / (m.sum() + truth.sum())), 4),
                "outside": round(float((m & ~truth).sum() / inside), 4),
                "outside_3mm": round(float((m & outside_3mm).sum() / inside), 4),
                "p99_5_ratio": round(clip_range(t1, m, 0.5, 99.5)[1]
                                     / clip_range(t1, truth, 0.5, 99.5)[1], 4)}

    row = {"own": figures(mask), "template": figures(template_mask),
           "fallback": pair.mask_info["mask_fallback"]}
    started = time.perf_counter()
    brain_mask(t1, "own")  # timed again on its own (the registration is not the mask's)
    row["own"]["seconds"] = round(time.perf_counter() - started, 2)
    if extractor != "own":
        started = time.perf_counter()
        learned, info = brain_mask(t1, extractor)
        row[extractor] = {**figures(learned),
                          "seconds": round(time.perf_counter() - started, 2)}
        row[f"{extractor}_fallback"] = info["mask_fallback"]
    return row


def main(argv=None) -> dict:
    from colab_utils.config import BRAIN_EXTRACTORS
    from colab_utils.data.icbm import fetch_icbm
    from colab_utils.data.phantom import make_subject

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--icbm-dir", default="data/icbm152")
    parser.add_argument("--extractor", default="own", choices=BRAIN_EXTRACTORS,
                        help="also measure this learned extractor's mask (default: the own "
                             "mask and the template's only)")
    args = parser.parse_args(argv)
    icbm_dir = fetch_icbm(Path(args.icbm_dir), progress=False)
    load = {}
    if args.extractor != "own":  # load it once, before the clock of the subjects
        from colab_utils.data import extractor

        started = time.perf_counter()
        extractor.require_extractor(args.extractor)
        extractor._deepbet()
        load[f"{args.extractor}_load_seconds"] = round(time.perf_counter() - started, 1)
    rows, started = [], time.perf_counter()
    for index in range(args.subjects):
        subject = make_subject(index, args.seed, kind="icbm", icbm_dir=icbm_dir,
                               with_brain=True)
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(subject, Path(tmp), args.extractor))
    masks = ("own", "template") + (() if args.extractor == "own" else (args.extractor,))
    summary = {
        f"{which}_{key}": [r[which][key] for r in rows]
        for which in masks for key in ("dice", "outside", "outside_3mm", "p99_5_ratio",
                                       "seconds") if key in rows[0][which]}
    if args.extractor != "own":
        summary[f"{args.extractor}_fallbacks"] = sum(r[f"{args.extractor}_fallback"]
                                                     for r in rows)
    result = {"benchmark": "brain_mask", "kind": "icbm", "subjects": args.subjects,
              "seed": args.seed, "extractor": args.extractor,
              "fallbacks": sum(r["fallback"] for r in rows), **summary, **load,
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
