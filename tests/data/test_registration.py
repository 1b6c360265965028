"""Registration and the subject's brain mask on phantoms whose truth is known: the T1 to the
template by its brain (a full head with neck, a thick-slice scan, the real ICBM head), the
T2 to the T1, and the brain mask against the subject's true brain.

The ICBM case needs the pair in ``data/icbm152`` (or ``$ICBM152_DIR``; see test_icbm.py).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from colab_utils.data import registration as reg
from colab_utils.data.icbm import is_ready
from colab_utils.data.nifti import save_volume
from colab_utils.data.phantom import make_subject, template_to_scanner
from colab_utils.data.preprocess import register_into_template
from colab_utils.data.template import mni_template

LPS = np.array([-1.0, -1.0, 1.0])
ICBM = Path(os.environ.get("ICBM152_DIR", Path(__file__).resolve().parents[2] / "data" /
                           "icbm152"))


def _moved(transform, ras):
    return np.array([transform.TransformPoint(tuple(p * LPS)) for p in ras]) * LPS


# (kind, subject index, T1 -> template mm, brain-mask Dice): the head subjects the
# centre-of-mass start used to squeeze into the brain, a 5 mm scan, the real head.
CASES = [("head", 3, 2.0, 0.98), ("thick", 1, 2.0, 0.88), ("icbm", 2, 2.0, 0.94)]


@pytest.mark.parametrize("kind, index, limit_mm, min_dice", CASES)
def test_t1_to_template_t2_to_t1_and_the_brain_mask_against_the_truth(kind, index, limit_mm,
                                                                     min_dice, tmp_path):
    if kind == "icbm" and not is_ready(ICBM):
        pytest.fail(f"{ICBM}: the ICBM 2009c pair is not there; fetch it with `python -m "
                    f"colab_utils download icbm152 --dest {ICBM}`")
    subject = make_subject(index, 0, kind=kind, with_brain=True,
                           icbm_dir=ICBM if kind == "icbm" else None)
    t1_path = save_volume(tmp_path / "t1.nii.gz", subject.t1, subject.t1_affine)
    t2_path = save_volume(tmp_path / "t2.nii.gz", subject.t2, subject.t2_affine)
    _, _, mask, pair = register_into_template(t1_path, t2_path)

    _, template_mask, affine = mni_template()
    points = (affine[:3, :3] @ np.argwhere(template_mask)[::500].T).T + affine[:3, 3]
    truth_t1 = template_to_scanner(subject.truth, points,
                                   icbm_dir=ICBM if kind == "icbm" else None)
    error = np.linalg.norm(_moved(pair.t1_to_template.transform, points) - truth_t1, axis=1)
    assert error.mean() <= limit_mm, f"T1 -> template {error.mean():.2f} mm"
    pose = np.asarray(subject.truth["pose_t1"])
    movement = pose @ np.asarray(subject.truth["movement_t2"]) @ np.linalg.inv(pose)
    truth_t2 = truth_t1 @ movement[:3, :3].T + movement[:3, 3]
    t2_error = np.linalg.norm(_moved(pair.t2_to_t1.transform, truth_t1) - truth_t2, axis=1)
    assert t2_error.mean() <= 1.0, f"T2 -> T1 {t2_error.mean():.2f} mm"
    assert abs(pair.t1_to_template.volume_scale - abs(np.linalg.det(pose[:3, :3]))) < 0.06

    template, _ = reg.template_images()
    brain = reg.from_sitk(reg.resample(
        reg.to_sitk(subject.truth["brain"].astype(np.float32), subject.t1_affine), template,
        pair.t1_to_template.transform))[0] > 0.5
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice >= min_dice, f"brain mask Dice {dice:.3f}"
