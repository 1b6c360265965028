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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.axial import from_slice, to_slice
from ..data.context import plane_rows, stack
from ..data.nifti import load_volume, save_volume
from ..data.slices import block_mean

Translate = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Square (N, S, S) images to (N, size, size): block means down, bilinear up."""
    current = images.shape[1]
    if size == current:
        return images
    if current % size == 0:
        return block_mean(images, size)
    from scipy.ndimage import zoom

    return zoom(images, (1, size / current, size / current), order=1).astype(np.float32)


def translate_volume(translate: Translate, volume: np.ndarray, mask: np.ndarray, *,
                     image_size: int, slice_size: int = 256, batch_size: int = 16,
                     context: int = 0) -> np.ndarray:
    """Translate every axial plane of a template-space volume that holds brain.

    ``volume`` is on the [0, 1] scale (zero outside ``mask``); each plane with brain
    becomes a ``slice_size`` image (as in the slice store), is averaged down to
    ``image_size``, translated (with ``context`` planes below and above as channels
    for a 2.5-D method, repeated at the brain's ends), and brought back up and into
    the plane. Returns the synthetic volume on the [0, 1] scale, zero outside ``mask``.
    """
    zs = [k for k in range(mask.shape[2]) if mask[:, :, k].any()]
    out = np.zeros(mask.shape, np.float32)
    if not zs:
        return out
    planes = np.stack([to_slice(volume[:, :, k], slice_size) for k in zs])
    masks = np.stack([to_slice(mask[:, :, k].astype(np.float32), slice_size) for k in zs])
    small = _resize(planes, image_size)[..., None]
    small_masks = _resize(masks, image_size)[..., None] > 0.5
    if context:
        small = stack(small, plane_rows(len(zs), context))
    outputs = []
    for start in range(0, len(zs), batch_size):
        outputs.append(np.asarray(translate(small[start:start + batch_size],
                                            small_masks[start:start + batch_size]),
                                  np.float32)[..., 0])
    synthetic = _resize(np.clip(np.concatenate(outputs), 0, 1), slice_size)
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


def synthesize_volume(translate: Translate, input_path, output_path, *, direction: str,
                      image_size: int, slice_size: int = 256, clip_low: float = 0.5,
                      clip_high: float = 99.5, batch_size: int = 16, context: int = 0,
                      log=print) -> dict:
    """Translate a whole NIfTI volume and write the result in the input's space.

    Args:
        translate: ``(images, masks) -> images`` on (N, H, W, 1) float32 in [0, 1]
            (a :class:`colab_utils.evaluation.inference.Method` translator).
        input_path: The input volume (a T1 for ``t1_to_t2``, a T2 for ``t2_to_t1``).
        output_path: Where to write the synthetic volume (``.nii`` or ``.nii.gz``).
        direction: ``"t1_to_t2"`` or ``"t2_to_t1"`` (recorded in the header).
        image_size: The model's input size; slices are averaged down to it and
            the result is interpolated back up to ``slice_size``.
        slice_size: The slice size of the training store (slices are padded to it).
        clip_low, clip_high: The intensity percentiles used in preprocessing.
        batch_size: Slices per call of ``translate``.
        context: The method's 2.5-D context (``translate`` takes each slice with this
            many neighbours below and above as channels).
        log: Progress messages (``print``; ``None`` for silence).

    Returns:
        ``{"output", "n_slices", "shape", "load_s", "register_s", "translate_s",
        "resample_s", "save_s", "total_s"}``.

    Raises:
        FileNotFoundError, ValueError: The input cannot be read as a 3-D volume,
            or it holds no usable intensities inside the brain.
    """
    from ..data import registration as reg
    from ..data.brain_mask import subject_brain_mask
    from ..data.template import mni_template

    input_path, output_path = Path(input_path), Path(output_path)
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
    _, _, template_affine = mni_template()
    fixed, _ = reg.template_images()
    moving = reg.to_sitk(volume, affine)
    lap("load")
    source = direction.split("_to_")[0]
    try:
        registration = reg.register_to_template(moving, source)  # template -> input point
    except RuntimeError as err:
        raise ValueError(f"{input_path}: registration to the MNI152 template failed "
                         f"({str(err).strip().splitlines()[-1]})") from err
    in_template, _ = reg.from_sitk(reg.resample(moving, fixed, registration.transform))
    mask, _ = subject_brain_mask(**{source: in_template})
    lap("register")

    inside = in_template[mask]
    lo, hi = np.percentile(inside, [clip_low, clip_high])
    if not hi > lo:
        raise ValueError(f"{input_path}: expected varying intensities inside the brain after "
                         f"registration, got a constant {lo:.4g} (is it a brain MRI?)")
    normalised = np.clip((in_template - lo) / (hi - lo), 0, 1).astype(np.float32)
    normalised[~mask] = 0.0
    out_template = translate_volume(translate, normalised, mask, image_size=image_size,
                                    slice_size=slice_size, batch_size=batch_size,
                                    context=context)
    zs = [k for k in range(mask.shape[2]) if mask[:, :, k].any()]
    lap("translate")

    out_template = np.where(mask, lo + out_template * (hi - lo), 0.0).astype(np.float32)
    out_ras = to_grid(out_template, mask, template_affine, moving,
                      registration.transform.GetInverse())
    data, file_affine = _original_layout(out_ras, input_path)
    lap("resample")
    save_volume(output_path, data, file_affine,
                description=f"colab_utils synthetic {direction.replace('_to_', '->')}")
    lap("save")
    timings["total_s"] = round(time.perf_counter() - started, 3)
    if log:
        log(f"[colab_utils] {input_path.name}: {len(zs)} axial slices translated "
            f"({direction}) in {timings['total_s']:.1f} s -> {output_path}")
    return {"output": str(output_path), "n_slices": len(zs), "shape": list(data.shape),
            **timings}
