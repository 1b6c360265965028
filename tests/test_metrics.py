"""Metrics: hand-made cases, masks, and agreement with scikit-image."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage import metrics as skm

from colab_utils import metrics
from colab_utils.metrics import (
    PSNR_CAP_DB,
    all_metrics,
    mae,
    mse,
    mutual_information,
    psnr,
    ssim,
)


def _image(seed=0, size=64):
    """A smooth, textured image spanning exactly [0, 1]."""
    rng = np.random.default_rng(seed)
    image = gaussian_filter(rng.random((size, size)), 2.0)
    return (image - image.min()) / (image.max() - image.min())


def _disc_mask(size=64, radius=20):
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius ** 2


def test_identical_images():
    image = _image()
    assert mae(image, image, data_range=1) == 0.0
    assert mse(image, image, data_range=1) == 0.0
    assert psnr(image, image, data_range=1) == PSNR_CAP_DB == 100.0
    assert ssim(image, image, data_range=1) == pytest.approx(1.0, abs=1e-12)
    # MI of an image with itself is its entropy; normalised MI is 2.
    hist, _ = np.histogram(image, bins=64, range=(0, 1))
    p = hist[hist > 0] / hist.sum()
    assert mutual_information(image, image, data_range=1) == pytest.approx(-(p * np.log(p)).sum())
    assert mutual_information(image, image, data_range=1, normalized=True) == pytest.approx(2.0)


def test_known_errors():
    reference = np.zeros((16, 16))
    estimate = np.full((16, 16), 0.1)
    assert mae(reference, estimate, data_range=1) == pytest.approx(0.1)
    assert mse(reference, estimate, data_range=1) == pytest.approx(0.01)
    assert psnr(reference, estimate, data_range=1) == pytest.approx(20.0)
    # The peak is data_range, not the image maximum: on a 0..255 scale the same error is 28.1 dB.
    assert psnr(reference, estimate * 255, data_range=255) == pytest.approx(
        20 * np.log10(255 / 25.5))


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1])
def test_gaussian_noise_gives_expected_psnr(sigma):
    rng = np.random.default_rng(1)
    reference = np.full((256, 256), 0.5)
    estimate = reference + rng.normal(0, sigma, reference.shape)
    expected = 10 * np.log10(1 / sigma ** 2)
    assert psnr(reference, estimate, data_range=1) == pytest.approx(expected, abs=0.05)


def test_unmasked_values_agree_with_scikit_image():
    reference = _image(0)
    rng = np.random.default_rng(3)
    estimate = np.clip(0.8 * reference + 0.1 + rng.normal(0, 0.05, reference.shape), 0, 1)
    estimate[0, 0], estimate[-1, -1] = 0.0, 1.0  # both span [0, 1]: same histogram range
    assert mse(reference, estimate, data_range=1) == pytest.approx(
        skm.mean_squared_error(reference, estimate), abs=1e-3)
    assert psnr(reference, estimate, data_range=1) == pytest.approx(
        skm.peak_signal_noise_ratio(reference, estimate, data_range=1), abs=1e-3)
    expected_ssim = skm.structural_similarity(reference, estimate, data_range=1,
                                              gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False)
    assert ssim(reference, estimate, data_range=1) == pytest.approx(expected_ssim, abs=1e-3)
    assert 0.2 < expected_ssim < 0.95  # a case where the window matters
    expected_nmi = skm.normalized_mutual_information(reference, estimate, bins=64)
    assert mutual_information(reference, estimate, data_range=1, normalized=True) == \
        pytest.approx(expected_nmi, abs=1e-3)


def test_masked_metrics_ignore_pixels_outside_the_mask():
    reference, estimate = _image(0), _image(1)
    mask = _disc_mask()
    before = all_metrics(reference, estimate, data_range=1, mask=mask)
    rng = np.random.default_rng(5)
    ref2, est2 = reference.copy(), estimate.copy()
    ref2[~mask] = rng.random((~mask).sum())
    est2[~mask] = rng.random((~mask).sum())
    after = all_metrics(ref2, est2, data_range=1, mask=mask)
    for key in metrics.METRICS:
        assert after[key] == pytest.approx(before[key], abs=1e-12), key
    # ...while the unmasked values do change.
    assert all_metrics(ref2, est2, data_range=1)["mae"] != pytest.approx(
        all_metrics(reference, estimate, data_range=1)["mae"])


def test_masked_values_measure_only_the_inside():
    reference = np.zeros((32, 32))
    estimate = np.zeros((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    estimate[~mask] = 1.0  # all the error is outside the mask
    assert mae(reference, estimate, data_range=1, mask=mask) == 0.0
    assert mae(reference, estimate, data_range=1) == pytest.approx(1 - mask.mean())
    assert ssim(reference, estimate, data_range=1, mask=mask) == pytest.approx(1.0)


def test_ssim_orders_degradations():
    reference = _image(2)
    rng = np.random.default_rng(0)
    scores = [ssim(reference, reference + rng.normal(0, s, reference.shape), data_range=1)
              for s in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] > 0.95 and scores[2] < 0.5


def test_mutual_information_is_invariant_to_intensity_inversion():
    # MI measures shared information, not equal intensities: a T1 and its inverse share all.
    reference = _image(4)
    assert mutual_information(reference, 1 - reference, data_range=1) == pytest.approx(
        mutual_information(reference, reference, data_range=1), rel=1e-6)
    noise = np.random.default_rng(0).random(reference.shape)
    assert mutual_information(reference, noise, data_range=1) < 0.5


def test_trailing_channel_is_accepted():
    image = _image()[..., None]
    assert ssim(image, image, data_range=1, mask=_disc_mask()[..., None]) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"estimate": np.zeros((8, 9))}, "same shape"),
    ({"reference": np.zeros((4, 8, 8)), "estimate": np.zeros((4, 8, 8))}, "2-D"),
    ({"data_range": 0}, "data_range"),
    ({"data_range": float("nan")}, "data_range"),
    ({"mask": np.zeros((8, 8), bool)}, "empty"),
    ({"mask": np.ones((4, 4), bool)}, "mask of shape"),
    ({"estimate": np.full((8, 8), np.nan)}, "NaN"),
])
def test_bad_input_gives_clear_error(kwargs, message):
    args = {"reference": np.zeros((8, 8)), "estimate": np.zeros((8, 8)), "data_range": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mae(args.pop("reference"), args.pop("estimate"), **args)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="larger than 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1)


def test_plane_scores_equal_the_2d_metrics_of_each_slice_masked_and_unmasked():
    from colab_utils.metrics import plane_scores

    rng = np.random.default_rng(4)
    reference = rng.uniform(0, 1, (5, 24, 28))
    estimate = np.clip(reference + rng.normal(0, 0.1, reference.shape), 0, 1)
    mask = np.zeros(reference.shape, bool)
    mask[:, 4:20, 6:22] = True
    mask[3] = False  # a slice without brain: NaN masked scores, as evaluation expects
    masked = plane_scores(reference, estimate, mask, axis=0)
    whole = plane_scores(reference, estimate, None, axis=0)
    for i in range(5):
        expected = all_metrics(reference[i], estimate[i])
        for metric, value in expected.items():
            assert whole[metric][i] == pytest.approx(value, rel=1e-5, abs=1e-6), metric
        if i == 3:
            assert all(np.isnan(masked[m][i]) for m in masked)
            continue
        expected = all_metrics(reference[i], estimate[i], mask=mask[i])
        for metric, value in expected.items():
            assert masked[metric][i] == pytest.approx(value, rel=1e-5, abs=1e-6), metric


def test_plane_mutual_information_leaves_out_planes_too_small_for_its_histogram():
    rng = np.random.default_rng(5)
    reference = rng.uniform(0, 1, (40, 40, 6))
    estimate = np.clip(reference + rng.normal(0, 0.1, reference.shape), 0, 1)
    mask = np.zeros(reference.shape, bool)
    mask[:, :, :3] = True                 # 1600 voxels per plane: MI counts
    mask[5:15, 5:20, 3:] = True            # 150 voxels: enough for SSIM, not for MI
    scores = metrics.plane_metrics(reference, estimate, mask, axis=2)
    assert scores["n_planes"] == 6 and scores["n_planes_mi"] == 3
    full = metrics.plane_scores(reference, estimate, mask, axis=2)
    assert scores["mi"] == pytest.approx(full["mi"][:3].mean())
    # The small planes' MI is inflated by the empty bins of a 64 x 64 histogram.
    assert full["mi"][3:].mean() > full["mi"][:3].mean()
