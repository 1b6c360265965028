import math

import numpy as np
import pytest

from colab_utils.baselines import PairedTranslator, SimpleBaseline
from colab_utils.config import TrainConfig
from colab_utils.data.slices import SliceSet
from colab_utils.inference import load_method
from colab_utils.training import build_paired, train, unet_depth
from colab_utils.viz import read_history


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


@pytest.mark.parametrize("size,depth", [(256, 8), (64, 6), (32, 5), (240, 4)])
def test_unet_depth_fits_the_image_size(size, depth):
    assert unet_depth(size) == depth
    assert size % 2 ** depth == 0


def test_pix2pix_has_conditional_discriminators_and_supervised_has_none():
    pix = build_paired(TrainConfig.smoke(model="pix2pix"), 4)
    assert isinstance(pix, PairedTranslator) and pix.adversarial
    assert pix.disc_t2.input_shape[-1] == 2  # sees (input, output)
    assert pix.lambda_l1 == 100.0
    sup = build_paired(TrainConfig.smoke(model="supervised"), 4)
    assert not sup.adversarial and sup.disc_optimizer is None
    assert sup.gen_t1_to_t2.get_layer("head_conv") is not None  # the ResNet generator


@pytest.mark.parametrize("model", ["cyclegan", "cyclegan_s", "pix2pix", "supervised", "simple"])
def test_each_method_trains_a_few_steps_with_finite_losses(tmp_path, toy_data, model):
    run = tmp_path / model
    config = TrainConfig.smoke(model=model, max_steps_per_epoch=2, tensorboard=False)
    result = train(config, run, toy_data, show_inline=False)
    assert (run / "grids" / "epoch_001.png").is_file()
    method = load_method(run)
    assert method.name == model and set(method.translators) == {"t1_to_t2", "t2_to_t1"}
    if model == "simple":
        assert result.global_step == 0 and (run / "export" / "simple_baseline.json").is_file()
        return
    assert result.global_step == 4
    history = read_history(run / "history.csv")
    assert len(history) == 2
    loss_keys = [k for k in history[-1] if k not in ("epoch", "step", "lr", "seconds")]
    assert "gen_total" in loss_keys and "val_supervised_t1_to_t2" in loss_keys
    for key in loss_keys:
        assert math.isfinite(history[-1][key]), (model, key)
    if model in ("cyclegan_s", "pix2pix", "supervised"):
        assert history[-1]["supervised_t1_to_t2"] > 0  # the paired L1 is trained on
    if model == "pix2pix":
        assert history[-1]["disc_t2"] > 0


def test_supervised_generator_learns_the_toy_translation(tmp_path, toy_data):
    config = TrainConfig.smoke(model="supervised", epochs=3, epochs_decay=0,
                               max_steps_per_epoch=8, tensorboard=False, grid_slices=0,
                               augment=False, lr=1e-3)
    train(config, tmp_path / "sup", toy_data, show_inline=False)
    history = read_history(tmp_path / "sup" / "history.csv")
    first, last = history[0]["val_supervised_t1_to_t2"], history[-1]["val_supervised_t1_to_t2"]
    assert last < 0.7 * first, (first, last)


def test_paired_methods_refuse_unpaired_data(tmp_path):
    t1, mask = _disc_image(4)
    unpaired = SliceSet(t1, t1[::-1], False, "unpaired-store")
    with pytest.raises(ValueError, match="unpaired-store: model 'pix2pix' needs paired"):
        train(TrainConfig.smoke(model="pix2pix"), tmp_path / "r", train_data=unpaired)
