"""Whole-volume synthesis: the output lies in the input's space and follows the translator."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import spearmanr

from colab_utils.config import DIRECTIONS
from colab_utils.data.axial import from_slice, to_slice
from colab_utils.data.phantom import write_phantom
from colab_utils.evaluation.inference import Method
from colab_utils.evaluation.synthesis import synthesize_volume, translate_volume

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("synth_phantom"), n_subjects=1, seed=11)


def identity(images, masks):
    return images


def as_method(translate, image_size):
    """A function of (images, masks) as a method of ``image_size`` in both directions."""
    return Method("test", image_size, {d: translate for d in DIRECTIONS})


def test_a_model_smaller_than_the_store_gives_back_each_structure_where_it_was():
    # A bright box off the centre of a 256-px plane, through an identity "model" at
    # 64 px: averaged down by blocks and brought back up, it must stay where it was,
    # the same size (an up-sampling that aligns the image corners, not the pixel centres,
    # magnified it by about a voxel at each side).
    volume = np.zeros((256, 256, 3), np.float32)
    volume[40:80, 150:210, :] = 1.0
    mask = np.ones(volume.shape, bool)
    out = translate_volume(as_method(identity, 64), "t1_to_t2", volume, mask, slice_size=256)
    inside = out[:, :, 1] > 0.5
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (40, 79, 150, 209)
    centre = np.argwhere(out[:, :, 1] > 0).mean(0)
    np.testing.assert_allclose(centre, [59.5, 179.5], atol=0.05)
    assert abs(out[:, :, 1].sum() - volume[:, :, 1].sum()) < 1e-3 * volume[:, :, 1].sum()


def _overlap_correlation(a_path, b_path, *, ranks=False):
    a = np.asarray(nib.load(str(a_path)).dataobj, np.float64)
    b = np.asarray(nib.load(str(b_path)).dataobj, np.float64)
    inside = (b != 0) & (a > 0)
    if ranks:  # Spearman: for outputs that are a monotone but non-linear map of the input
        return spearmanr(a[inside], b[inside])[0], inside.sum()
    return np.corrcoef(a[inside], b[inside])[0, 1], inside.sum()


@pytest.mark.parametrize("plane_shape", [(182, 218), (300, 240), (256, 256)])
def test_from_slice_inverts_to_slice(plane_shape):
    plane = np.random.default_rng(0).random(plane_shape).astype(np.float32)
    back = from_slice(to_slice(plane, 256), plane_shape)
    assert back.shape == plane_shape
    keep_x = slice(max((plane_shape[0] - 256) // 2, 0), None)
    keep_y = slice(max((plane_shape[1] - 256) // 2, 0), None)
    inner = (slice(keep_x.start, keep_x.start + min(256, plane_shape[0])),
             slice(keep_y.start, keep_y.start + min(256, plane_shape[1])))
    np.testing.assert_array_equal(back[inner], plane[inner])


def test_output_has_the_inputs_shape_affine_and_anatomy(phantom, tmp_path):
    # The phantom's T2 is stored LAS on 1.3 mm slices in a tilted pose: far from the template.
    source = phantom / "phantom-001-T2.nii.gz"
    out = tmp_path / "t2_through_identity.nii.gz"
    info = synthesize_volume(as_method(identity, 256), source, out, direction="t2_to_t1")
    original, written = nib.load(str(source)), nib.load(str(out))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(original.affine) == ("L", "A", "S")
    assert 100 < info["n_slices"] <= 182 and info["total_s"] > 0
    # An identity "model" must give back the input (within the brain, up to clipping and
    # two interpolations), in the input's intensity units.
    correlation, voxels = _overlap_correlation(source, out)
    assert correlation > 0.9 and voxels > 100_000
    data = np.asarray(written.dataobj)
    assert 100 < np.percentile(data[data > 0], 50) < 1000  # input units (0-1000), not [0, 1]


def test_translator_contrast_reaches_the_output_at_a_small_model_size(phantom, tmp_path):
    source = phantom / "phantom-001-T1.nii.gz"
    out = tmp_path / "inverted.nii.gz"
    seen = []

    def invert(images, masks):
        seen.append(images.shape)
        return np.where(masks, 1.0 - images, 0.0)

    synthesize_volume(as_method(invert, 64), source, out, direction="t1_to_t2",
                      batch_size=32)
    assert all(s[1:] == (64, 64, 1) and s[0] <= 32 for s in seen)
    inverted, _ = _overlap_correlation(source, out)
    synthesize_volume(as_method(identity, 64), source, tmp_path / "same.nii.gz",
                      direction="t1_to_t2")
    same, _ = _overlap_correlation(source, tmp_path / "same.nii.gz")
    # 64 px is a 4x coarser in-plane grid: the identity loses detail but keeps the anatomy.
    assert same > 0.75 and inverted < -0.3
    assert nib.load(str(out)).shape == nib.load(str(source)).shape


def test_unreadable_or_flat_input_is_a_clear_error(tmp_path):
    flat = tmp_path / "flat-T1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 40, 40), np.float32), np.eye(4)), str(flat))
    with pytest.raises(ValueError, match="flat-T1.nii.gz"):
        synthesize_volume(as_method(identity, 64), flat, tmp_path / "out.nii.gz",
                          direction="t1_to_t2")
    assert not (tmp_path / "out.nii.gz").exists()
    two_d = tmp_path / "slice-T1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 40), np.float32), np.eye(4)), str(two_d))
    with pytest.raises(ValueError, match="slice-T1.nii.gz"):
        synthesize_volume(as_method(identity, 64), two_d, tmp_path / "out.nii.gz",
                          direction="t1_to_t2")


def test_cli_synthesize_with_the_simple_baseline(phantom, tmp_path):
    from colab_utils.models.simple import SimpleBaseline

    # Uniform target quantiles: the output is the rank of the inverted input.
    levels = np.linspace(0, 1, 101)
    baseline = SimpleBaseline({"t1": levels, "t2": levels})
    model = baseline.save(tmp_path / "simple_baseline.json")
    out = tmp_path / "t2_synth.nii.gz"
    result = subprocess.run(
        [sys.executable, "-m", "colab_utils", "synthesize", "--model", str(model),
         "--input", str(phantom / "phantom-001-T1.nii.gz"), "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    correlation, _ = _overlap_correlation(phantom / "phantom-001-T1.nii.gz", out, ranks=True)
    assert correlation < -0.6, correlation
    bad = subprocess.run(
        [sys.executable, "-m", "colab_utils", "synthesize", "--model", str(model),
         "--input", str(tmp_path / "missing.nii.gz"), "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "missing.nii.gz" in bad.stderr
    assert json.loads(model.read_text())  # the model file is untouched


def test_a_scan_of_the_other_contrast_or_a_label_map_is_refused_with_what_to_do(phantom,
                                                                               tmp_path):
    # A T2 given to a T1 -> T2 model: its brain's intensities are ordered like a T2's.
    with pytest.raises(ValueError, match=r"phantom-001-T2.nii.gz: expected a T1 for this "
                                         r"direction, but .* like a T2's .* direction "
                                         r"t2_to_t1"):
        synthesize_volume(as_method(identity, 64), phantom / "phantom-001-T2.nii.gz",
                          tmp_path / "out.nii.gz", direction="t1_to_t2")
    assert not (tmp_path / "out.nii.gz").exists()
    labels = tmp_path / "seg.nii.gz"
    segmentation = np.zeros((60, 60, 60), np.int16)
    segmentation[10:50, 10:50, 10:50] = 1
    segmentation[20:40, 20:40, 20:40] = 2
    nib.save(nib.Nifti1Image(segmentation, np.eye(4)), str(labels))
    with pytest.raises(ValueError, match=r"seg.nii.gz: expected a T1 MRI, got a volume of 3 "
                                         r"distinct values \(a segmentation"):
        synthesize_volume(as_method(identity, 64), labels, tmp_path / "out.nii.gz",
                          direction="t1_to_t2")
    series = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 3), np.float32), np.eye(4)), str(series))
    with pytest.raises(ValueError, match=r"series.nii.gz: expected a 3-D volume"):
        synthesize_volume(as_method(identity, 64), series, tmp_path / "out.nii.gz",
                          direction="t1_to_t2")


def test_orthogonal_views_cut_through_the_brain_with_each_plane_at_its_voxel_aspect():
    from colab_utils.viz import orthogonal_views, volume_centre

    volume = np.zeros((40, 50, 12), np.float32)
    volume[10:30, 5:45, 2:10] = np.linspace(0.1, 1, 40)[None, :, None]  # a "brain" off-centre
    assert volume_centre(volume) == (19, 24, 5)
    fig = orthogonal_views([("scan", volume, (1.0, 1.0, 4.0)),
                            ("synthetic", 1 - volume, (1.0, 1.0, 4.0))])
    axes = fig.get_axes()
    assert len(axes) == 6 and axes[4].get_title() == "synthetic: coronal"
    shown = axes[0].get_images()[0].get_array()
    assert shown.shape == (50, 40)  # axial: the plane at k = 5, rows along y
    np.testing.assert_allclose(shown, volume[:, :, 5].T)
    assert axes[1].get_aspect() == 4.0  # coronal: 4 mm slices drawn 4 times as tall
    with pytest.raises(ValueError, match=r"synthetic: expected the grid of scan \(40, 50, 12\)"):
        orthogonal_views([("scan", volume, (1, 1, 4)), ("synthetic", volume[:, :, :6], (1, 1, 4))])
    with pytest.raises(ValueError, match="expected a voxel inside"):
        orthogonal_views([("scan", volume, (1, 1, 4))], point=(0, 0, 12))


def test_a_thick_slice_scan_comes_back_on_its_own_grid(tmp_path):
    # A clinical-style T1 of 5 mm axial slices: translated on the template's 1 mm grid and
    # written back on the scan's 5 mm grid, the anatomy where it was.
    thick = write_phantom(tmp_path / "thick", n_subjects=1, seed=4, kind="thick")
    source = next(thick.glob("*-T1.nii.gz"))
    out = tmp_path / "thick_t2.nii.gz"
    synthesize_volume(as_method(identity, 64), source, out, direction="t1_to_t2")
    original, written = nib.load(str(source)), nib.load(str(out))
    assert max(original.header.get_zooms()[:3]) >= 4.5  # it is a thick-slice scan
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    correlation, voxels = _overlap_correlation(source, out)
    assert correlation > 0.7 and voxels > 5_000
