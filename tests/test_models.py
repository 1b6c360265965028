import keras
import numpy as np
import pytest

from colab_utils.models.networks import (
    NarrowConv2D,
    patchgan_discriminator,
    receptive_field,
    resnet_generator,
    unet_generator,
)

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


def test_resnet_generator_shape_and_tanh_range():
    g = resnet_generator(image_size=32, filters=8, n_blocks=2)
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


def test_long_skip_feeds_the_stem_features_to_the_head():
    plain = resnet_generator(image_size=32, filters=8, n_blocks=1)
    skip = resnet_generator(image_size=32, filters=8, n_blocks=1, long_skip=True)
    # The head's 7×7 conv sees 8 more input channels: 7 * 7 * 8 more weights.
    assert skip.count_params() - plain.count_params() == 7 * 7 * 8
    assert skip.get_layer("long_skip").output.shape[-1] == 16
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    # Only the stem features reach the head through the skip: zeroing the head
    # weights on the up path's channels leaves a function of the stem alone.
    kernel, bias = skip.get_layer("head_conv").get_weights()
    kernel[:, :, :8] = 0
    skip.get_layer("head_conv").set_weights([kernel, bias])
    import tensorflow as tf

    stem = keras.Model(skip.input, skip.get_layer("stem_relu").output)
    features = np.pad(stem(x).numpy(), [(0, 0), (3, 3), (3, 3), (0, 0)], mode="reflect")
    expected = np.tanh(tf.nn.conv2d(features, kernel[:, :, 8:], 1, "VALID").numpy() + bias)
    np.testing.assert_allclose(skip(x).numpy(), expected, atol=1e-5)
    assert expected.std() > 0.01


def test_intensity_path_starts_at_zero_and_is_a_per_pixel_function():
    plain = resnet_generator(image_size=32, filters=8, n_blocks=1, long_skip=True)
    path = resnet_generator(image_size=32, filters=8, n_blocks=1, long_skip=True,
                            intensity_path=True)
    # Two 1×1 layers of 16 and a 1×1 output: (1·16 + 16) + (16·16 + 16) + (16 + 1).
    assert path.count_params() - plain.count_params() == 32 + 272 + 17
    for layer in plain.layers:
        if layer.weights:
            path.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    # Its last layer starts at zero: the same generator as without it.
    np.testing.assert_allclose(path(x).numpy(), plain(x).numpy(), atol=1e-6)
    # With the convolutional head silenced and the path's output switched on, the
    # generator is a function of each pixel's own intensity: one changed input pixel
    # changes that output pixel and no other.
    kernel, bias = path.get_layer("head_conv").get_weights()
    path.get_layer("head_conv").set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    out = path.get_layer("intensity_out")
    out.set_weights([np.full_like(w, 0.3) for w in out.get_weights()])
    changed = x.copy()
    changed[0, 10, 20, 0] = -changed[0, 10, 20, 0]
    difference = np.abs(path(changed).numpy() - path(x).numpy())
    assert difference[0, 10, 20, 0] > 1e-3
    difference[0, 10, 20, 0] = 0
    assert difference.max() == 0
    # ... and the same function everywhere: equal intensities, equal outputs.
    flat = path(np.full((1, 32, 32, 1), 0.4, "float32")).numpy()
    assert np.ptp(flat) < 1e-6


def test_instance_norm_normalises_each_channel_of_each_image():
    g = resnet_generator(image_size=32, filters=8, n_blocks=1)
    probe = keras.Model(g.input, g.get_layer("stem_norm").output)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    x = x * [[[[1.0]]], [[[5.0]]]]
    y = probe(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-2)


def test_patchgan_70x70_gives_30x30_scores_at_256():
    d = patchgan_discriminator(image_size=256)
    assert d.output_shape == (None, 30, 30, 1)
    assert receptive_field(3) == 70
    assert receptive_field(1) == 16
    small = patchgan_discriminator(image_size=32, n_layers=2, filters=8)
    assert small.output_shape == (None, 6, 6, 1)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patchgan_receptive_field_is_what_its_convolutions_see(n_layers):
    # Walk the built network's convolutions back from one score (instance normalisation
    # mixes in image-wide statistics, but no pixel values from further away).
    d = patchgan_discriminator(image_size=None, filters=4, n_layers=n_layers)
    convs = [layer for layer in d.layers if isinstance(layer, keras.layers.Conv2D)]
    field = 1
    for layer in reversed(convs):
        field = (field - 1) * layer.strides[0] + layer.kernel_size[0]
    assert len(convs) == n_layers + 2 and field == receptive_field(n_layers)


def test_unet_generator_shapes():
    u = unet_generator(image_size=32, filters=8, n_downsamplings=5)
    y = u(np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype("float32")).numpy()
    assert y.shape == (2, 32, 32, 1) and np.abs(y).max() <= 1.0
    assert unet_generator(image_size=256).count_params() > 5e7  # pix2pix U-Net-256: ~54 M


@pytest.mark.parametrize("builder,kwargs,message", [
    (resnet_generator, {"n_blocks": -1}, "n_blocks"),
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


@pytest.mark.parametrize("filters,kernel,strides,padding,shape", [
    (1, 7, 1, "valid", (2, 14, 14, 6)),   # ResNet head
    (1, 4, 1, "valid", (1, 9, 9, 16)),    # PatchGAN scores
    (3, 4, 2, "same", (2, 11, 11, 5)),    # several output channels, stride 2
])
def test_narrow_conv_equals_conv2d_forward_and_backward(filters, kernel, strides, padding, shape,
                                                        monkeypatch):
    import tensorflow as tf

    from colab_utils.models import networks

    monkeypatch.setattr(networks, "cpu_has_avx512", lambda: False)  # where it pays
    rng = np.random.default_rng(0)
    conv = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding)
    narrow = NarrowConv2D(filters, kernel, strides=strides, padding=padding)
    conv.build(shape)
    narrow.build(shape)
    assert narrow._channel_sum()  # the depthwise path is the one under test
    weights = [rng.normal(size=w.shape).astype("float32") for w in conv.get_weights()]
    conv.set_weights(weights)
    narrow.set_weights(weights)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = None
    results = []
    for layer in (conv, narrow):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            if upstream is None:
                upstream = tf.constant(rng.normal(size=y.shape).astype("float32"))
            loss = tf.reduce_sum(y * upstream)
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_variables])])
    for a, b in zip(*results):
        assert a.shape == b.shape
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_the_depthwise_path_is_taken_on_cpus_without_avx512_only(monkeypatch):
    from colab_utils.models import networks

    narrow = NarrowConv2D(1, 7)
    narrow.build((1, 16, 16, 4))
    for avx512, depthwise in ((False, True), (True, False)):
        monkeypatch.setattr(networks, "cpu_has_avx512", lambda avx512=avx512: avx512)
        assert narrow._channel_sum() is depthwise


def test_generator_head_and_patchgan_scores_are_narrow_convs_and_reload(tmp_path):
    g = resnet_generator(image_size=32, filters=8, n_blocks=1)
    d = patchgan_discriminator(image_size=32, filters=8, n_layers=2)
    assert isinstance(g.get_layer("head_conv"), NarrowConv2D)
    assert isinstance(d.get_layer("scores_conv"), NarrowConv2D)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    g.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras")
    assert isinstance(again.get_layer("head_conv"), NarrowConv2D)
    np.testing.assert_array_equal(again(x).numpy(), g(x).numpy())


def test_with_policy_recomputes_a_float32_generator_in_mixed_precision_and_back():
    from colab_utils.runtime.precision import with_policy

    g = resnet_generator(image_size=32, filters=8, n_blocks=1)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    mixed = with_policy(g, "mixed_bfloat16")
    assert mixed.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert mixed.get_layer("head_conv").compute_dtype == "bfloat16"
    assert mixed.layers[-1].name == "tanh" and mixed.layers[-1].compute_dtype == "float32"
    for a, b in zip(mixed.get_weights(), g.get_weights()):
        np.testing.assert_array_equal(a, b)
    reference, low = g(x).numpy(), mixed(x).numpy()
    assert low.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: close to float32, but not equal.
    assert 0 < np.abs(low - reference).max() < 0.1
    back = with_policy(mixed, "float32")
    assert {layer.compute_dtype for layer in back.layers[1:]} == {"float32"}
    np.testing.assert_array_equal(back(x).numpy(), reference)


def test_a_model_translates_as_trained_unless_float16_would_run_on_a_cpu(monkeypatch):
    from colab_utils.runtime import precision

    monkeypatch.setattr(precision, "auto_policy", lambda: "mixed_bfloat16")
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: [])
    assert precision.inference_policy("float32", None) == "float32"
    assert precision.inference_policy("mixed_bfloat16", None) == "mixed_bfloat16"
    # Trained on a T4, translated on a CPU runtime: float16 has no fast path there.
    assert precision.inference_policy("mixed_float16", None) == "mixed_bfloat16"
    assert precision.inference_policy("mixed_float16", "float32") == "float32"
    assert precision.inference_policy("float32", "auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: ["GPU"])
    assert precision.inference_policy("mixed_float16", None) == "mixed_float16"
    with pytest.raises(ValueError, match="precision"):
        precision.inference_policy("float32", "half")


def test_spectral_norm_bounds_each_discriminator_kernel_in_training_only():
    d = patchgan_discriminator(image_size=32, filters=8, n_layers=2, spectral_norm=True)
    wrapped = [layer for layer in d.layers
               if isinstance(layer, keras.layers.SpectralNormalization)]
    assert len(wrapped) == 4  # two stride-2 layers, one stride-1, the scores
    x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")

    def largest_singular_values():
        return [np.linalg.svd(np.reshape(w.layer.kernel.numpy(), (-1, w.layer.kernel.shape[-1])),
                              compute_uv=False)[0] for w in wrapped]

    before = largest_singular_values()
    d(x, training=False)
    assert largest_singular_values() == before  # inference leaves the weights alone
    assert max(before) < 0.7  # the initial kernels (N(0, 0.02)) are not normalised
    for _ in range(30):  # the power iteration converges over training calls
        d(x, training=True)
    np.testing.assert_allclose(largest_singular_values(), 1.0, atol=0.05)
    plain = patchgan_discriminator(image_size=32, filters=8, n_layers=2)
    assert len(plain.weights) == len(d.weights) - 4  # one power-iteration vector per conv


def test_mixed_precision_spectral_discriminator_scores_in_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")  # conftest restores float32
    d = patchgan_discriminator(image_size=32, filters=8, n_layers=2, spectral_norm=True)
    assert d.get_layer("layer1_conv_sn").compute_dtype == "bfloat16"
    x = np.zeros((1, 32, 32, 1), "float32")
    assert d(x, training=True).dtype == "float32"
