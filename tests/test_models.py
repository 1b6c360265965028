import keras
import numpy as np
import pytest

from colab_utils.models import (
    patchgan_discriminator, receptive_field, resnet_generator, unet_generator)

# junyanz/pytorch-CycleGAN-and-pix2pix ResNet-9, 64 filters, 3 channels, instance
# norm without affine parameters: 11,378,179 parameters.
REFERENCE_RESNET9_PARAMS = 11_378_179


def test_resnet9_parameter_count_matches_reference():
    g3 = resnet_generator(image_size=256, channels=3)
    assert g3.count_params() == REFERENCE_RESNET9_PARAMS
    g1 = resnet_generator(image_size=256, channels=1)
    # One channel in and out removes 2 of 3 input channels of the 7×7 stem (2 * 49 * 64
    # weights) and of the head's outputs (as many weights, and 2 biases).
    assert abs(g1.count_params() - REFERENCE_RESNET9_PARAMS) / REFERENCE_RESNET9_PARAMS < 0.01
    assert g1.count_params() == REFERENCE_RESNET9_PARAMS - 2 * (7 * 7 * 64 * 2) - 2


@pytest.mark.parametrize("upsampling", ["transpose", "resize_conv"])
def test_resnet_generator_shape_and_tanh_range(upsampling):
    g = resnet_generator(image_size=32, filters=8, n_blocks=2, upsampling=upsampling)
    x = np.random.default_rng(0).normal(0, 50, (3, 32, 32, 1)).astype("float32")
    y = g(x).numpy()
    assert y.shape == (3, 32, 32, 1)
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert y.std() > 0  # not a constant output


def test_resnet_generator_accepts_any_size_when_unspecified():
    g = resnet_generator(image_size=None, filters=4, n_blocks=1)
    assert g(np.zeros((1, 48, 40, 1), "float32")).shape == (1, 48, 40, 1)


def test_six_and_nine_block_generators_differ_by_three_blocks():
    g6 = resnet_generator(image_size=64, n_blocks=6)
    g9 = resnet_generator(image_size=64, n_blocks=9)
    per_block = 2 * (3 * 3 * 256 * 256 + 256)
    assert g9.count_params() - g6.count_params() == 3 * per_block


def test_instance_norm_normalises_each_channel_of_each_image():
    g = resnet_generator(image_size=32, filters=8, n_blocks=1)
    probe = keras.Model(g.input, g.get_layer("stem_norm").output)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype("float32") * [[[[1.0]]], [[[5.0]]]]
    y = probe(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-2)


def test_patchgan_70x70_gives_30x30_scores_at_256():
    d = patchgan_discriminator(image_size=256)
    assert d.output_shape == (None, 30, 30, 1)
    assert receptive_field(3) == 70
    assert receptive_field(1) == 16
    assert patchgan_discriminator(image_size=32, n_layers=2, filters=8).output_shape == (None, 6, 6, 1)


def test_patchgan_receptive_field_is_what_the_network_sees():
    d = patchgan_discriminator(image_size=None, filters=4, n_layers=1, norm="none")
    x = np.zeros((1, 64, 64, 1), "float32")
    base = d(x).numpy()[0, :, :, 0]
    x[0, 20, 20, 0] = 1.0
    changed = np.argwhere(np.abs(d(x).numpy()[0, :, :, 0] - base) > 0)
    # Score rows that see pixel 20: receptive field (16 px) / output stride (2**n_layers).
    assert changed[:, 0].max() - changed[:, 0].min() + 1 == 16 // 2


def test_unet_generator_shapes():
    u = unet_generator(image_size=32, filters=8, n_downsamplings=5)
    y = u(np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype("float32")).numpy()
    assert y.shape == (2, 32, 32, 1) and np.abs(y).max() <= 1.0
    assert unet_generator(image_size=256).count_params() > 5e7  # pix2pix U-Net-256: ~54 M


@pytest.mark.parametrize("builder,kwargs,message", [
    (resnet_generator, {"norm": "layer"}, "'instance', 'batch', 'none'"),
    (resnet_generator, {"upsampling": "pixelshuffle"}, "'transpose', 'resize_conv'"),
    (patchgan_discriminator, {"norm": "weird"}, "expected one of"),
    (unet_generator, {"image_size": 48, "n_downsamplings": 5}, "multiple of"),
    (resnet_generator, {"image_size": 30}, "multiple of 4"),
    (patchgan_discriminator, {"n_layers": 0}, "n_layers"),
])
def test_bad_options_raise_value_error_listing_choices(builder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        builder(**kwargs)


def test_mixed_precision_models_output_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    g = resnet_generator(image_size=32, filters=8, n_blocks=1)
    d = patchgan_discriminator(image_size=32, filters=8, n_layers=2)
    assert g.get_layer("stem_conv").compute_dtype == "bfloat16"
    x = np.zeros((1, 32, 32, 1), "float32")
    assert g(x).dtype == "float32" and d(x).dtype == "float32"
