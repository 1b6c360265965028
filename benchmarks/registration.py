"""Registration accuracy on phantoms whose true anatomy is known: T1 → template, T2 → T1
and T2 alone → template (synthesis from a T2) errors (mean distance over template brain
points, mm), per phantom kind.

Prints one JSON line per kind. One ITK thread, as preprocessing runs it.

    python benchmarks/registration.py [--kinds head,brain,thick] [--subjects 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LPS = np.array([-1.0, -1.0, 1.0])


def errors(subject, points) -> dict:
    import SimpleITK as sitk  # noqa: F401  (registration's dependency)

    from colab_utils.data import registration as reg
    from colab_utils.data.phantom import template_to_scanner

    truth_t1 = template_to_scanner(subject.truth, points)
    pose = np.asarray(subject.truth["pose_t1"])
    movement = pose @ np.asarray(subject.truth["movement_t2"]) @ np.linalg.inv(pose)
    truth_t2 = truth_t1 @ movement[:3, :3].T + movement[:3, 3]
    t1 = reg.to_sitk(subject.t1, subject.t1_affine)
    t2 = reg.to_sitk(subject.t2, subject.t2_affine)
    started = time.perf_counter()
    to_template = reg.register_to_template(t1)
    t1_seconds = time.perf_counter() - started
    t2_to_t1 = reg.register_rigid(t1, t2, fixed_mask=reg.brain_region_in(
        t1, to_template.transform))
    seconds = time.perf_counter() - started
    t2_alone = reg.register_to_template(t2, "t2")

    def moved(transform, ras):
        return np.array([transform.TransformPoint(tuple(p * LPS)) for p in ras]) * LPS

    return {"t1": float(np.linalg.norm(moved(to_template.transform, points) - truth_t1,
                                       axis=1).mean()),
            "t2": float(np.linalg.norm(moved(t2_to_t1.transform, truth_t1) - truth_t2,
                                       axis=1).mean()),
            "t2_alone": float(np.linalg.norm(moved(t2_alone.transform, points) - truth_t2,
                                             axis=1).mean()),
            "scale_error": to_template.volume_scale - abs(np.linalg.det(pose[:3, :3])),
            "t1_seconds": t1_seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="head,brain,thick")
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import SimpleITK as sitk

    from colab_utils.data.phantom import make_subject
    from colab_utils.data.template import mni_template

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _, mask, affine = mni_template()
    points = (affine[:3, :3] @ np.argwhere(mask)[::300].T).T + affine[:3, 3]
    for kind in args.kinds.split(","):
        rows = [errors(make_subject(i, args.seed, kind=kind), points)
                for i in range(args.subjects)]

        def stats(key, rows=rows):
            values = np.array([r[key] for r in rows])
            return {"mean": round(float(values.mean()), 3), "max": round(float(values.max()), 3)}

        print(json.dumps({
            "benchmark": "registration", "kind": kind, "subjects": args.subjects,
            "seed": args.seed, "t1_to_template_mm": stats("t1"), "t2_to_t1_mm": stats("t2"),
            "t2_alone_to_template_mm": stats("t2_alone"),
            "volume_scale_error": stats("scale_error"),
            "over_2mm": sum(r["t1"] > 2 for r in rows),
            "s_t1_to_template": stats("t1_seconds"), "s_both": stats("seconds")}), flush=True)


if __name__ == "__main__":
    main()
