"""Whole-volume synthesis: a NIfTI in, its translation out, in the input's own space.

The input goes through the training data's preprocessing (affine registration
to the MNI152 template driven by the brain, the subject's own brain mask from
the input, clipping to percentiles inside it, [0, 1] scaling, axial slices
padded to the store's slice size), every axial slice that holds brain is
translated in batches, and the result is mapped back:

- intensities: [0, 1] is stretched to the input's own clipped range (its
  ``clip_low``–``clip_high`` percentiles inside the brain), so the synthetic
  volume has the same units and windowing as the input. Contrast is what the
  model learned; absolute units of the other modality cannot be known.
- space: the template-space volume is resampled through the inverse of the
  registration onto the input's grid and stored with the input's affine and
  voxel layout (same shape, same orientation), so it overlays the input in any
  viewer.

Synthesis covers the input's brain mask (what the models were trained on);
voxels outside it are zero.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.axial import from_slice, to_slice
from ..data.intensity import clip_range, from_unit, to_unit
from ..data.nifti import load_volume, save_volume
from ..data.slices import block_mean
from ..log import get_logger

logger = get_logger(__name__)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Square (N, S, S) images to (N, size, size) with pixel centres kept in place: block
    means down (as the slice store's images are shrunk for a smaller model), linear
    interpolation on the same pixel grid up (``grid_mode``: a pixel is a square, so
    nothing is magnified)."""
    current = images.shape[1]
    if size == current:
        return images
    if current % size == 0:
        return block_mean(images, size)
    from scipy.ndimage import zoom

    return zoom(images, (1, size / current, size / current), order=1, grid_mode=True,
                mode="grid-constant").astype(np.float32)


def translate_volume(method, direction: str, volume: np.ndarray, mask: np.ndarray, *,
                     slice_size: int = 256, batch_size: int = 16) -> np.ndarray:
    """Translate every axial plane of a template-space volume that holds brain.

    ``volume`` is on the [0, 1] scale (zero outside ``mask``); each plane with brain
    becomes a ``slice_size`` image (as in the slice store), is averaged down to the
    method's image size, translated by ``method``
    (:meth:`colab_utils.evaluation.inference.Method.translate_planes`, which gives a
    2.5-D method its neighbouring planes), and brought back up and into the plane.
    Returns the synthetic volume on the [0, 1] scale, zero outside ``mask``.
    """
    zs = [k for k in range(mask.shape[2]) if mask[:, :, k].any()]
    out = np.zeros(mask.shape, np.float32)
    if not zs:
        return out
    image_size = method.image_size or slice_size
    planes = np.stack([to_slice(volume[:, :, k], slice_size) for k in zs])
    masks = np.stack([to_slice(mask[:, :, k].astype(np.float32), slice_size) for k in zs])
    small = resize(planes, image_size)[..., None]
    small_masks = resize(masks, image_size)[..., None] > 0.5
    synthetic = method.translate_planes(small, small_masks, direction, batch_size)[..., 0]
    synthetic = resize(np.clip(synthetic, 0, 1), slice_size)
    for k, image in zip(zs, synthetic):
        out[:, :, k] = from_slice(image, mask.shape[:2])
    return np.where(mask, out, 0.0).astype(np.float32)


def to_grid(volume: np.ndarray, mask: np.ndarray, affine: np.ndarray, reference,
            reference_to_volume) -> np.ndarray:
    """A template-space ``volume`` (zero outside ``mask``) resampled onto ``reference``'s
    grid (a SimpleITK image) through ``reference_to_volume`` (reference point -> template
    point); a RAS array.

    Normalised by the resampled mask: a voxel at the brain's edge is the mean of its
    brain neighbours, not darkened by the zeros outside (which, next to bright CSF on
    a T2, would be most of its error); zero where the mask covers less than half.
    """
    from ..data import registration as reg

    summed, _ = reg.from_sitk(reg.resample(reg.to_sitk(volume, affine), reference,
                                           reference_to_volume))
    weight, _ = reg.from_sitk(reg.resample(reg.to_sitk(mask.astype(np.float32), affine),
                                           reference, reference_to_volume))
    return np.where(weight > 0.5, summed / np.maximum(weight, 1e-6), 0.0).astype(np.float32)


def _original_layout(data_ras: np.ndarray, input_path: Path):
    """A RAS+ array back in the voxel layout of the file it came from, with that file's affine."""
    import nibabel as nib

    image = nib.load(str(input_path))
    stored = nib.orientations.io_orientation(image.affine)
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras, stored)
    data = nib.orientations.apply_orientation(data_ras, back)
    return data, image.affine


# The skewness of a scan's intensities inside its brain: a T1's brain is mostly bright
# (white and grey matter) with a little dark CSF, skewed to the dark side; a T2's the
# other way round. A scan past this margin on the wrong side is the wrong contrast.
CONTRAST_SKEW = 0.3
# A volume with this few distinct values is a label map (a segmentation), not an MRI.
LABEL_VALUES = 16


def check_scan(volume, path, contrast: str, brain=None) -> None:
    """Refuse a volume that cannot be a ``contrast`` ("t1" or "t2") MRI: a label map, or
    (given its ``brain`` mask) intensities ordered like the other contrast.

    Raises:
        ValueError: Naming the file, what was found and what to do.
    """
    values = np.unique(volume[::4, ::4, ::4])
    if len(values) <= LABEL_VALUES:
        raise ValueError(f"{path}: expected a {contrast.upper()} MRI, got a volume of "
                         f"{len(values)} distinct values (a segmentation or label map?)")
    if brain is None:
        return
    inside = volume[brain].astype(np.float64)
    skew = float(((inside - inside.mean()) ** 3).mean() / max(inside.std(), 1e-12) ** 3)
    looks = "t1" if skew < 0 else "t2"
    if looks != contrast and abs(skew) > CONTRAST_SKEW:
        other = "t2_to_t1" if contrast == "t1" else "t1_to_t2"
        raise ValueError(
            f"{path}: expected a {contrast.upper()} for this direction, but its brain's "
            f"intensities are ordered like a {looks.upper()}'s (skewness {skew:+.2f}: mostly "
            f"{'dark with bright CSF' if looks == 't2' else 'bright with dark CSF'}); is it "
            f"a {looks.upper()}? Then translate it with direction {other}. (A FLAIR or a "
            "contrast-enhanced scan is neither.)")


def synthesize_volume(method, input_path, output_path, *, direction: str,
                      slice_size: int = 256, clip_low: float = 0.5, clip_high: float = 99.5,
                      batch_size: int = 16, check_contrast: bool = True) -> dict:
    """Translate a whole NIfTI volume and write the result in the input's space.

    Args:
        method: A :class:`colab_utils.evaluation.inference.Method` that translates
            ``direction``.
        input_path: The input volume (a T1 for ``t1_to_t2``, a T2 for ``t2_to_t1``).
        output_path: Where to write the synthetic volume (``.nii`` or ``.nii.gz``).
        direction: ``"t1_to_t2"`` or ``"t2_to_t1"`` (recorded in the header).
        slice_size: The slice size of the training store (slices are padded to it,
            averaged down to the method's image size, and the result brought back up).
        clip_low, clip_high: The intensity percentiles used in preprocessing.
        batch_size: Slices per call of the method.
        check_contrast: Refuse an input whose intensities inside the brain are ordered
            like the other contrast's (:func:`check_scan`).

    Returns:
        ``{"output", "n_slices", "shape", "load_s", "register_s", "translate_s",
        "resample_s", "save_s", "total_s"}``.

    Raises:
        FileNotFoundError, ValueError: The input cannot be read as a 3-D volume, is a
            label map, is the other contrast, or holds no usable intensities inside
            the brain (each message names the file).
    """
    from ..data import registration as reg
    from ..data.brain_mask import subject_brain_mask
    from ..data.template import mni_template

    input_path, output_path = Path(input_path), Path(output_path)
    image_size = method.image_size or slice_size
    if not 0 < image_size <= slice_size:
        raise ValueError(f"image_size: expected 1..slice_size ({slice_size}), got {image_size}")
    timings = {}
    started = clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[f"{name}_s"] = round(now - clock, 3)
        clock = now

    volume, affine = load_volume(input_path)
    if not np.ptp(volume) > 0:
        raise ValueError(f"{input_path}: expected a brain MRI, got a constant volume "
                         f"({volume.flat[0]:.4g} everywhere)")
    source = direction.split("_to_")[0]
    check_scan(volume, input_path, source)
    _, _, template_affine = mni_template()
    fixed, _ = reg.template_images()
    moving = reg.to_sitk(volume, affine)
    lap("load")
    try:
        registration = reg.register_to_template(moving, source)  # template -> input point
    except RuntimeError as err:
        raise ValueError(f"{input_path}: registration to the MNI152 template failed "
                         f"({str(err).strip().splitlines()[-1]})") from err
    in_template, _ = reg.from_sitk(reg.resample(moving, fixed, registration.transform))
    mask, _ = subject_brain_mask(**{source: in_template})
    if check_contrast:
        check_scan(in_template, input_path, source, mask)
    lap("register")

    try:
        lo, hi = clip_range(in_template, mask, clip_low, clip_high)
    except ValueError as err:
        raise ValueError(f"{input_path}: {err} after registration (is it a brain MRI?)"
                         ) from err
    out_template = translate_volume(method, direction, to_unit(in_template, lo, hi, mask),
                                    mask, slice_size=slice_size, batch_size=batch_size)
    zs = [k for k in range(mask.shape[2]) if mask[:, :, k].any()]
    lap("translate")

    out_ras = to_grid(from_unit(out_template, lo, hi, mask), mask, template_affine, moving,
                      registration.transform.GetInverse())
    data, file_affine = _original_layout(out_ras, input_path)
    lap("resample")
    save_volume(output_path, data, file_affine,
                description=f"colab_utils synthetic {direction.replace('_to_', '->')}")
    lap("save")
    timings["total_s"] = round(time.perf_counter() - started, 3)
    logger.info("%s: %d axial slices translated (%s) in %.1f s -> %s", input_path.name,
                len(zs), direction, timings["total_s"], output_path)
    return {"output": str(output_path), "n_slices": len(zs), "shape": list(data.shape),
            **timings}
