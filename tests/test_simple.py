"""The Simple baseline: inverted contrast, histogram-matched; saved and loaded."""


import numpy as np
import pytest

from colab_utils.data.slices import SliceSet
from colab_utils.evaluation.inference import load_method
from colab_utils.models.simple import SimpleBaseline


def _disc_image(n, size=32, seed=0):
    """'Brains': a disc mask holding the values of an even grid over [0.1, 0.9] in a
    random order (every image has the same histogram), zero outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 2.5) ** 2
    t1 = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        t1[i, mask, 0] = rng.permutation(np.linspace(0.1, 0.9, int(mask.sum())))
    masks = np.broadcast_to(mask[None, :, :, None], t1.shape).copy()
    return t1, masks


def test_simple_baseline_recovers_an_inverted_contrast():
    # T2 is exactly 1 - T1 inside the brain: inverting and matching the T2
    # histogram must give the real T2 back, up to the quantile grid's resolution.
    t1, mask = _disc_image(6, seed=1)
    t2 = np.where(mask, 1.0 - t1, 0.0).astype(np.float32)
    baseline = SimpleBaseline.fit(SliceSet(t1[:4], t2[:4], True, "test", mask=mask[:4],
                                           t2_mask=mask[:4]))
    out = baseline.translate(t1[4:], mask[4:], direction="t1_to_t2")
    assert out.dtype == np.float32 and out.shape == t1[4:].shape
    assert np.abs(out - t2[4:])[mask[4:]].max() < 2e-3
    assert np.all(out[~mask[4:]] == 0)
    back = baseline.translate(t2[4:], mask[4:], direction="t2_to_t1")
    assert np.abs(back - t1[4:])[mask[4:]].max() < 2e-3


def test_simple_baseline_matches_the_target_histogram_not_the_input_scale():
    t1, mask = _disc_image(3, seed=2)
    t2 = np.where(mask, 0.2 + 0.1 * (1 - t1), 0.0).astype(np.float32)  # T2 in [0.2, 0.3]
    baseline = SimpleBaseline.fit(SliceSet(t1, t2, True, "test", mask=mask, t2_mask=mask))
    out = baseline.translate(t1, mask, direction="t1_to_t2")[mask]
    assert 0.199 < out.min() and out.max() < 0.301
    # Brightest T1 becomes darkest T2.
    flat_in = t1[mask]
    assert out[np.argmax(flat_in)] == pytest.approx(out.min(), abs=1e-3)


def test_simple_baseline_save_load_and_bad_file(tmp_path):
    t1, mask = _disc_image(2)
    baseline = SimpleBaseline.fit(SliceSet(t1, 1 - t1, True, "x", mask=mask, t2_mask=mask))
    path = baseline.save(tmp_path / "simple.json")
    again = SimpleBaseline.load(path)
    np.testing.assert_array_equal(again.quantiles["t2"], baseline.quantiles["t2"])
    method = load_method(path)
    np.testing.assert_array_equal(method.translate(t1, mask, direction="t1_to_t2"),
                                  baseline.translate(t1, mask))
    (tmp_path / "bad.json").write_text('{"quantiles": {"t1": [3, 2, 1], "t2": [0, 1]}}')
    with pytest.raises(ValueError, match=r"bad.json: .*increasing"):
        SimpleBaseline.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="direction"):
        baseline.translate(t1, mask, direction="t1_to_flair")
