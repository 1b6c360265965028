"""Network builders: ResNet and U-Net generators, UNIT's encoders and generators,
PatchGAN discriminator.

Every builder takes all of its settings as arguments and returns a functional
``keras.Model`` in NHWC layout. Generators end in ``tanh`` (values in [-1, 1])
and discriminators in a linear layer; both final layers run in float32 so the
models are safe under a mixed-precision dtype policy.

Instance normalisation is ``keras.layers.GroupNormalization(groups=-1)``
(one group per channel), which replaces tensorflow-addons' InstanceNormalization.
"""

from __future__ import annotations

from functools import lru_cache

import keras
from keras import layers, ops

# Weights drawn from N(0, 0.02), as in the CycleGAN and pix2pix papers.
_INIT_STDDEV = 0.02


@keras.saving.register_keras_serializable(package="colab_utils")
class ReflectionPadding2D(layers.Layer):
    """Pads height and width by reflection (``padding`` pixels on each side)."""

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda d: None if d is None else d + 2 * self.padding  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="colab_utils")
class NarrowConv2D(layers.Conv2D):
    """``Conv2D`` for a few output channels (image heads, PatchGAN scores).

    Same kernel, bias and result (to 1e-5) as ``Conv2D``. On CPUs without AVX-512,
    TensorFlow's backward pass of a convolution to one channel is an order of
    magnitude slower than it should be (docs/BENCHMARKS.md), so there it is
    computed as a depthwise convolution with the kernel's output channels as
    channel multiplier, then a sum over the input channels. Where oneDNN has
    AVX-512 kernels the plain convolution is the faster one (1.4× in float32,
    2.3× in bf16 for the generator's head), as it is on GPUs and TPUs: they use
    ``Conv2D``'s own path.
    """

    def convolution_op(self, inputs, kernel):
        if not self._channel_sum():
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        cin, cout = kernel.shape[-2], kernel.shape[-1]
        y = tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1),
                                   self.padding.upper())
        # Depthwise output channel c * cout + m is input channel c through filter m.
        shape = tf.concat([tf.shape(y)[:3], [cin, cout]], axis=0)
        return tf.reduce_sum(tf.reshape(y, shape), axis=3)

    def _channel_sum(self) -> bool:
        if (keras.backend.backend() != "tensorflow" or self.groups != 1
                or self.data_format != "channels_last" or self.dilation_rate != (1, 1)
                or self.strides[0] != self.strides[1]):
            return False
        return _tensorflow_cpu_only() and not cpu_has_avx512()


@lru_cache(maxsize=1)
def cpu_has_avx512() -> bool:
    """Whether the CPU has AVX-512 (foundation) instructions, from ``/proc/cpuinfo``
    (``False`` where it cannot be read)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return " avx512f" in text


@lru_cache(maxsize=1)
def _tensorflow_cpu_only() -> bool:
    """Whether this process computes with TensorFlow on CPUs alone (no GPU or TPU).

    Decided once, when the first step is traced: the devices a process can use are
    fixed once TensorFlow's runtime has started.
    """
    import tensorflow as tf

    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=_INIT_STDDEV)


def _instance_norm(name: str, affine: bool):
    """Instance normalisation: group normalisation with one group per channel."""
    return layers.GroupNormalization(groups=-1, epsilon=1e-5, center=affine, scale=affine,
                                     name=name)


def _spectral(layer: layers.Layer, spectral: bool, dtype=None) -> layers.Layer:
    """``layer`` with its kernel divided by its largest singular value in training, or as is."""
    if not spectral:
        return layer
    return layers.SpectralNormalization(layer, dtype=dtype, name=f"{layer.name}_sn")


def _conv_norm_act(x, filters, kernel, strides, *, norm, affine, act, name, padding="same",
                   spectral=False):
    """Convolution (spectrally normalised when ``spectral``), instance normalisation (when
    ``norm``), activation."""
    x = _spectral(layers.Conv2D(
        filters, kernel, strides=strides, padding=padding,
        kernel_initializer=_init(), name=f"{name}_conv",
    ), spectral)(x)
    if norm:
        x = _instance_norm(f"{name}_norm", affine)(x)
    if act == "relu":
        x = layers.ReLU(name=f"{name}_relu")(x)
    elif act == "lrelu":
        x = layers.LeakyReLU(negative_slope=0.2, name=f"{name}_lrelu")(x)
    return x


def _residual_block(x, filters, *, norm, affine, dropout, name):
    """Two reflection-padded 3×3 convolutions with a skip connection."""
    y = ReflectionPadding2D(1, name=f"{name}_pad1")(x)
    y = _conv_norm_act(y, filters, 3, 1, norm=norm, affine=affine, act="relu",
                       name=f"{name}_a", padding="valid")
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = ReflectionPadding2D(1, name=f"{name}_pad2")(y)
    y = _conv_norm_act(y, filters, 3, 1, norm=norm, affine=affine, act=None,
                       name=f"{name}_b", padding="valid")
    return layers.Add(name=f"{name}_add")([x, y])


def _upsample(x, filters, *, norm, affine, name):
    """Doubles height and width: a transposed convolution, as in the paper."""
    x = layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same",
        kernel_initializer=_init(), name=f"{name}_convT",
    )(x)
    if norm:
        x = _instance_norm(f"{name}_norm", affine)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _resnet_down(inputs, filters, *, norm, affine):
    """The ResNet generator's stem and two stride-2 convolutions: (H, W) → (H/4, W/4, 4f);
    returns that and the stem's (H, W, f) features."""
    x = ReflectionPadding2D(3, name="stem_pad")(inputs)
    x = stem = _conv_norm_act(x, filters, 7, 1, act="relu", name="stem", padding="valid",
                              norm=norm, affine=affine)
    x = _conv_norm_act(x, filters * 2, 3, 2, act="relu", name="down1", norm=norm, affine=affine)
    x = _conv_norm_act(x, filters * 4, 3, 2, act="relu", name="down2", norm=norm, affine=affine)
    return x, stem


def _resnet_up(x, filters, *, norm, affine):
    """The ResNet generator's two upsamplings: (H/4, W/4) → (H, W, f)."""
    x = _upsample(x, filters * 2, name="up1", norm=norm, affine=affine)
    return _upsample(x, filters, name="up2", norm=norm, affine=affine)


def _resnet_head(x, channels):
    """Reflection pad and 7×7 convolution to the image's channels (before the tanh)."""
    x = ReflectionPadding2D(3, name="head_pad")(x)
    return NarrowConv2D(channels, 7, padding="valid", kernel_initializer=_init(),
                        name="head_conv")(x)


def _input(image_size, channels, name):
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ValueError(f"image_size: expected a positive int or None, got {image_size!r}")
    if not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels: expected a positive int, got {channels!r}")
    return keras.Input(shape=(image_size, image_size, channels), name=name)


def resnet_generator(
    *,
    image_size: int | None = 256,
    channels: int = 1,
    filters: int = 64,
    n_blocks: int = 9,
    norm_affine: bool = False,
    dropout: float = 0.0,
    long_skip: bool = False,
    intensity_path: bool = False,
    name: str = "resnet_generator",
) -> keras.Model:
    """ResNet generator of Johnson et al. as used by CycleGAN.

    Reflection pad + 7×7 conv, two stride-2 downsamplings, ``n_blocks``
    residual blocks, two upsamplings, reflection pad + 7×7 conv, ``tanh``.

    Args:
        image_size: Height and width of the input, or ``None`` for any size
            divisible by 4.
        channels: Input and output channels.
        filters: Filters of the first layer (64 in the paper).
        n_blocks: Residual blocks (9 for 256 px, 6 for 128 px in the paper).
        norm_affine: Learn a scale and offset in the instance normalisation
            layers (the reference implementation does not).
        dropout: Dropout rate inside residual blocks (0 in the paper).
        long_skip: Concatenate the stem's full-resolution features to the
            last upsampling's output before the head, like a U-Net's top
            level (not in the paper): pixel-scale detail then need not pass
            through the 4× smaller bottleneck.
        intensity_path: Add a per-pixel function of the input intensity
            (1×1 convolutions, no normalisation) to the head's output before
            the ``tanh`` (not in the paper). It can learn an intensity
            transfer, like a lookup table, that keeps every edge of the
            input; the convolutional path adds what depends on context. Its
            last layer starts at zero, so the generator starts as without it.
        name: Model name.

    Returns:
        ``keras.Model`` mapping (batch, H, W, channels) to the same shape.
    """
    if n_blocks < 0:
        raise ValueError(f"n_blocks: expected >= 0, got {n_blocks}")
    if image_size is not None and image_size % 4:
        raise ValueError(f"image_size: expected a multiple of 4, got {image_size}")
    kw = dict(norm=True, affine=norm_affine)

    inputs = _input(image_size, channels, "image")
    x, stem = _resnet_down(inputs, filters, **kw)
    # (batch, H/4, W/4, 4f)
    for i in range(n_blocks):
        x = _residual_block(x, filters * 4, dropout=dropout, name=f"res{i + 1}", **kw)
    x = _resnet_up(x, filters, **kw)
    # (batch, H, W, f)
    if long_skip:
        x = layers.Concatenate(name="long_skip")([x, stem])
    x = _resnet_head(x, channels)
    if intensity_path:
        p = inputs
        for i in (1, 2):
            p = layers.Conv2D(16, 1, kernel_initializer="he_normal", name=f"intensity{i}")(p)
            p = layers.LeakyReLU(0.2, name=f"intensity{i}_act")(p)
        p = NarrowConv2D(channels, 1, kernel_initializer="zeros", name="intensity_out")(p)
        x = layers.Add(name="intensity_add")([x, p])
    outputs = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(inputs, outputs, name=name)


def unit_networks(
    *,
    image_size: int | None = 256,
    channels: int = 1,
    filters: int = 64,
    n_blocks: int = 8,
) -> dict[str, keras.Model]:
    """UNIT's encoders and generators (Liu et al. 2017), with a shared latent space.

    Built from the ResNet generator's parts, split at its bottleneck:
    ``enc_t1``/``enc_t2`` (stem, two downsamplings, residual blocks) and then
    ``enc_shared`` (one residual block, shared by both domains) give the
    latent mean (batch, H/4, W/4, 4f); ``dec_shared`` (one residual block,
    shared) and then ``dec_t1``/``dec_t2`` (residual blocks, two upsamplings,
    7×7 head, ``tanh``) map a latent code to an image. Half of ``n_blocks``
    (at least one) is on each side, so 8 gives UNIT's four residual blocks in
    each encoder and generator. The shared parts are single models, used by
    both domains: one set of variables.

    Returns:
        ``{"enc_t1", "enc_t2", "enc_shared", "dec_shared", "dec_t1", "dec_t2"}``.
    """
    if n_blocks < 0:
        raise ValueError(f"n_blocks: expected >= 0, got {n_blocks}")
    if image_size is not None and image_size % 4:
        raise ValueError(f"image_size: expected a multiple of 4, got {image_size}")
    kw = dict(norm=True, affine=False)
    half = max(1, n_blocks // 2)
    latent_size = None if image_size is None else image_size // 4
    width = filters * 4

    def encoder(domain):
        inputs = _input(image_size, channels, "image")
        x, _ = _resnet_down(inputs, filters, **kw)
        for i in range(half - 1):
            x = _residual_block(x, width, dropout=0.0, name=f"res{i + 1}", **kw)
        return keras.Model(inputs, x, name=f"enc_{domain}")

    def shared(name):
        inputs = keras.Input(shape=(latent_size, latent_size, width), name="features")
        return keras.Model(inputs, _residual_block(inputs, width, dropout=0.0, name="res",
                                                   **kw), name=name)

    def decoder(domain):
        inputs = keras.Input(shape=(latent_size, latent_size, width), name="features")
        x = inputs
        for i in range(half - 1):
            x = _residual_block(x, width, dropout=0.0, name=f"res{i + 1}", **kw)
        x = _resnet_head(_resnet_up(x, filters, **kw), channels)
        outputs = layers.Activation("tanh", dtype="float32", name="tanh")(x)
        return keras.Model(inputs, outputs, name=f"dec_{domain}")

    return {"enc_t1": encoder("t1"), "enc_t2": encoder("t2"),
            "enc_shared": shared("enc_shared"), "dec_shared": shared("dec_shared"),
            "dec_t1": decoder("t1"), "dec_t2": decoder("t2")}


def chain(parts, *, image_size: int | None, channels: int, name: str) -> keras.Model:
    """One model that runs ``parts`` (models) in order on an image; it holds the parts
    themselves, so their variables are shared with every other chain of them."""
    inputs = _input(image_size, channels, "image")
    x = inputs
    for part in parts:
        x = part(x)
    return keras.Model(inputs, x, name=name)


def unet_generator(
    *,
    image_size: int | None = 256,
    channels: int = 1,
    filters: int = 64,
    n_downsamplings: int = 8,
    norm_affine: bool = True,
    dropout: float = 0.5,
    name: str = "unet_generator",
) -> keras.Model:
    """pix2pix U-Net: ``n_downsamplings`` 4×4 stride-2 convs and mirrored up path.

    Encoder filters are ``filters * min(2**i, 8)``; the first encoder layer
    and the 1×1 bottleneck have no normalisation (instance normalisation of a
    single pixel would zero it). The three innermost decoder layers use
    dropout, as in pix2pix.

    Args:
        image_size: Height and width, a multiple of ``2**n_downsamplings``,
            or ``None``.
        channels: Input and output channels.
        filters: Filters of the first layer.
        n_downsamplings: Depth; 8 takes 256 px to 1×1.
        norm_affine: Learn scale and offset in instance normalisation.
        dropout: Dropout rate of the innermost decoder layers (0 to disable).
        name: Model name.

    Returns:
        ``keras.Model`` mapping (batch, H, W, channels) to the same shape.
    """
    if n_downsamplings < 1:
        raise ValueError(f"n_downsamplings: expected >= 1, got {n_downsamplings}")
    if image_size is not None and image_size % (2**n_downsamplings):
        raise ValueError(
            f"image_size: expected a multiple of 2**n_downsamplings = "
            f"{2**n_downsamplings}, got {image_size}"
        )
    inputs = _input(image_size, channels, "image")
    x = inputs
    skips = []
    for i in range(n_downsamplings):
        innermost = i == n_downsamplings - 1
        x = _conv_norm_act(x, filters * min(2**i, 8), 4, 2, norm=not (i == 0 or innermost),
                           affine=norm_affine, act="lrelu", name=f"down{i + 1}")
        skips.append(x)
    # Bottleneck: (batch, H / 2**n, W / 2**n, 8f)
    for j, i in enumerate(reversed(range(n_downsamplings - 1))):
        x = layers.Conv2DTranspose(filters * min(2**i, 8), 4, strides=2, padding="same",
                                   kernel_initializer=_init(), name=f"up{j + 1}_convT")(x)
        x = _instance_norm(f"up{j + 1}_norm", norm_affine)(x)
        if dropout and j < 3:
            x = layers.Dropout(dropout, name=f"up{j + 1}_dropout")(x)
        x = layers.ReLU(name=f"up{j + 1}_relu")(x)
        x = layers.Concatenate(name=f"up{j + 1}_skip")([x, skips[i]])
    x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                               kernel_initializer=_init(), name="head_convT")(x)
    outputs = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(inputs, outputs, name=name)


def patchgan_discriminator(
    *,
    image_size: int | None = 256,
    channels: int = 1,
    filters: int = 64,
    n_layers: int = 3,
    norm_affine: bool = False,
    spectral_norm: bool = False,
    name: str = "patchgan_discriminator",
) -> keras.Model:
    """PatchGAN discriminator (70×70 receptive field for ``n_layers=3``).

    4×4 convolutions with one pixel of zero padding: ``n_layers`` stride-2
    layers, one stride-1 layer, and a stride-1 layer to one channel of
    unbounded scores (use with LSGAN or BCE-from-logits losses).

    Args:
        image_size: Height and width, or ``None``.
        channels: Input channels.
        filters: Filters of the first layer.
        n_layers: Stride-2 layers (3 gives the 70×70 PatchGAN; 256 px input
            gives a 30×30 score map).
        norm_affine: Learn scale and offset in instance normalisation.
        spectral_norm: Spectral normalisation of every convolution (Miyato et al.
            2018; with instance normalisation kept, as SPADE's discriminators do):
            Keras' ``SpectralNormalization``, one power iteration per training call.
        name: Model name.

    Returns:
        ``keras.Model`` mapping (batch, H, W, channels) to (batch, h, w, 1).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers: expected >= 1, got {n_layers}")

    def conv(x, f, stride, layer_name, layer_norm, act="lrelu", dtype=None):
        x = layers.ZeroPadding2D(1, name=f"{layer_name}_pad")(x)
        if act is None:
            return _spectral(NarrowConv2D(f, 4, strides=stride, padding="valid", dtype=dtype,
                                          kernel_initializer=_init(),
                                          name=f"{layer_name}_conv"), spectral_norm, dtype)(x)
        return _conv_norm_act(x, f, 4, stride, norm=layer_norm, affine=norm_affine,
                              act=act, name=layer_name, padding="valid",
                              spectral=spectral_norm)

    inputs = _input(image_size, channels, "image")
    x = conv(inputs, filters, 2, "layer1", False)
    for i in range(1, n_layers):
        x = conv(x, filters * min(2**i, 8), 2, f"layer{i + 1}", True)
    x = conv(x, filters * min(2**n_layers, 8), 1, f"layer{n_layers + 1}", True)
    outputs = conv(x, 1, 1, "scores", False, act=None, dtype="float32")
    return keras.Model(inputs, outputs, name=name)


def receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of ``patchgan_discriminator(n_layers=...)``."""
    field = 1
    # Walk back from the score map: two stride-1 4×4 convs, then n stride-2.
    for stride in [1, 1] + [2] * n_layers:
        field = (field - 1) * stride + 4
    return field
