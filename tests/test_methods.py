"""Every method trains through the same path; the paired ones need pairs."""

import math

import pytest

from colab_utils.data.slices import SliceSet
from colab_utils.data.toy import toy_slices
from colab_utils.evaluation.inference import load_method
from colab_utils.models.factory import build_model, unet_depth
from colab_utils.models.paired import PairedTranslator
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train
from colab_utils.viz import read_history


@pytest.mark.parametrize("size,depth", [(256, 8), (64, 6), (32, 5), (240, 4)])
def test_unet_depth_fits_the_image_size(size, depth):
    assert unet_depth(size) == depth
    assert size % 2 ** depth == 0


def test_pix2pix_has_conditional_discriminators_and_supervised_has_none():
    pix = build_model(smoke_config(model="pix2pix"), 4)
    assert isinstance(pix, PairedTranslator) and pix.adversarial
    assert pix.disc_t2.input_shape[-1] == 2  # sees (input, output)
    assert pix.lambda_l1 == 100.0
    sup = build_model(smoke_config(model="supervised"), 4)
    assert not sup.adversarial and sup.disc_optimizer is None
    assert sup.gen_t1_to_t2.get_layer("head_conv") is not None  # the ResNet generator


@pytest.mark.parametrize("model", ["cyclegan", "cyclegan_s", "pix2pix", "supervised", "simple"])
def test_each_method_trains_a_few_steps_with_finite_losses(tmp_path, toy_data, model):
    run = tmp_path / model
    config = smoke_config(model=model, steps_per_epoch=2, tensorboard=False)
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
    config = smoke_config(model="supervised", epochs=3, epochs_decay=0,
                               steps_per_epoch=8, tensorboard=False, grid_slices=0,
                               augment=False, lr=1e-3)
    train(config, tmp_path / "sup", toy_data, show_inline=False)
    history = read_history(tmp_path / "sup" / "history.csv")
    first, last = history[0]["val_supervised_t1_to_t2"], history[-1]["val_supervised_t1_to_t2"]
    assert last < 0.7 * first, (first, last)


def test_paired_methods_refuse_unpaired_data(tmp_path):
    t1, t2, _ = toy_slices(4, 32)
    unpaired = SliceSet(t1[..., None], t2[::-1, ..., None], False, "unpaired-store")
    with pytest.raises(ValueError, match="unpaired-store: model 'pix2pix' needs paired"):
        train(smoke_config(model="pix2pix"), tmp_path / "r", train_data=unpaired)
