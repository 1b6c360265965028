import numpy as np
import pytest
import SimpleITK as sitk

from colab_utils.data import registration as reg


def _template():
    t1, mask, affine = reg.mni_template()
    return reg.to_sitk(t1, affine), mask


def _brain_points(image, mask, step=400):
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, i)))
                     for i in np.argwhere(mask)[::step]])


def _centre(image):
    return image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()])


def test_sitk_conversion_round_trips_ras_affines():
    rng = np.random.default_rng(0)
    data = rng.uniform(size=(5, 6, 7)).astype(np.float32)
    affine = np.array([[0, -1.2, 0, 10], [0.9, 0, 0, -4], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    back, back_affine = reg.from_sitk(reg.to_sitk(data, affine))
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)
    # A voxel's physical point is the RAS position with x and y negated (LPS).
    image = reg.to_sitk(data, affine)
    ras = affine @ [1, 2, 3, 1]
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((1, 2, 3)),
                               [-ras[0], -ras[1], ras[2]])


def test_rigid_registration_recovers_a_known_transform():
    fixed, mask = _template()
    truth = sitk.Euler3DTransform()
    truth.SetCenter(_centre(fixed))
    truth.SetRotation(*np.deg2rad([6.0, -4.0, 8.0]))
    truth.SetTranslation((5.0, -7.0, 4.0))
    moving = reg.resample(fixed, fixed, truth.GetInverse())
    found = reg.register_rigid(fixed, moving)
    error = reg.mean_displacement(found.transform, truth, _brain_points(fixed, mask))
    assert error < 1.5
    identity_error = reg.mean_displacement(sitk.Euler3DTransform(), truth,
                                           _brain_points(fixed, mask))
    assert identity_error > 8  # the task was not trivial


def test_affine_registration_recovers_a_known_transform():
    fixed, mask = _template()
    truth = sitk.AffineTransform(3)
    truth.SetCenter(_centre(fixed))
    truth.SetMatrix((1.06, 0.03, 0.0, -0.02, 0.95, 0.02, 0.0, 0.01, 1.03))
    truth.SetTranslation((3.0, 4.0, -5.0))
    moving = reg.resample(fixed, fixed, truth.GetInverse())
    found = reg.register_affine(fixed, moving)
    assert reg.mean_displacement(found.transform, truth, _brain_points(fixed, mask)) < 1.5


def test_masked_correlation():
    a = np.arange(27, dtype=float).reshape(3, 3, 3)
    mask = np.ones_like(a, bool)
    assert reg.masked_correlation(a, 2 * a + 1, mask) == pytest.approx(1.0)
    assert reg.masked_correlation(a, -a, mask) == pytest.approx(-1.0)
    assert reg.masked_correlation(a, np.zeros_like(a), mask) == 0.0
