"""Registration with SimpleITK: T2 → T1 (rigid) and T1 → MNI152 (affine).

Arrays and affines are RAS+ (as :func:`colab_utils.data.nifti.load_volume`
returns them); SimpleITK works in LPS physical space, and the conversion is
done here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS) from a RAS+ array and affine."""
    affine = np.asarray(affine, np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_TO_LPS @ affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).T))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin((_RAS_TO_LPS @ affine[:3, 3]).tolist())
    return image


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """A RAS+ array and affine from a SimpleITK image."""
    data = sitk.GetArrayFromImage(image).T.astype(np.float32)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(image.GetOrigin())
    return data, affine


@lru_cache(maxsize=1)
def mni_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's MNI152 2009 template at 1 mm: ``(t1 in [0, 1], brain mask, affine)``.

    It ships inside the nilearn package, so this works offline.
    """
    import nibabel as nib
    from nilearn.datasets import MNI152_FILE_PATH, load_mni152_brain_mask

    image = nib.as_closest_canonical(nib.load(MNI152_FILE_PATH))
    t1 = np.asarray(image.dataobj, np.float32)
    t1 /= t1.max()
    mask_image = nib.as_closest_canonical(load_mni152_brain_mask(resolution=1))
    mask = np.asarray(mask_image.dataobj) > 0
    return t1, mask, image.affine.astype(np.float64)


@dataclass
class Registration:
    """A fitted transform (maps fixed-space points to moving-space points) and its quality."""

    transform: sitk.Transform
    metric: float  # final value of the optimised metric (Mattes MI: lower is better)


def _register(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *,
              sampling: float, iterations: int, shrink=(4, 2), smooth=(2.0, 1.0),
              seed: int = 0) -> Registration:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK reads a seed of 0 as "seed from the wall clock" (sitkWallClock): offset ours
    # by one so that every seed, 0 included, gives the same samples on every run.
    method.SetMetricSamplingPercentage(sampling, seed + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smooth))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    # Optimised in place: `transform` keeps its concrete type (Euler, affine).
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return Registration(transform, float(method.GetMetricValue()))


def _centred(fixed, moving, transform):
    return sitk.CenteredTransformInitializer(
        fixed, moving, transform, sitk.CenteredTransformInitializerFilter.MOMENTS)


def _coarse(image: sitk.Image, factor: int) -> sitk.Image:
    """Block-average by ``factor`` (fast and anti-aliased); registration is
    estimated on this grid, which is what keeps a subject to a few seconds."""
    return image if factor <= 1 else sitk.BinShrink(image, [factor] * 3)


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, sampling: float = 0.1,
                   iterations: int = 200, downsample: int = 2, seed: int = 0) -> Registration:
    """Rigid (6 parameters) registration by Mattes mutual information, e.g. T2 → T1.

    The transform maps points of ``fixed`` to points of ``moving``.
    """
    fixed, moving = _coarse(fixed, downsample), _coarse(moving, downsample)
    start = sitk.Euler3DTransform(_centred(fixed, moving, sitk.Euler3DTransform()))
    return _register(fixed, moving, start, sampling=sampling, iterations=iterations, seed=seed,
                     shrink=(2, 1), smooth=(2.0, 0.0))


def register_affine(fixed: sitk.Image, moving: sitk.Image, *, sampling: float = 0.1,
                    iterations: int = 200, downsample: int = 2, seed: int = 0) -> Registration:
    """Affine (12 parameters) registration, rigid first then affine, e.g. T1 → template."""
    fixed, moving = _coarse(fixed, downsample), _coarse(moving, downsample)
    rigid = register_rigid(fixed, moving, sampling=sampling, iterations=iterations,
                           downsample=1, seed=seed)
    # Start the affine stage from the rigid result (same matrix, centre and translation).
    start = sitk.AffineTransform(3)
    start.SetMatrix(rigid.transform.GetMatrix())
    start.SetTranslation(rigid.transform.GetTranslation())
    start.SetCenter(rigid.transform.GetCenter())
    return _register(fixed, moving, start, sampling=sampling, iterations=iterations, seed=seed,
                     shrink=(2, 1), smooth=(2.0, 0.0))


def resample(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
             *, interpolator=sitk.sitkLinear) -> sitk.Image:
    """``moving`` resampled onto ``reference``'s grid through ``transform`` (0 outside)."""
    return sitk.Resample(moving, reference, transform, interpolator, 0.0, sitk.sitkFloat32)


def mean_displacement(a: sitk.Transform, b: sitk.Transform, points_mm: np.ndarray) -> float:
    """Mean distance (mm) between where ``a`` and ``b`` send each LPS point."""
    moved_a = np.array([a.TransformPoint(tuple(p)) for p in points_mm])
    moved_b = np.array([b.TransformPoint(tuple(p)) for p in points_mm])
    return float(np.linalg.norm(moved_a - moved_b, axis=1).mean())


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two volumes inside a mask (a registration quality number)."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
