import numpy as np
import pytest

from colab_utils.data.batches import epoch_indices, steps_per_epoch, training_dataset
from colab_utils.data.slices import SliceSet, save_split
from colab_utils.data.store import load_split
from colab_utils.data.toy import toy_slices


def _slices(n=6, size=8, paired=True):
    r = np.random.default_rng(0)
    return SliceSet(r.uniform(size=(n, size, size, 1)).astype("float32"),
                    r.uniform(size=(n + (0 if paired else 3), size, size, 1)).astype("float32"),
                    paired=paired, source="mem")


def test_npz_layout_round_trip(tmp_path):
    t1, t2, _ = toy_slices(3, 16, seed=1)
    save_split(tmp_path / "train.npz", t1, t2, paired=True)
    s = load_split(tmp_path, "train")
    assert s.t1.shape == (3, 16, 16, 1) and s.paired
    np.testing.assert_allclose(s.t2[..., 0], t2)
    assert load_split(tmp_path, "val", required=False) is None


def test_folder_layout_pairs_by_file_name(tmp_path):
    for domain in ("t1", "t2"):
        (tmp_path / "train" / domain).mkdir(parents=True)
        for i in range(3):
            np.save(tmp_path / "train" / domain / f"s{i}.npy", np.full((8, 8), i / 4, "float32"))
    s = load_split(tmp_path, "train")
    assert s.paired and s.t1.shape == (3, 8, 8, 1)
    (tmp_path / "train" / "t2" / "s2.npy").rename(tmp_path / "train" / "t2" / "other.npy")
    assert not load_split(tmp_path, "train").paired


@pytest.mark.parametrize("t1,message", [
    (np.full((2, 8, 8), 3.0), r"expected intensities in \[0, 1\], got \[3, 3\]"),
    (np.full((2, 8, 8), np.nan), "expected finite values"),
    (np.zeros((2, 2, 8, 8, 1)), "expected a slice"),
    (np.zeros((0, 8, 8)), "expected at least one slice"),
])
def test_bad_arrays_name_the_file(tmp_path, t1, message):
    np.savez(tmp_path / "train.npz", t1=t1, t2=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=f"train.npz\\[t1\\]: {message}"):
        load_split(tmp_path, "train")


def test_missing_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="expected train.npz or train/t1"):
        load_split(tmp_path, "train")
    np.savez(tmp_path / "train.npz", t1=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"missing \['t2'\]"):
        load_split(tmp_path, "train")
    (tmp_path / "val.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="val.npz: not a readable .npz"):
        load_split(tmp_path, "val")


def test_unpaired_epochs_shuffle_domains_independently():
    a1, a2 = epoch_indices(10, 10, paired=False, length=10, seed=0, epoch=0)
    assert sorted(a1) == list(range(10)) and sorted(a2) == list(range(10))
    assert (a1 != a2).any()
    b1, _ = epoch_indices(10, 10, paired=False, length=10, seed=0, epoch=1)
    assert (a1 != b1).any()
    p1, p2 = epoch_indices(10, 10, paired=True, length=10, seed=0, epoch=0)
    np.testing.assert_array_equal(p1, p2)
    # The smaller domain is cycled through to cover the larger one.
    c1, c2 = epoch_indices(3, 7, paired=False, length=7, seed=0, epoch=0)
    assert sorted(c2) == list(range(7)) and set(c1) == {0, 1, 2}


def _collect(dataset):
    return [tuple(x.numpy() for x in batch) for batch in dataset]


def test_any_range_of_steps_rebuilds_exactly():
    s = _slices(n=6, size=8)
    kw = dict(batch_size=2, steps_per_epoch=3, seed=4, paired=False, augmentation=True,
              jitter_size=10)
    full = _collect(training_dataset(s, start_step=0, end_step=7, **kw))
    parts = (_collect(training_dataset(s, start_step=0, end_step=4, **kw))
             + _collect(training_dataset(s, start_step=4, end_step=7, **kw)))
    assert len(full) == len(parts) == 7
    for (a1, a2), (b1, b2) in zip(full, parts):
        np.testing.assert_array_equal(a1, b1)
        np.testing.assert_array_equal(a2, b2)
    assert full[0][0].shape == (2, 8, 8, 1)
    assert full[0][0].min() >= -1 and full[0][0].max() <= 1


def test_paired_batches_stay_aligned_under_augmentation():
    t1, _, _ = toy_slices(4, 16, seed=2)
    s = SliceSet(t1[..., None], t1[..., None].copy(), paired=True, source="mem")
    for b1, b2 in _collect(training_dataset(s, batch_size=2, steps_per_epoch=2, seed=0,
                                            start_step=0, end_step=4, paired=True,
                                            jitter_size=20)):
        np.testing.assert_array_equal(b1, b2)


def test_augmentation_flips_and_crops():
    t1, _, _ = toy_slices(1, 16, seed=3)
    s = SliceSet(t1[..., None], t1[..., None], paired=True, source="mem")
    batches = _collect(training_dataset(s, batch_size=1, steps_per_epoch=1, seed=0,
                                        start_step=0, end_step=40, jitter_size=16))
    original = t1[0] * 2 - 1
    flipped = [np.allclose(b[0][0, ..., 0], original[:, ::-1]) for b in batches]
    same = [np.allclose(b[0][0, ..., 0], original) for b in batches]
    assert all(f or s for f, s in zip(flipped, same))
    assert 5 < sum(flipped) < 35


def test_steps_per_epoch():
    s = _slices(n=6, paired=False)  # 6 T1, 9 T2
    assert steps_per_epoch(s, 2) == 4
    assert steps_per_epoch(s, 2, max_steps=3) == 3
    with pytest.raises(ValueError, match="expected at least batch_size=16"):
        steps_per_epoch(s, 16)
