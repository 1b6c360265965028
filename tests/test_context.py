"""2.5-D context: neighbourhoods, batches, inference with neighbours, training end to end."""

import shutil

import numpy as np
import pytest

from colab_utils.config import TrainConfig
from colab_utils.data.batches import training_dataset
from colab_utils.data.context import middle, neighbour_rows, plane_rows, stack, with_context
from colab_utils.data.slices import SliceSet
from colab_utils.evaluation.compare import compare
from colab_utils.evaluation.inference import Method, keras_translator, load_method
from colab_utils.evaluation.scoring import evaluate
from colab_utils.evaluation.synthesis import translate_volume
from colab_utils.fileio import read_csv
from colab_utils.models.networks import resnet_generator
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train


def test_neighbourhoods_repeat_the_nearest_slice_at_edges_and_gaps():
    subjects = ["a", "a", "a", "a", "b", "b"]
    slices = [10, 11, 12, 14, 50, 51]  # a has no slice 13; b has two
    rows = neighbour_rows(subjects, slices, 2)
    assert rows.tolist() == [
        [0, 0, 0, 1, 2],  # a/10: nothing below, so itself; above 11 and 12
        [0, 0, 1, 2, 2],  # a/11: 9 missing -> 10; 13 missing -> 12
        [0, 1, 2, 2, 3],  # a/12: 13 missing -> 12; 14
        [2, 3, 3, 3, 3],  # a/14: 12; 13 missing -> 14 itself; nothing above
        [4, 4, 4, 5, 5],  # b/50: another subject's rows are never used
        [4, 4, 5, 5, 5]]
    assert plane_rows(3, 1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    images = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1) * np.ones((6, 2, 2, 1))
    stacked = stack(images, rows)
    assert stacked.shape == (6, 2, 2, 5)
    assert stacked[1, 0, 0].tolist() == [0, 0, 1, 2, 2]
    np.testing.assert_array_equal(middle(stacked), images)


def _slices(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(0, 1, (n, size, size, 1)).astype(np.float32)
    t2 = rng.uniform(0, 1, (n, size, size, 1)).astype(np.float32)
    subjects, numbers = np.array(["s"] * n), np.arange(100, 100 + n)
    return SliceSet(t1, t2, True, "test", t1_subjects=subjects, t2_subjects=subjects,
                    t1_slices=numbers, t2_slices=numbers, mask=t1 > -1, t2_mask=t2 > -1)


@pytest.mark.parametrize("k", [0, 1])
def test_only_a_2_5d_translation_changes_when_a_neighbouring_slice_changes(k):
    generator = resnet_generator(image_size=32, channels=2 * k + 1, filters=8, n_blocks=1)
    method = Method("g", 32, {"t1_to_t2": keras_translator(generator)}, context=k)
    slices = _slices()
    before = method.translate_split(slices, "t1_to_t2")
    assert before.shape == slices.t1.shape  # one output slice per input slice
    changed = _slices()
    changed.t1[3] = 1.0 - changed.t1[3]  # the neighbour above slice 2 (102 -> 103)
    after = method.translate_split(changed, "t1_to_t2")
    moved = np.abs(after[2] - before[2]).max()
    assert (moved > 1e-4) if k else (moved == 0.0), moved
    np.testing.assert_array_equal(after[0], before[0])  # slice 100 sees 100, 100, 101
    # A few rows of the split are translated with their real neighbours from the whole
    # split, not with each other (what the comparison's qualitative figure draws).
    picks = [1, 4]
    np.testing.assert_allclose(method.translate_split(slices, "t1_to_t2", picks),
                               before[picks], atol=1e-6)


def test_training_batches_carry_the_neighbourhood_with_the_slice_in_the_middle():
    slices = _slices(n=8)
    common = dict(batch_size=2, steps_per_epoch=4, seed=3, start_step=0, end_step=4,
                  paired=True, augmentation=True, jitter_size=36)
    flat = list(training_dataset(slices, **common))
    deep = list(training_dataset(slices, **common, context=2))
    for (f1, f2), (d1, d2) in zip(flat, deep):
        assert d1.shape == (2, 32, 32, 5)
        # Augmentation is the same for the whole neighbourhood, and the middle is the slice.
        np.testing.assert_allclose(d1.numpy()[..., 2:3], f1.numpy(), atol=1e-6)
        np.testing.assert_allclose(d2.numpy()[..., 2:3], f2.numpy(), atol=1e-6)


def test_a_volume_is_translated_with_its_planes_neighbours():
    volume = np.zeros((20, 24, 6), np.float32)
    for z in range(6):
        volume[4:16, 4:20, z] = 0.1 * (z + 1)
    mask = volume > 0
    seen = []

    def translate(images, masks):  # records the neighbourhood means, returns the middle
        seen.extend(images.reshape(len(images), -1, images.shape[-1]).max(axis=1).tolist())
        return middle(images)

    method = Method("recorder", 32, {"t1_to_t2": translate}, context=1)
    out = translate_volume(method, "t1_to_t2", volume, mask, slice_size=32)
    np.testing.assert_allclose(out, volume, atol=1e-6)
    assert np.round(seen, 3).tolist()[0] == [0.1, 0.1, 0.2]   # the first plane repeats
    assert np.round(seen, 3).tolist()[-1] == [0.5, 0.6, 0.6]  # and the last
    assert np.round(seen, 3).tolist()[2] == [0.2, 0.3, 0.4]


def test_context_needs_a_slice_store_and_stays_small():
    plain = SliceSet(*_slices().t1[None][[0, 0]], True, "toy-npz")
    with pytest.raises(ValueError, match="toy-npz: context_slices 1 needs each slice's subject"):
        with_context(plain, 1)
    with pytest.raises(ValueError, match="'context_slices': expected 0..4"):
        TrainConfig(context_slices=5).validated()
    assert TrainConfig(context_slices=2).network_channels == 5


def test_a_2_5d_run_trains_evaluates_and_scores_volumes_from_a_store(store, tmp_path):
    store = shutil.copytree(store, tmp_path / "store")
    config = smoke_config(model="cyclegan", context_slices=1, steps_per_epoch=2,
                          tensorboard=False, collapse_check=False)
    train(config, tmp_path / "run", store, show_inline=False)
    assert (tmp_path / "run" / "grids" / "epoch_002.png").is_file()
    method = load_method(tmp_path / "run")
    assert method.context == 1
    result = evaluate(tmp_path / "run", store, split="test", examples=1, volumes=True)
    rows = read_csv(result.directory / "volumes.csv")
    assert len(rows) == 2 and all(np.isfinite(r["coronal_ssim"]) for r in rows)
    assert all(np.isfinite(r["ssim_masked"]) for r in result.per_slice)
    # Compared with another method, with the qualitative figure a 2.5-D run needs its
    # slices' neighbours for.
    train(smoke_config(model="simple"), tmp_path / "simple", store, show_inline=False)
    comparison = compare([tmp_path / "simple", tmp_path / "run"], tmp_path / "cmp",
                         data=store, split="test", qualitative_slices=2)
    assert (comparison.directory / "qualitative_t1_to_t2.png").stat().st_size > 1000
    assert "qualitative_t2_to_t1.png" in comparison.report.read_text()
