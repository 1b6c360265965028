"""Image-similarity metrics with one protocol, optionally inside a brain mask.

Every function takes ``(reference, estimate, *, data_range, mask=None)`` on
numpy arrays of one 2-D image (``(H, W)`` or ``(H, W, 1)``):

- ``data_range`` is the width of the intensity scale (1 for this project's
  [0, 1] slices). PSNR's peak is the data range, never the image maximum, so
  two methods' PSNRs are comparable.
- ``mask`` (boolean, same shape) restricts the metric to the brain: a masked
  value depends only on the pixels inside the mask, so changing anything
  outside it changes nothing (tested).

Unmasked values agree with scikit-image (tested to 1e-3):
``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=...)``, ``peak_signal_noise_ratio``,
``mean_squared_error`` and ``normalized_mutual_information``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

METRICS = ("mae", "mse", "psnr", "ssim", "mi")
# Identical images have infinite PSNR; it is reported as this cap so that means stay finite.
PSNR_CAP_DB = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # with σ 1.5: an 11 × 11 window (radius 5), as in Wang et al. 2004
SSIM_K1, SSIM_K2 = 0.01, 0.03
MI_BINS = 64


def _prepare(reference, estimate, data_range, mask):
    """Validated float64 2-D copies of the inputs and the mask (or None)."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.ndim == 3 and ref.shape[-1] == 1:
        ref = ref[..., 0]
    if est.ndim == 3 and est.shape[-1] == 1:
        est = est[..., 0]
    if ref.ndim != 2 or ref.shape != est.shape:
        raise ValueError(f"expected two 2-D images of the same shape, got reference "
                         f"{np.shape(reference)} and estimate {np.shape(estimate)}")
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    if not (np.isfinite(ref).all() and np.isfinite(est).all()):
        raise ValueError("the images contain NaN or infinite values")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != ref.shape:
            raise ValueError(f"expected a mask of shape {ref.shape}, got {np.shape(mask)}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError("the mask is empty: there is nothing to measure")
    return ref, est, mask


def _select(values: np.ndarray, mask) -> np.ndarray:
    return values if mask is None else values[mask]


def mae(reference, estimate, *, data_range: float = 1.0, mask=None) -> float:
    """Mean absolute error (in the images' units)."""
    ref, est, mask = _prepare(reference, estimate, data_range, mask)
    return float(np.mean(np.abs(_select(ref - est, mask))))


def mse(reference, estimate, *, data_range: float = 1.0, mask=None) -> float:
    """Mean squared error (in the images' units squared)."""
    ref, est, mask = _prepare(reference, estimate, data_range, mask)
    return float(np.mean(_select(ref - est, mask) ** 2))


def psnr(reference, estimate, *, data_range: float = 1.0, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, peak = ``data_range``; capped at 100 dB."""
    error = mse(reference, estimate, data_range=data_range, mask=mask)
    if error == 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * np.log10(data_range ** 2 / error)))


def ssim_map(reference, estimate, *, data_range: float = 1.0) -> np.ndarray:
    """The local SSIM of every pixel (Gaussian window σ 1.5, 11 × 11), shape (H, W)."""
    ref, est, _ = _prepare(reference, estimate, data_range, None)

    def blur(image):
        return gaussian_filter(image, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_r, mu_e = blur(ref), blur(est)
    # Population (biased) local variances and covariance, as in the original SSIM.
    var_r = blur(ref * ref) - mu_r * mu_r
    var_e = blur(est * est) - mu_e * mu_e
    cov = blur(ref * est) - mu_r * mu_e
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * mu_r * mu_e + c1) * (2 * cov + c2)
            / ((mu_r ** 2 + mu_e ** 2 + c1) * (var_r + var_e + c2)))


def ssim(reference, estimate, *, data_range: float = 1.0, mask=None) -> float:
    """Structural similarity (Wang et al. 2004), 1 for identical images.

    Unmasked: the mean of the SSIM map without the 5-pixel border, where the
    window runs off the image (scikit-image's convention). Masked: both images
    are set to zero outside the mask before the windowed computation, and the
    map is averaged over the pixels inside the mask, so pixels outside the
    mask cannot change the value.
    """
    ref, est, mask = _prepare(reference, estimate, data_range, mask)
    if mask is None:
        pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
        if min(ref.shape) <= 2 * pad:
            raise ValueError(f"SSIM needs images larger than {2 * pad + 1} pixels, "
                             f"got {ref.shape}")
        return float(ssim_map(ref, est, data_range=data_range)[pad:-pad, pad:-pad].mean())
    inside = ssim_map(np.where(mask, ref, 0.0), np.where(mask, est, 0.0),
                      data_range=data_range)
    return float(inside[mask].mean())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(reference, estimate, *, data_range: float = 1.0, mask=None,
                       bins: int = MI_BINS, normalized: bool = False) -> float:
    """Mutual information of the two intensity distributions, in nats.

    The joint histogram has ``bins`` × ``bins`` bins over ``[0, data_range]``
    (values outside are clipped into the end bins), so the value does not
    depend on each image's own extremes. ``normalized=True`` gives
    ``(H(ref) + H(est)) / H(ref, est)`` (1 for independent, 2 for identical
    images), as scikit-image's ``normalized_mutual_information``.
    """
    ref, est, mask = _prepare(reference, estimate, data_range, mask)
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    ref = np.clip(_select(ref, mask), 0.0, data_range)
    est = np.clip(_select(est, mask), 0.0, data_range)
    joint, _, _ = np.histogram2d(ref.ravel(), est.ravel(), bins=bins,
                                 range=[[0.0, data_range], [0.0, data_range]])
    h_ref = _entropy(joint.sum(axis=1))
    h_est = _entropy(joint.sum(axis=0))
    h_joint = _entropy(joint)
    if normalized:
        return float((h_ref + h_est) / h_joint) if h_joint > 0 else 2.0
    return float(h_ref + h_est - h_joint)


def all_metrics(reference, estimate, *, data_range: float = 1.0, mask=None) -> dict:
    """Every metric of :data:`METRICS` for one image pair, as a dict of floats."""
    return {"mae": mae(reference, estimate, data_range=data_range, mask=mask),
            "mse": mse(reference, estimate, data_range=data_range, mask=mask),
            "psnr": psnr(reference, estimate, data_range=data_range, mask=mask),
            "ssim": ssim(reference, estimate, data_range=data_range, mask=mask),
            "mi": mutual_information(reference, estimate, data_range=data_range, mask=mask)}


# Planes with fewer brain voxels than this are left out of plane metrics (a sliver of
# mask at the brain's edge gives a meaningless SSIM).
MIN_PLANE_VOXELS = 100
# Mutual information is a histogram statistic (MI_BINS² joint bins): on a few hundred
# voxels it is biased upwards by the empty bins. Plane means of MI take only planes
# with at least this many mask voxels (docs/DECISIONS.md).
MI_MIN_VOXELS = 1000


def plane_scores(reference, estimate, mask=None, *, axis: int,
                 data_range: float = 1.0) -> dict:
    """Every metric of :data:`METRICS` for each plane of two stacks, at once.

    The planes are those perpendicular to ``axis``. Each value is what this module's
    2-D function gives for that plane (the same windows, bins and conventions; with
    ``mask``, inside it, NaN where a plane holds none of it; without, SSIM leaves out
    the border where its window runs off the image), computed in float32 (within
    1e-5 of the 2-D functions).

    Returns:
        ``{metric: array of one value per plane}``.
    """
    if np.shape(reference) != np.shape(estimate) or np.ndim(reference) != 3 or (
            mask is not None and np.shape(mask) != np.shape(reference)):
        raise ValueError(f"expected two 3-D stacks (and a mask) of one shape, got "
                         f"{np.shape(reference)}, {np.shape(estimate)} and {np.shape(mask)}")
    ref = np.array(np.moveaxis(np.asarray(reference, np.float32), axis, -1))
    est = np.array(np.moveaxis(np.asarray(estimate, np.float32), axis, -1))
    if not (np.isfinite(ref).all() and np.isfinite(est).all()):
        raise ValueError("the images contain NaN or infinite values")
    if mask is None:
        inside = np.ones(ref.shape, bool)
        pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
        if min(ref.shape[:2]) <= 2 * pad:
            raise ValueError(f"SSIM needs images larger than {2 * pad + 1} pixels, got "
                             f"{ref.shape[:2]}")
        window = np.zeros(ref.shape, bool)
        window[pad:-pad, pad:-pad] = True
    else:
        inside = np.ascontiguousarray(np.moveaxis(np.asarray(mask, bool), axis, -1))
        ref[~inside] = 0.0
        est[~inside] = 0.0
        window = inside
    with np.errstate(divide="ignore", invalid="ignore"):
        counts = inside.sum(axis=(0, 1)).astype(np.float64)
        error = ref - est
        mae_ = np.abs(error).sum(axis=(0, 1), dtype=np.float64) / counts
        mse_ = np.square(error).sum(axis=(0, 1), dtype=np.float64) / counts
        del error
        psnr_ = np.where(mse_ > 0, np.minimum(PSNR_CAP_DB, 10.0 * np.log10(
            data_range ** 2 / mse_)), PSNR_CAP_DB)

        def blur(image):  # within each plane only
            return gaussian_filter(image, sigma=(SSIM_SIGMA, SSIM_SIGMA, 0),
                                   truncate=SSIM_TRUNCATE, mode="reflect")

        mu_r, mu_e = blur(ref), blur(est)
        var_r = blur(ref * ref) - mu_r * mu_r
        var_e = blur(est * est) - mu_e * mu_e
        cov = blur(ref * est) - mu_r * mu_e
        c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
        ssim_map_ = ((2 * mu_r * mu_e + c1) * (2 * cov + c2)
                     / ((mu_r * mu_r + mu_e * mu_e + c1) * (var_r + var_e + c2)))
        ssim_ = (np.where(window, ssim_map_, 0.0).sum(axis=(0, 1), dtype=np.float64)
                 / window.sum(axis=(0, 1)))
        mi_ = _plane_mutual_information(ref, est, inside, data_range)
    empty = counts == 0
    scores = {"mae": mae_, "mse": mse_, "psnr": psnr_, "ssim": ssim_, "mi": mi_}
    return {k: np.where(empty, np.nan, v) for k, v in scores.items()}


def plane_metrics(reference, estimate, mask, *, axis: int, data_range: float = 1.0,
                  min_voxels: int = MIN_PLANE_VOXELS, step: int = 1) -> dict:
    """:func:`plane_scores` inside ``mask``, averaged over the planes that hold at least
    ``min_voxels`` voxels of it, every ``step``-th of them (1: all).

    Returns:
        ``{"mae", "mse", "psnr", "ssim", "mi", "n_planes", "n_planes_mi"}``: means over
        the planes (MI over those with at least :data:`MI_MIN_VOXELS` mask voxels).
    """
    if np.shape(mask) != np.shape(reference) or np.ndim(reference) != 3:
        raise ValueError(f"expected two 3-D volumes and a mask of one shape, got "
                         f"{np.shape(reference)}, {np.shape(estimate)} and {np.shape(mask)}")
    inside = np.asarray(mask, bool)
    keep = np.flatnonzero(np.moveaxis(inside, axis, -1).sum(axis=(0, 1)) >= min_voxels)
    keep = keep[::max(1, int(step))]
    if not keep.size:
        raise ValueError(f"no plane across axis {axis} holds {min_voxels} mask voxels")
    kept = np.take(inside, keep, axis=axis)
    scores = plane_scores(np.take(reference, keep, axis=axis), np.take(estimate, keep, axis=axis),
                          kept, axis=axis, data_range=data_range)
    counts = np.moveaxis(kept, axis, -1).sum(axis=(0, 1))
    mi = scores["mi"][counts >= MI_MIN_VOXELS]
    scores = {**{k: float(v.mean()) for k, v in scores.items() if k != "mi"},
              "mi": float(mi.mean()) if mi.size else float("nan")}
    return {**scores, "n_planes": int(keep.size), "n_planes_mi": int(mi.size)}


def _plane_mutual_information(ref, est, inside, data_range, bins: int = MI_BINS):
    """:func:`mutual_information` of each plane (last axis) inside the mask, at once."""
    planes = np.broadcast_to(np.arange(ref.shape[-1]), ref.shape)[inside]

    def binned(values):  # np.histogram2d's bins over [0, data_range]
        return np.clip((np.clip(values, 0.0, data_range) / data_range * bins).astype(int),
                       0, bins - 1)

    index = (planes * bins + binned(ref[inside])) * bins + binned(est[inside])
    joint = np.bincount(index, minlength=ref.shape[-1] * bins * bins).reshape(-1, bins, bins)
    total = joint.sum(axis=(1, 2), keepdims=True)

    def entropy(counts, axes):
        p = counts / total.reshape((-1,) + (1,) * (counts.ndim - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axes)

    return (entropy(joint.sum(axis=2), 1) + entropy(joint.sum(axis=1), 1)
            - entropy(joint, (1, 2)))


def flicker(reference, estimate, mask, *, axis: int = 2) -> dict:
    """Slice-to-slice flicker of a volume built plane by plane along ``axis``.

    The error of the gradient across the planes: the mean, over neighbouring voxel
    pairs both inside the mask, of ``|Δ estimate - Δ reference|`` with ``Δ`` the
    difference to the next plane. A volume translated slice by slice that jumps in
    brightness or detail from one slice to the next has a large one even when each
    slice alone scores well. ``flicker_ratio`` divides it by the mean ``|Δ reference|``
    (0: the estimate changes across planes exactly as the real volume does).
    """
    ref = np.asarray(reference, np.float64)
    est = np.asarray(estimate, np.float64)
    inside = np.asarray(mask, bool)
    if ref.ndim != 3 or ref.shape != est.shape or inside.shape != ref.shape:
        raise ValueError(f"expected two 3-D volumes and a mask of one shape, got "
                         f"{np.shape(reference)}, {np.shape(estimate)} and {np.shape(mask)}")
    pairs = np.logical_and(np.take(inside, range(1, ref.shape[axis]), axis=axis),
                           np.take(inside, range(ref.shape[axis] - 1), axis=axis))
    if not pairs.any():
        raise ValueError(f"the mask holds no neighbouring voxels across axis {axis}")
    d_ref, d_est = np.diff(ref, axis=axis)[pairs], np.diff(est, axis=axis)[pairs]
    value = float(np.abs(d_est - d_ref).mean())
    scale = float(np.abs(d_ref).mean())
    return {"flicker": value, "flicker_ratio": value / scale if scale > 0 else float("nan")}
