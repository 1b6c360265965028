"""Registration with SimpleITK: T1 → MNI152 (affine) and T2 → T1 (rigid), aligning brains.

Arrays and affines are RAS+ (as :func:`colab_utils.data.nifti.load_volume`
returns them); SimpleITK works in LPS physical space, and the conversion is
done here, once.

Real scans are not brains alone: IXI's T1s hold scalp, face and neck, with a
bright rim of scalp fat on T1 that a whole-image similarity happily matches to
the template brain's edge (the head squeezed into the brain's outline). Three
choices make the brain, not the head, drive the fit, whether the input is a
full head, a skull-stripped volume or a thick-slice clinical scan:

* the metric (Mattes mutual information) is computed only inside the
  template's brain mask (``SetMetricFixedMask``), not dilated: around a real
  brain lie CSF and skull, bright and dark on a T2, where the template is dark,
  and a margin let T2 scans match the template's edge to the skull (the brain
  stretched by a fifth; docs/REGISTRATION.md);
* the start does not depend on the neck's mass: candidates are the head's top
  (the vertex, found from the image's foreground) placed just above the
  template brain's top, at three pitches of the head, and the images' centres
  of mass; each gets a fit at 8 mm and the best metric wins (:func:`_best_start`);
* a pyramid from 8 mm to 2 mm voxels, each image binned per axis to about
  2 mm, and thick slices interpolated to it.

A full-head template (nilearn can fetch the MNI152 2009 head) was not used:
it needs a download, and offline runs must behave as on Colab.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..validation import check_choice
from .template import mni_template, mni_template_t2

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
# Registration works on images binned to about this voxel size.
BASE_MM = 2.0
# The template brain's top is placed this far below the head's top in the vertex
# start (scalp and skull above an adult brain; 0 would suit skull-stripped input,
# and the coarse fit takes either up).
VERTEX_GAP_MM = 8.0
# Adult brains are smaller than the template's (volume about 0.8 of it): the starts
# take this scale, and the first fit keeps it while it finds position and pose.
ADULT_SCALE = 0.93


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


@lru_cache(maxsize=2)
def template_images(contrast: str = "t1") -> tuple[sitk.Image, sitk.Image]:
    """The template of a contrast (``"t1"``, nilearn's; ``"t2"``, made from its tissue
    maps) as a SimpleITK image, and its metric region: the voxels of the template's
    grid binned to :data:`BASE_MM` (where registration computes the metric) that hold
    brain, as an 8-bit image."""
    t1, mask, affine = mni_template()
    template = to_sitk(t1 if contrast == "t1" else mni_template_t2(), affine)
    region = _coarse(to_sitk(mask.astype(np.float32), affine)) > 0
    return template, sitk.Cast(region, sitk.sitkUInt8)


@dataclass
class Registration:
    """A fitted transform (maps fixed-space points to moving-space points) and its quality."""

    transform: sitk.Transform
    metric: float  # final value of the optimised metric (Mattes MI: lower is better)
    start: str = ""  # which start won (:func:`_best_start`)

    @property
    def volume_scale(self) -> float:
        """|det| of the linear part: how much the map scales volumes (moving / fixed)."""
        return float(abs(np.linalg.det(np.asarray(self.transform.GetMatrix()).reshape(3, 3))))


def _coarse(image: sitk.Image, mm: float = BASE_MM) -> sitk.Image:
    """The image on a grid of about ``mm``: axes finer than that block-averaged (fast and
    anti-aliased), axes more than twice as coarse (thick slices) interpolated to it.

    Interpolating thick slices matters for two thick-slice scans of one subject: on
    their own 5 mm grids, T2 -> T1 erred three times as much (docs/REGISTRATION.md).
    """
    factors = [max(1, int(round(mm / s))) for s in image.GetSpacing()]
    out = image if max(factors) == 1 else sitk.BinShrink(image, factors)
    spacing = out.GetSpacing()
    if max(spacing) > 2 * mm:
        fine = [mm if s > 2 * mm else s for s in spacing]
        # From the first slice's centre to the last's: a plane beyond the last centre
        # would lie outside the image (a slab of zeros at the edge).
        size = [int(np.floor((n - 1) * s / f + 1e-6)) + 1
                for n, s, f in zip(out.GetSize(), spacing, fine)]
        out = sitk.Resample(out, size, sitk.Transform(), sitk.sitkLinear, out.GetOrigin(),
                            fine, out.GetDirection(), 0.0, sitk.sitkFloat32)
    return out


def _coarse_mask(mask: sitk.Image | None, like: sitk.Image) -> sitk.Image | None:
    """A mask on the grid of ``like`` (nearest neighbour), as registration needs."""
    if mask is None:
        return None
    return sitk.Resample(mask, like, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)


def _foreground_points(image: sitk.Image) -> np.ndarray:
    """LPS points (mm) of the image's foreground: the largest connected region brighter
    than a tenth of the image's robust maximum (the head, or the brain alone)."""
    values = sitk.GetArrayViewFromImage(image)
    inside = values > 0.1 * np.percentile(values, 99.5)
    labels, n = ndimage.label(inside)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        inside = labels == 1 + int(np.argmax(sizes))
    index = np.argwhere(inside)[:, ::-1].astype(np.float64)  # (x, y, z) voxel indices
    if len(index) == 0:
        raise ValueError("expected an image with a foreground, got an empty one")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return (direction @ (index * image.GetSpacing()).T).T + image.GetOrigin()


def vertex_anchor(image: sitk.Image, slab_mm: float = 60.0) -> np.ndarray:
    """The top of the head (or brain): the centre of its top ``slab_mm`` across and its
    highest point up (LPS mm). Unlike the centre of mass, a neck in the field of view
    does not move it."""
    points = _foreground_points(image)
    top = points[:, 2].max()
    slab = points[points[:, 2] > top - slab_mm]
    return np.array([slab[:, 0].mean(), slab[:, 1].mean(), top])


def _method(transform, fixed_mask, *, iterations, sampling, seed, step, fixed_scale=False):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK reads a seed of 0 as "seed from the wall clock" (sitkWallClock): offset ours
    # by one so that every seed, 0 included, gives the same samples on every run.
    method.SetMetricSamplingPercentage(sampling, seed + 1)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Each step moves points by ``step`` mm at most (the rate is estimated again at
    # every iteration from the physical shift it causes); callers shrink ``step`` from
    # one fit to the next. A rate estimated once from a start that is already good
    # (a tiny gradient) is huge and throws the fit out of its basin; regular-step
    # descent normalises raw parameters, so its step is no distance.
    method.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=iterations, convergenceMinimumValue=1e-6,
        convergenceWindowSize=10, estimateLearningRate=method.EachIteration,
        maximumStepSizeInPhysicalUnits=step)
    method.SetOptimizerScalesFromPhysicalShift()
    if fixed_scale:  # a similarity's scale (its last parameter) stays as it starts
        method.SetOptimizerWeights([1.0] * (transform.GetNumberOfParameters() - 1) + [0.0])
    return method


class _Pyramid:
    """An image pair (and the fixed mask) block-averaged and smoothed per level, made
    once: building a level inside each ITK registration call cost more than its
    iterations."""

    def __init__(self, fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image | None):
        self.base = (_coarse(fixed), _coarse(moving))
        self.mask = _coarse_mask(fixed_mask, self.base[0])
        self._levels: dict[int, tuple] = {}

    def level(self, factor: int) -> tuple:
        """``(fixed, moving, mask)`` at ``factor`` × the base voxel size."""
        if factor not in self._levels:
            if factor == 1:
                self._levels[1] = (*self.base, self.mask)
            else:
                fixed, moving = (sitk.SmoothingRecursiveGaussian(
                    _coarse(image, factor * BASE_MM), factor * BASE_MM / 2)
                    for image in self.base)
                self._levels[factor] = (fixed, moving, _coarse_mask(self.mask, fixed))
        return self._levels[factor]


def _fit(pyramid: _Pyramid, transform, *, level, steps, iterations=20, sampling=0.2,
         seed=0, fixed_scale=False) -> float:
    """Optimise ``transform`` in place at one pyramid ``level``, ``iterations`` steps of
    each size in ``steps`` (mm); return the final metric (Mattes MI: lower is better)."""
    fixed, moving, mask = pyramid.level(level)
    metric = np.inf
    for step in steps:
        method = _method(transform, mask, iterations=iterations, sampling=sampling, seed=seed,
                         step=step, fixed_scale=fixed_scale)
        method.SetInitialTransform(transform, inPlace=True)
        method.Execute(fixed, moving)
        metric = float(method.GetMetricValue())
    return metric


def _starts(fixed, moving, kind, *, same_subject: bool) -> dict:
    """Candidate starting transforms of class ``kind`` (Euler3D or Similarity3D)."""
    starts = {}
    if same_subject:  # the same session's scans share the scanner's frame
        starts["identity"] = kind()
    gap = 0.0 if same_subject else VERTEX_GAP_MM
    anchor_fixed, anchor_moving = vertex_anchor(fixed), vertex_anchor(moving)
    # Heads lie in the coil nodding by up to about 30 degrees: start from three pitches,
    # each turning about a point below the vertex and putting the vertices together.
    for pitch in (0,) if same_subject else (0, -20, 20):
        start = kind()
        if kind is sitk.Similarity3DTransform:
            start.SetScale(ADULT_SCALE)
        start.SetCenter((anchor_fixed - [0, 0, 60.0]).tolist())
        start.SetTranslation((anchor_moving - anchor_fixed - [0, 0, gap]).tolist())
        if pitch:
            if kind is sitk.Euler3DTransform:
                start.SetRotation(np.deg2rad(pitch), 0.0, 0.0)
            else:
                start.SetRotation((1.0, 0.0, 0.0), np.deg2rad(pitch))
        starts[f"vertex{pitch:+d}" if pitch else "vertex"] = start
    moments = kind(sitk.CenteredTransformInitializer(
        fixed, moving, kind(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    if kind is sitk.Similarity3DTransform:
        moments.SetScale(ADULT_SCALE)
    starts["moments"] = moments
    return starts


def _best_start(pyramid: _Pyramid, kind, *, same_subject, seed):
    """Fit each start (position and pose; a similarity keeps its start's scale) at 8 mm,
    or at 4 mm for the same subject's scans (their starts are close, and thick slices
    of two contrasts have too little in common at 8 mm); return the best
    ``(name, transform)`` by the metric."""
    level, steps = (2, (2.0, 1.0)) if same_subject else (4, (4.0, 2.0))
    scored = []
    for name, transform in _starts(*pyramid.base, kind, same_subject=same_subject).items():
        try:
            metric = _fit(pyramid, transform, level=level, steps=steps, iterations=15,
                          seed=seed, fixed_scale=kind is not sitk.Euler3DTransform)
        except RuntimeError:  # e.g. too few samples overlap from this start
            continue
        scored.append((metric, name, transform))
    if not scored:
        raise RuntimeError("no starting position gave an overlap of the two images")
    metric, name, transform = min(scored, key=lambda item: item[0])
    return name, transform


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, fixed_mask: sitk.Image | None = None,
                   seed: int = 0) -> Registration:
    """Rigid (6 parameters) registration by Mattes mutual information, e.g. T2 → T1 of
    one subject (starts: the scanner frame, the vertices, the centres of mass).

    Args:
        fixed, moving: The images (e.g. the T1 and the T2).
        fixed_mask: Where on ``fixed`` the metric is computed (e.g. the brain and a
            margin); ``None``: everywhere.
        seed: Seeds the metric's random samples (the result is reproducible).

    Returns:
        A :class:`Registration` whose transform maps ``fixed`` points to ``moving`` points.
    """
    pyramid = _Pyramid(fixed, moving, fixed_mask)
    name, transform = _best_start(pyramid, sitk.Euler3DTransform, same_subject=True, seed=seed)
    _fit(pyramid, transform, level=2, steps=(0.5,), iterations=10, seed=seed)
    metric = _fit(pyramid, transform, level=1, steps=(0.25, 0.1), iterations=10,
                  sampling=0.1, seed=seed)
    return Registration(transform, metric, name)


def register_affine(fixed: sitk.Image, moving: sitk.Image, *,
                    fixed_mask: sitk.Image | None = None, seed: int = 0) -> Registration:
    """Affine (12 parameters) registration, similarity first, e.g. template → T1.

    Args:
        fixed, moving: The images (e.g. the template and a subject's T1).
        fixed_mask: Where on ``fixed`` the metric is computed; for the template,
            :func:`template_images`' brain region.
        seed: Seeds the metric's random samples.

    Returns:
        A :class:`Registration` whose transform maps ``fixed`` points to ``moving`` points.
    """
    pyramid = _Pyramid(fixed, moving, fixed_mask)
    name, similarity = _best_start(pyramid, sitk.Similarity3DTransform, same_subject=False,
                                   seed=seed)
    _fit(pyramid, similarity, level=2, steps=(2.0, 1.0), iterations=10, seed=seed)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    _fit(pyramid, affine, level=2, steps=(1.0, 0.5), iterations=10, seed=seed)
    metric = _fit(pyramid, affine, level=1, steps=(0.25, 0.1), iterations=10, sampling=0.1,
                  seed=seed)
    return Registration(affine, metric, name)


def register_to_template(image: sitk.Image, contrast: str = "t1", *,
                         seed: int = 0) -> Registration:
    """A subject's scan (full head, brain only or thick slices) registered to the MNI152
    template: the transform maps template points to the scan's points.

    A T1 (``contrast="t1"``) is fitted to the template. A T2 has no template of its
    own in nilearn: it is fitted both to the T1 template and to the T2-like one made
    from the tissue maps, and the fit whose result correlates better with the T2-like
    template inside the brain wins. On the phantoms, each failed where the other did
    not (full-head T2s against the T2-like template, skull-stripped ones against the
    T1 template; docs/REGISTRATION.md).
    """
    check_choice("contrast", contrast, ("t1", "t2"))
    if contrast == "t1":
        template, region = template_images("t1")
        return register_affine(template, image, fixed_mask=region, seed=seed)
    _, mask, affine = mni_template()
    reference = template_images("t2")[0]
    like = mni_template_t2()
    best = None
    for name in ("t1", "t2"):
        template, region = template_images(name)
        found = register_affine(template, image, fixed_mask=region, seed=seed)
        moved, _ = from_sitk(resample(image, reference, found.transform))
        score = masked_correlation(moved, like, mask)
        if best is None or score > best[0]:
            found.start = f"{name} template, {found.start}"
            best = (score, found)
    return best[1]


def brain_region_in(image: sitk.Image, template_to_image: sitk.Transform) -> sitk.Image:
    """The template's metric region (its brain) on ``image``'s registration grid,
    through a fitted template → image transform: where a same-subject registration to
    ``image`` should look."""
    _, region = template_images()
    return sitk.Resample(region, _coarse(image), template_to_image.GetInverse(),
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def resample(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
             *, interpolator=sitk.sitkLinear) -> sitk.Image:
    """``moving`` resampled onto ``reference``'s grid through ``transform`` (0 outside)."""
    return sitk.Resample(moving, reference, transform, interpolator, 0.0, sitk.sitkFloat32)


def flatten_affine(transform: sitk.Transform) -> np.ndarray:
    """A (3, 4) matrix ``[A | t]`` with ``transform(p) = A p + t``, for any affine ITK
    transform (composites included), fitted through four points."""
    points = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], np.float64)
    moved = np.array([transform.TransformPoint(tuple(p)) for p in points])
    linear = (moved[1:] - moved[0]).T / 100.0
    return np.concatenate([linear, moved[0][:, None]], axis=1)


def affine_transform(matrix) -> sitk.AffineTransform:
    """The ITK transform of a (3, 4) matrix ``[A | t]`` (:func:`flatten_affine`'s inverse)."""
    matrix = np.asarray(matrix, np.float64).reshape(3, 4)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:, :3].ravel().tolist())
    transform.SetTranslation(matrix[:, 3].tolist())
    return transform


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
