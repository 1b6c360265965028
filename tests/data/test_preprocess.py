import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from colab_utils.config import DataConfig
from colab_utils.data.axial import select_slices, to_slice
from colab_utils.data.nifti import find_pairs, load_volume
from colab_utils.data.phantom import DESCRIPTION, write_phantom
from colab_utils.data.preprocess import preprocess
from colab_utils.data.store import SliceStore, load_split
from colab_utils.data.template import mni_template

# The shared store's settings (tests/conftest.py): 2 train, 1 val, 1 test subjects.
CONFIG = DataConfig(val_fraction=0.25, test_fraction=0.25)


def _index(store):
    with open(store / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_phantom_files_are_labelled_and_need_registration(phantom_dir):
    pairing = find_pairs(phantom_dir)
    assert sorted(pairing.pairs) == [f"phantom-00{i}" for i in range(1, 5)]
    assert "PHANTOM" in (phantom_dir / "PHANTOM_README.txt").read_text()
    assert json.loads((phantom_dir / "phantom.json").read_text())["phantom"] is True

    t1_image = nib.load(phantom_dir / "phantom-001-T1.nii.gz")
    t2_image = nib.load(phantom_dir / "phantom-001-T2.nii.gz")
    assert DESCRIPTION.encode()[:40] in t1_image.header["descrip"].tobytes()
    # A full head like IXI's: the T1 stored in sagittal slices (anterior, superior, left),
    # the T2 an axial slab on another grid, stored left-right flipped.
    assert nib.aff2axcodes(t1_image.affine) == ("A", "S", "L")
    assert nib.aff2axcodes(t2_image.affine) == ("L", "A", "S")
    assert t1_image.shape[:2] == (256, 256) and t2_image.shape[:2] == (256, 256)
    assert t1_image.shape != t2_image.shape
    t1, _ = load_volume(phantom_dir / "phantom-001-T1.nii.gz")
    t2, _ = load_volume(phantom_dir / "phantom-001-T2.nii.gz")
    assert t1.max() > 500 and (t1 > 50).mean() > 0.08
    # The head goes down to the neck (about 25 cm); the T2's slab covers 15.6 cm.
    assert np.ptp(np.flatnonzero((t1 > 100).any(axis=(0, 1)))) > 220
    assert 100 < np.ptp(np.flatnonzero((t2 > 100).any(axis=(0, 1)))) * 1.3 <= 160
    assert json.loads((phantom_dir / "phantom.json").read_text())["kind"] == "head"


def test_store_splits_by_subject(store):
    rows = _index(store)
    by_split = {}
    for row in rows:
        by_split.setdefault(row["split"], set()).add(row["subject"])
    assert set(by_split) == {"train", "val", "test"}
    assert sum(len(s) for s in by_split.values()) == 4
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])
    assert {row["slice"] for row in rows} == {"120"}


def test_registration_quality_is_recorded_and_good(store):
    with open(store / "qc.csv", newline="") as f:
        qc = list(csv.DictReader(f))
    assert len(qc) == 4
    for r in qc:
        assert float(r["corr_t1_template"]) > 0.8 and r["outlier"] == "False"
        assert 0.6 < float(r["volume_scale"]) < 1.0  # adult brains, smaller than the template
        assert float(r["rim_ratio"]) < 0.9 and float(r["mask_dice"]) > 0.9
        assert r["qc_reasons"] == "" and r["split"] in ("train", "val", "test")
        assert r["start_t1_to_template"] and r["start_t2_to_t1"]
    assert all((store / "qc" / f"{r['subject']}.png").stat().st_size > 10_000 for r in qc)


def test_store_loads_for_training(store):
    train = load_split(store, "train")
    assert train.paired and train.t1.shape == (2, 256, 256, 1)
    assert 0 <= train.t1.min() and train.t1.max() <= 1
    assert list(train.t1_subjects) == list(train.t2_subjects)
    assert train.mask.shape == train.t1.shape and train.mask.mean() > 0.2
    # Outside the brain mask both contrasts are zero; inside, T1 and T2 differ
    # (T2-like: CSF bright) and are anti-correlated, as real T1/T2 are.
    inside = train.mask[0, ..., 0]
    assert np.all(train.t1[0, ..., 0][~inside] == 0)
    corr = np.corrcoef(train.t1[0, ..., 0][inside], train.t2[0, ..., 0][inside])[0, 1]
    assert corr < -0.3
    # Each subject has its own brain mask (the template's would be the same for both).
    assert train.t1_subjects[0] != train.t1_subjects[1]
    assert not np.array_equal(train.mask[0], train.mask[1])
    assert np.array_equal(train.mask, train.t2_mask)  # paired: the same subject's mask


def _shards(store):
    """Every array of every split's shards, by split/shard/name."""
    out = {}
    for path in sorted(store.glob("*/shard-*.npz")):
        with np.load(path) as data:
            out.update({f"{path.parent.name}/{path.name}/{k}": data[k] for k in data.files})
    return out


def test_rerun_skips_finished_subjects_and_gives_the_same_store(store, phantom_dir, messages):
    before = _shards(store)
    written = {p: p.stat().st_mtime_ns for p in store.glob("*/shard-*.npz")}
    preprocess(find_pairs(phantom_dir).pairs, store, CONFIG, workers=1)
    assert "4 already done, 0 to do" in messages[0]
    # The same content: no shard is written again (its content version is recorded).
    assert {p: p.stat().st_mtime_ns for p in store.glob("*/shard-*.npz")} == written
    assert any("nothing rewritten" in m for m in messages)
    after = _shards(store)
    assert before.keys() == after.keys() and len(before) == 12  # t1, t2 and masks
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    before_meta = (store / "preprocess.json").read_text()
    with pytest.raises(ValueError, match=r"preprocess.json: .*other settings \(\['slice_size'\]\)"):
        preprocess(find_pairs(phantom_dir).pairs, store,
                   DataConfig(slice_size=128, val_fraction=0.25, test_fraction=0.25))
    assert (store / "preprocess.json").read_text() == before_meta


def test_unpaired_mode_and_a_broken_subject(store, phantom_dir, tmp_path, messages):
    # Reuse the finished subjects (a store resumes from them); add a broken one.
    other = tmp_path / "unpaired"
    shutil.copytree(store / "subjects", other / "subjects")
    pairs = dict(find_pairs(phantom_dir).pairs)
    broken = tmp_path / "broken-T1.nii.gz"
    broken.write_bytes(b"not a nifti")
    pairs["broken"] = (broken, phantom_dir / "phantom-001-T2.nii.gz")
    flat = tmp_path / "flat-T1.nii.gz"  # a constant volume: nothing to register
    nib.save(nib.Nifti1Image(np.full((32, 32, 32), 100.0, np.float32), np.eye(4)), str(flat))
    pairs["flat"] = (flat, phantom_dir / "phantom-001-T2.nii.gz")
    config = DataConfig(unpaired=True, val_fraction=0.25, test_fraction=0.25)
    preprocess(pairs, other, config, workers=1)
    assert any("broken: skipped" in m and "broken-T1.nii.gz" in m for m in messages)
    assert any("flat: skipped" in m and "flat-T1.nii.gz: expected an image with varying "
               "intensities, got a constant volume" in m for m in messages)
    with open(other / "qc.csv", newline="") as f:
        assert any(r["subject"] == "broken" and "unreadable" in r["error"]
                   for r in csv.DictReader(f))
    train = load_split(other, "train")
    assert not train.paired
    assert not set(train.t1_subjects) & set(train.t2_subjects)
    assert len(train.t1) == len(train.t2) == 1  # one subject gives its T1, the other its T2
    assert train.mask.shape == train.t1.shape and train.t2_mask.shape == train.t2.shape


def test_missing_shard_is_a_clear_error(store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (copy / "val" / "shard-000.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-000.npz: shard listed in .*missing"):
        load_split(copy, "val")


def test_slice_selection_and_layout():
    _, mask, _ = mni_template()
    assert select_slices(mask, "seed") == [120]
    assert select_slices(mask, "range", slice_range=(10, 13)) == [10, 11, 12]
    brain = select_slices(mask, "brain")
    assert 100 < len(brain) < mask.shape[2] and 120 in brain
    plane = np.zeros((197, 233), np.float32)
    plane[0, -1] = 1  # right-most x, most anterior y
    image = to_slice(plane, 256)
    assert image.shape == (256, 256)
    row, col = np.argwhere(image == 1)[0]
    assert row == (256 - 233) // 2 and col == (256 - 197) // 2  # anterior is up


def test_changing_only_the_split_resplits_without_registering_again(store, tmp_path, messages):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    pairs = {p.stem: (None, None) for p in (copy / "subjects").glob("*.npz")}  # all done
    split_file = tmp_path / "split.csv"
    split_file.write_text("subject,split\nphantom-001,test\nphantom-002,train\n"
                          "phantom-003,val\nphantom-004,train\n")
    preprocess(pairs, copy, DataConfig(val_fraction=0.25, test_fraction=0.25,
                                             split_file=str(split_file)))
    assert "4 already done, 0 to do" in messages[0]
    splits = json.loads((copy / "preprocess.json").read_text())["splits"]
    assert splits == {"train": ["phantom-002", "phantom-004"], "val": ["phantom-003"],
                      "test": ["phantom-001"]}
    assert set(load_split(copy, "test").t1_subjects) == {"phantom-001"}


def test_phantom_smooth_field_equals_a_3d_cubic_zoom():
    # The field is built as three 1-D spline zooms (matrix products); it must be the
    # 3-D cubic zoom it replaces, with the same random grid, on an odd, uneven shape.
    from scipy import ndimage

    from colab_utils.data.phantom import _smooth_field

    shape, coarse, amplitude = (37, 50, 23), 5, 3.0
    field = _smooth_field(np.random.default_rng(4), shape, coarse, amplitude)
    grid = np.random.default_rng(4).normal(size=(coarse,) * 3)
    zoomed = ndimage.zoom(grid, [n / coarse for n in shape], order=3, mode="nearest")
    expected = amplitude * zoomed / np.abs(zoomed).max()
    assert field.shape == shape and field.dtype == np.float32
    np.testing.assert_allclose(field, expected, atol=1e-6)
    assert np.abs(field).max() == pytest.approx(amplitude, rel=1e-6)
    assert np.abs(np.diff(field, axis=0)).max() < 0.5 * amplitude  # smooth, not noise


def test_phantom_in_parallel_equals_sequential(phantom_dir, tmp_path):
    # phantom_dir holds subjects 1-4 of seed 7, written by one process.
    parallel = write_phantom(tmp_path / "parallel", n_subjects=2, seed=7, workers=2)
    for sid in ("phantom-001", "phantom-002"):
        for modality in ("T1", "T2"):
            a = nib.load(phantom_dir / f"{sid}-{modality}.nii.gz")
            b = nib.load(parallel / f"{sid}-{modality}.nii.gz")
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
    subjects = json.loads((parallel / "phantom.json").read_text())["subjects"]
    assert [s["subject"] for s in subjects] == ["phantom-001", "phantom-002"]


def test_sigkill_midway_then_rerun_redoes_nothing_finished_and_equals_uninterrupted(
        store, phantom_dir, tmp_path, messages):
    """A preprocessing run that already has 2 of 4 subjects is SIGKILLed, whole process
    group (its worker too), at a random moment after it finishes a third; the re-run
    keeps what was finished, never reads a partial file, and ends with the
    uninterrupted run's slice store."""
    out = tmp_path / "killed"
    (out / "subjects").mkdir(parents=True)
    for subject in ("phantom-001", "phantom-002"):
        shutil.copy(store / "subjects" / f"{subject}.npz", out / "subjects")
    code = ("import sys; from colab_utils.data.nifti import find_pairs; "
            "from colab_utils.config import DataConfig; "
            "from colab_utils.data.preprocess import preprocess; "
            "preprocess(find_pairs(sys.argv[1]).pairs, sys.argv[2], DataConfig("
            "val_fraction=0.25, test_fraction=0.25), workers=1)")
    process = subprocess.Popen([sys.executable, "-c", code, str(phantom_dir), str(out)],
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if len(list((out / "subjects").glob("*.npz"))) > 2:
            time.sleep(random.Random(3).uniform(0.0, 1.0))
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait(timeout=60) == -signal.SIGKILL, "finished before it was killed"
    finished = sorted((out / "subjects").glob("*.npz"))
    assert len(finished) == 3
    for path in finished:  # a subject file under its final name is always complete
        assert SliceStore(out).subject_record(path.stem) is not None, path
    preprocess(find_pairs(phantom_dir).pairs, out, CONFIG, workers=1)
    assert "3 already done, 1 to do" in messages[0]
    expected, got = _shards(store), _shards(out)
    assert expected.keys() == got.keys() and len(expected) == 12
    for key in expected:
        np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
