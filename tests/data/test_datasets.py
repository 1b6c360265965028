import numpy as np
import pytest

from colab_utils.data.datasets import evaluation_dataset, paired_dataset, unpaired_dataset
from colab_utils.data.slices import SliceSet, fit_to_size
from colab_utils.data.toy import toy_slices


def _set(paired=True):
    t1, t2, mask = toy_slices(8, 64, seed=5)
    return SliceSet(t1[..., None], t2[..., None], paired=paired, source="toy",
                    mask=mask[..., None] > 0)


def _batches(dataset):
    return [tuple(x.numpy() for x in b) for b in dataset]


def test_paired_batches_are_aligned_and_unpaired_are_not():
    slices = _set()
    for t1, t2 in _batches(paired_dataset(slices, batch_size=2, epochs=2, seed=1,
                                                augment=False)):
        inside = t1 > -1
        # T2 = 1.2 - T1 inside the head, on the [0, 1] scale; in [-1, 1]: t2 = 0.4 - t1.
        np.testing.assert_allclose(t2[inside], 0.4 - t1[inside], atol=1e-5)
    mismatched = 0
    for t1, t2 in _batches(unpaired_dataset(slices, batch_size=2, seed=1, augment=False)):
        inside = t1 > -1
        mismatched += not np.allclose(t2[inside], 0.4 - t1[inside], atol=1e-3)
    assert mismatched >= 2


def test_same_seed_same_batches_other_seed_other_batches():
    slices = _set()
    a = _batches(unpaired_dataset(slices, batch_size=2, seed=3))
    b = _batches(unpaired_dataset(slices, batch_size=2, seed=3))
    c = _batches(unpaired_dataset(slices, batch_size=2, seed=4))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    assert len(a) == 4 and a[0][0].shape == (2, 64, 64, 1)


def test_image_size_averages_down_and_evaluation_is_in_order():
    slices = _set()
    small = fit_to_size(slices, 32)
    assert small.t1.shape == (8, 32, 32, 1) and small.mask.shape == (8, 32, 32, 1)
    np.testing.assert_allclose(small.t1[0, 0, 0, 0], slices.t1[0, :2, :2, 0].mean(), rtol=1e-6)
    batches = _batches(evaluation_dataset(slices, batch_size=3, image_size=32))
    assert [b[0].shape[0] for b in batches] == [3, 3, 2]
    np.testing.assert_allclose(batches[0][0][0], small.t1[0] * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="expected 48×48 slices"):
        fit_to_size(slices, 48)


def test_paired_request_on_unpaired_split_is_refused():
    with pytest.raises(ValueError, match="paired batches requested but the split is unpaired"):
        paired_dataset(_set(paired=False))
