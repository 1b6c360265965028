import struct

import nibabel as nib
import numpy as np
import pytest

from colab_utils.data.nifti import (
    FOLDER_PATTERN,
    IXI_PATTERN,
    find_pairs,
    load_volume,
    pair_subjects,
    save_volume,
)


def _volume(shape=(6, 7, 5)):
    return np.random.default_rng(0).uniform(0, 100, shape).astype(np.float32)


def _write(path, data, affine, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype), affine), path)
    return path


def test_ras_las_lps_storage_loads_to_the_same_array(tmp_path):
    ras = _volume()
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    n = np.array(ras.shape)
    # LAS: first axis runs right-to-left.
    flip_x = np.diag([-1.0, 1, 1, 1])
    flip_x[0, 3] = n[0] - 1
    # LPS: first two axes reversed.
    flip_xy = np.diag([-1.0, -1, 1, 1])
    flip_xy[:2, 3] = n[:2] - 1
    paths = [_write(tmp_path / "ras.nii.gz", ras, affine),
             _write(tmp_path / "las.nii.gz", ras[::-1], affine @ flip_x),
             _write(tmp_path / "lps.nii", ras[::-1, ::-1], affine @ flip_xy)]
    for path in paths:
        data, loaded_affine = load_volume(path)
        assert nib.aff2axcodes(loaded_affine) == ("R", "A", "S")
        np.testing.assert_array_equal(data, ras)
        np.testing.assert_allclose(loaded_affine, affine)
        assert data.dtype == np.float32


def test_singleton_fourth_dimension_is_dropped(tmp_path):
    data, _ = load_volume(_write(tmp_path / "v.nii.gz", _volume()[..., None], np.eye(4)))
    assert data.shape == (6, 7, 5)


def test_save_volume_round_trip_and_integer_storage(tmp_path):
    affine = np.diag([1.0, 1.0, 1.3, 1.0])
    path = save_volume(tmp_path / "out.nii.gz", _volume(), affine, description="PHANTOM")
    data, loaded = load_volume(path)
    np.testing.assert_allclose(data, _volume())
    np.testing.assert_allclose(loaded, affine)
    assert b"PHANTOM" in nib.load(path).header["descrip"].tobytes()
    path = save_volume(tmp_path / "int.nii", _volume() * 1000, affine, dtype=np.int16)
    assert nib.load(path).get_data_dtype() == np.int16
    with pytest.raises(ValueError, match="expected a .nii or .nii.gz"):
        save_volume(tmp_path / "out.img", _volume(), affine)


def _truncated_gzip(tmp_path):
    good = _write(tmp_path / "good.nii.gz", _volume((20, 20, 20)), np.eye(4))
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[:300])
    return bad


def _zero_voxel_size(tmp_path):
    """A header with pixdim[1] = 0 and no qform/sform (written byte by byte)."""
    path = _write(tmp_path / "zero.nii", _volume(), np.eye(4))
    header = bytearray(path.read_bytes())
    struct.pack_into("<f", header, 80, 0.0)     # pixdim[1]
    struct.pack_into("<hh", header, 252, 0, 0)  # qform_code, sform_code
    path.write_bytes(bytes(header))
    return path


def _absurd_dimensions(tmp_path):
    """A header claiming 30000 voxels along x for a file holding 8×8×8."""
    path = _write(tmp_path / "absurd.nii", _volume((8, 8, 8)), np.eye(4))
    header = bytearray(path.read_bytes())
    struct.pack_into("<h", header, 42, 30000)  # dim[1]
    path.write_bytes(bytes(header))
    return path


BAD_INPUTS = {
    "empty file": (lambda p: (p / "empty.nii.gz").write_bytes(b"") and p / "empty.nii.gz"
                   or p / "empty.nii.gz", "empty file"),
    "truncated gzip": (_truncated_gzip, "unreadable NIfTI"),
    "not a nifti": (lambda p: (p / "text.nii").write_text("hello " * 100) and p / "text.nii",
                    "unreadable NIfTI"),
    "not gzip": (lambda p: (p / "plain.nii.gz").write_bytes(b"\x00" * 400) and
                 p / "plain.nii.gz", "unreadable NIfTI"),
    "2-D image": (lambda p: _write(p / "flat.nii.gz", np.zeros((8, 8)), np.eye(4)),
                  "expected a 3-D volume"),
    "5-D image": (lambda p: _write(p / "five.nii.gz", np.zeros((4, 4, 4, 2, 2)), np.eye(4)),
                  "expected a 3-D volume"),
    "4-D time series": (lambda p: _write(p / "bold.nii.gz", np.zeros((4, 4, 4, 3)), np.eye(4)),
                        "expected a 3-D volume"),
    "NaN voxels": (lambda p: _write(p / "nan.nii.gz", np.full((4, 4, 4), np.nan), np.eye(4)),
                   "expected finite voxel values, got 64 NaN/Inf"),
    "Inf voxels": (lambda p: _write(p / "inf.nii.gz", np.where(np.eye(4)[..., None] > 0, np.inf,
                                                               0.0) * np.ones((4, 4, 4)),
                                    np.eye(4)), "expected finite voxel values"),
    "zero voxel size": (lambda p: _zero_voxel_size(p), "expected positive voxel sizes"),
    "one-voxel axis": (lambda p: _write(p / "thin.nii.gz", np.zeros((1, 8, 8)), np.eye(4)),
                       "voxels per axis"),
    "absurd header dimensions": (lambda p: _absurd_dimensions(p), r"got \(30000, 8, 8\)"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_nifti_inputs_give_clear_errors_naming_the_file(tmp_path, kind):
    make, message = BAD_INPUTS[kind]
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        load_volume(tmp_path / "nope.nii.gz")


def test_ixi_pairing_reports_missing_modalities(tmp_path):
    names = ["IXI012-HH-1211-T1.nii.gz", "IXI012-HH-1211-T2.nii.gz",
             "IXI013-HH-1212-T1.nii.gz", "IXI014-Guys-0800-T2.nii.gz", "IXI.xls"]
    pairing = pair_subjects([tmp_path / n for n in names], IXI_PATTERN)
    assert list(pairing.pairs) == ["IXI012-HH-1211"]
    assert pairing.pairs["IXI012-HH-1211"][0].name == "IXI012-HH-1211-T1.nii.gz"
    assert pairing.missing_t2 == ["IXI013-HH-1212"]
    assert pairing.missing_t1 == ["IXI014-Guys-0800"]
    assert "1 with T1 only: IXI013-HH-1212" in pairing.report()


def test_folder_pattern_pairs_brats_and_bids_like_names(tmp_path):
    names = ["BraTS2021_00000_t1.nii.gz", "BraTS2021_00000_t2.nii.gz",
             "sub-01_T1w.nii.gz", "sub-01_T2w.nii.gz", "sub-02_flair.nii.gz"]
    pairing = pair_subjects([tmp_path / n for n in names], FOLDER_PATTERN)
    assert sorted(pairing.pairs) == ["BraTS2021_00000", "sub-01"]


def test_duplicate_subject_ids_are_an_error(tmp_path):
    files = [tmp_path / "a" / "s1-T1.nii.gz", tmp_path / "b" / "s1-T1.nii.gz"]
    with pytest.raises(ValueError, match="duplicate subject 's1' T1"):
        pair_subjects(files)


def test_find_pairs_on_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="found none"):
        find_pairs(tmp_path)
    _write(tmp_path / "s1-T1.nii.gz", _volume(), np.eye(4))
    with pytest.raises(ValueError, match="no subject has both"):
        find_pairs(tmp_path)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "s1-T2.nii.gz", _volume(), np.eye(4))
    assert list(find_pairs(tmp_path).pairs) == ["s1"]
    with pytest.raises(ValueError, match="named groups"):
        pair_subjects([], r"(?P<subject>.*)")
