"""Whole-volume evaluation: plane metrics, flicker, template and native space, the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from colab_utils import metrics
from colab_utils.data.axial import to_slice
from colab_utils.data.store import SliceStore
from colab_utils.evaluation.compare import compare
from colab_utils.evaluation.inference import Method
from colab_utils.evaluation.scoring import evaluate, is_current
from colab_utils.evaluation.volumes import (
    VOLUME_COLUMNS,
    score_subject,
    score_volume,
    subject_volumes,
)
from colab_utils.fileio import read_csv
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train

ROOT = Path(__file__).resolve().parents[1]


def _smooth_volume(seed=0, shape=(40, 48, 36)):
    rng = np.random.default_rng(seed)
    volume = gaussian_filter(rng.uniform(0, 1, shape), 2.0)
    volume = (volume - volume.min()) / np.ptp(volume)
    return volume, volume > 0.3


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plane_metrics_are_the_2d_metrics_of_each_plane_averaged(axis):
    reference, mask = _smooth_volume()
    estimate = np.clip(reference + np.random.default_rng(1).normal(0, 0.05, reference.shape),
                       0, 1)
    got = metrics.plane_metrics(reference, estimate, mask, axis=axis, min_voxels=20)
    planes = [k for k in range(reference.shape[axis])
              if np.take(mask, k, axis=axis).sum() >= 20]
    each = [metrics.all_metrics(np.take(reference, k, axis=axis),
                                np.take(estimate, k, axis=axis),
                                mask=np.take(mask, k, axis=axis)) for k in planes]
    assert got["n_planes"] == len(planes) > 10
    for metric in metrics.METRICS:
        assert got[metric] == pytest.approx(np.mean([e[metric] for e in each]), rel=1e-6,
                                            abs=1e-9), metric


def test_a_perfect_volume_scores_ssim_one_zero_error_and_no_flicker():
    reference, mask = _smooth_volume()
    row = score_volume(reference, reference.copy(), mask)
    for plane in ("axial", "coronal", "sagittal"):
        assert row[f"{plane}_ssim"] == pytest.approx(1.0)
        assert row[f"{plane}_mae"] == 0.0 and row[f"{plane}_psnr"] == metrics.PSNR_CAP_DB
    assert row["flicker"] == 0.0 and row["flicker_ratio"] == 0.0


def test_flicker_separates_per_slice_jitter_from_a_smooth_error():
    reference, mask = _smooth_volume(2)
    rng = np.random.default_rng(3)
    # The same mean error, 5%: one constant over the volume, one drawn per axial slice.
    smooth = reference * 0.95
    jitter = reference * (1 + 0.05 * rng.choice([-1, 1], reference.shape[2]))[None, None, :]
    calm, flickering = score_volume(reference, smooth, mask), score_volume(reference, jitter, mask)
    assert calm["axial_mae"] == pytest.approx(flickering["axial_mae"], rel=0.25)
    assert flickering["flicker_ratio"] > 4 * calm["flicker_ratio"]
    assert flickering["flicker_ratio"] > 0.1


def _oracle(volumes, direction, slice_size):
    """A translator that returns the real target's planes, in the order asked for."""
    target = volumes.volume(direction.split("_to_")[1])
    zs = [k for k in range(volumes.mask.shape[2]) if volumes.mask[:, :, k].any()]
    planes = iter(to_slice(target[:, :, k], slice_size) for k in zs)

    def translate(images, masks=None):
        return np.stack([next(planes) for _ in range(len(images))])[..., None]

    return translate


@pytest.fixture(scope="module")
def volume_store(store, tmp_path_factory):
    """A copy of the shared store (volume evaluation caches into its store)."""
    return shutil.copytree(store, tmp_path_factory.mktemp("volumes") / "store")


def test_a_perfect_translator_scores_one_and_native_space_is_within_interpolation(
        volume_store):
    settings = json.loads((volume_store / "preprocess.json").read_text())["config"]
    subject = json.loads((volume_store / "preprocess.json").read_text())["splits"]["test"][0]
    volumes = subject_volumes(volume_store, subject)
    size = settings["slice_size"]
    for direction in ("t1_to_t2", "t2_to_t1"):
        method = Method("oracle", size, {direction: _oracle(volumes, direction, size)})
        row, synthetic = score_subject(method, volumes, direction, slice_size=size)
        assert row["axial_planes"] > 100  # every plane of the brain, not a slice range
        for plane in ("axial", "coronal", "sagittal"):
            assert row[f"{plane}_ssim"] == pytest.approx(1.0, abs=1e-6), (direction, plane)
            assert row[f"{plane}_mae"] == pytest.approx(0.0, abs=1e-6)
        assert row["flicker"] == pytest.approx(0.0, abs=1e-6)
        assert row["volume_mae"] == pytest.approx(0.0, abs=1e-6)
        assert row["volume_psnr"] == metrics.PSNR_CAP_DB
        # On the scan's own grid: the target resampled there from template space against
        # the real scan rigidly resampled there: equal but for interpolation.
        assert row["native_mae"] < 0.03 and row["native_ssim"] > 0.9, row
        assert set(VOLUME_COLUMNS) <= set(row)
    # Cached: the second call reads the store's cache and gives the very same arrays (a
    # reference computed in this process is the cached one: every method is scored
    # against the same volumes whichever call computed them).
    assert SliceStore(volume_store).volume_file(subject).is_file()
    again = subject_volumes(volume_store, subject)
    np.testing.assert_array_equal(again.t1, volumes.t1)
    np.testing.assert_array_equal(again.t2, volumes.t2)
    for direction in ("t1_to_t2", "t2_to_t1"):
        np.testing.assert_array_equal(again.native[direction].target,
                                      volumes.native[direction].target)
        np.testing.assert_array_equal(again.native[direction].mask,
                                      volumes.native[direction].mask)


def test_a_missing_scan_is_a_clear_error_naming_it(volume_store, tmp_path):
    store = shutil.copytree(volume_store, tmp_path / "store")
    subject = json.loads((store / "preprocess.json").read_text())["splits"]["val"][0]
    record_path = store / "subjects" / f"{subject}.npz"
    with np.load(record_path) as data:
        arrays = dict(data)
    record = json.loads(str(arrays["record"]))
    record["t1"] = str(tmp_path / "moved" / "T1.nii.gz")
    arrays["record"] = json.dumps(record)
    np.savez(record_path, **arrays)
    with pytest.raises(FileNotFoundError, match=r"moved/T1\.nii\.gz: .* is no longer there"):
        subject_volumes(store, subject)


def test_cli_evaluate_volumes_and_compare_report_the_volume_table(volume_store, tmp_path):
    runs = []
    for name in ("simple", "other"):
        run = tmp_path / name
        train(smoke_config(model="simple"), run, volume_store, show_inline=False)
        runs.append(run)
    out = subprocess.run([sys.executable, "-m", "colab_utils", "evaluate", "--run",
                          str(runs[0]), "--data", str(volume_store), "--volumes"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "volumes.csv" in out.stdout
    rows = read_csv(runs[0] / "metrics" / "test" / "volumes.csv")
    assert [r["direction"] for r in rows] == ["t1_to_t2", "t2_to_t1"]
    for row in rows:
        assert 0.3 < row["axial_ssim"] < 1 and 0 < row["flicker_ratio"] < 2
        assert 0.3 < row["native_ssim"] < 1
    result = compare(runs, tmp_path / "cmp", data=volume_store, reference="simple",
                     qualitative_slices=0)
    report = result.report.read_text()
    assert "## Whole volumes" in report and "coronal ssim" in report
    assert "no other method has a whole-volume evaluation" in report  # "other" has none
    table = read_csv(tmp_path / "cmp" / "table_volumes.csv")
    assert {r["metric"] for r in table} >= {"axial_ssim", "flicker_ratio", "native_psnr"}
    # The volumes were scored on every plane: an evaluation wanted on every 2nd is not
    # this one.
    assert is_current(runs[0], volume_store, "test", volumes=True, plane_step=1)
    assert not is_current(runs[0], volume_store, "test", volumes=True, plane_step=2)
    # Evaluated again without volumes: the comparison shows no whole-volume table (the
    # file of the earlier evaluation stays, but it is not this evaluation's).
    evaluate(runs[0], volume_store, split="test", examples=0)
    assert not is_current(runs[0], volume_store, "test", volumes=True)
    again = compare(runs, tmp_path / "cmp2", data=volume_store, reference="simple",
                    qualitative_slices=0)
    assert "## Whole volumes" not in again.report.read_text()
