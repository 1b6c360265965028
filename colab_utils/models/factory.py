"""Models from settings: each method's networks and its compiled trainable model.

:func:`build_model` is the one place a :class:`~colab_utils.config.TrainConfig`
becomes networks: ``cyclegan`` and ``cyclegan_s`` get ResNet generators and
PatchGANs (:class:`~colab_utils.models.cyclegan.CycleGAN`); ``unit`` and ``unit_s`` the
ResNet generator's halves as encoders and generators with shared layers, and
the same PatchGANs (:class:`~colab_utils.models.unit.UNIT`); ``supervised`` the ResNet
generators alone and ``pix2pix`` U-Nets with conditional PatchGANs
(:class:`~colab_utils.models.paired.PairedTranslator`).
"""

from __future__ import annotations

import keras

from ..config import UNIT_MODELS, TrainConfig
from ..runtime.precision import apply_policy, make_optimizer
from .cyclegan import CycleGAN
from .networks import patchgan_discriminator, resnet_generator, unet_generator, unit_networks
from .paired import PairedTranslator
from .schedules import LinearDecay
from .translation import TranslationModel
from .unit import UNIT


def unet_depth(image_size: int) -> int:
    """Down-samplings of the pix2pix U-Net: 8 at 256 px (down to 1×1), fewer for small
    images (``image_size`` must stay divisible by ``2**depth``)."""
    depth = 0
    while depth < 8 and image_size % (2 ** (depth + 1)) == 0:
        depth += 1
    return depth


def define_generator(config: TrainConfig, name: str) -> keras.Model:
    """A generator of ``config.model``: the U-Net for pix2pix, the ResNet otherwise."""
    size, channels = config.image_size, config.network_channels
    if config.model == "pix2pix":
        return unet_generator(image_size=size, channels=channels, filters=config.gen_filters,
                              n_downsamplings=unet_depth(size), name=name)
    return resnet_generator(image_size=size, channels=channels, filters=config.gen_filters,
                            n_blocks=config.n_res_blocks, long_skip=config.long_skip,
                            intensity_path=config.intensity_path, name=name)


def define_discriminator(config: TrainConfig, name: str) -> keras.Model:
    """A PatchGAN of ``config.model``; pix2pix's is conditional (input and output)."""
    channels = config.network_channels * (2 if config.model == "pix2pix" else 1)
    return patchgan_discriminator(image_size=config.image_size, channels=channels,
                                  filters=config.disc_filters, n_layers=config.disc_layers,
                                  spectral_norm=config.disc_spectral_norm, name=name)


def _with_policy(policy: str, build):
    """Call ``build()`` with Keras' global dtype policy set to ``policy``, then restore it."""
    previous = keras.mixed_precision.dtype_policy().name
    apply_policy(policy)
    try:
        return build()
    finally:
        apply_policy(previous)


def build_model(config: TrainConfig, steps_per_epoch: int,
                policy: str = "float32") -> TranslationModel:
    """The compiled trainable model of ``config.model`` (every method but ``"simple"``).

    The dtype policy applies to the networks built here only; Keras' global
    policy is restored afterwards. Both optimizers follow CycleGAN's schedule
    (:class:`~colab_utils.models.schedules.LinearDecay`) in steps of ``steps_per_epoch``, from
    the model's learning rate (:attr:`~colab_utils.config.TrainConfig.model_lr`).
    """
    if config.model == "simple":
        raise ValueError("model 'simple' has no networks to build; the Simple baseline is "
                         "fitted by train() directly")
    adversarial = config.model != "supervised"

    def build():
        if config.model in UNIT_MODELS:
            return UNIT(
                unit_networks(image_size=config.image_size, channels=config.network_channels,
                              filters=config.gen_filters, n_blocks=config.n_res_blocks),
                define_discriminator(config, "disc_t1"), define_discriminator(config, "disc_t2"),
                weights=config.unit_weights,
                lambda_supervised=(config.lambda_supervised if config.model == "unit_s"
                                   else 0.0),
                gan_mode=config.gan_mode, image_size=config.image_size,
                channels=config.network_channels, seed=config.seed, noise=config.unit_noise,
                name="unit")
        generators = (define_generator(config, "gen_t1_to_t2"),
                      define_generator(config, "gen_t2_to_t1"))
        discriminators = ((define_discriminator(config, "disc_t1"),
                           define_discriminator(config, "disc_t2")) if adversarial
                          else (None, None))
        if config.model in ("cyclegan", "cyclegan_s"):
            return CycleGAN(
                *generators, *discriminators, lambda_cycle=config.lambda_cycle,
                lambda_identity=config.lambda_identity, lambda_structure=config.lambda_structure,
                lambda_supervised=(config.lambda_supervised if config.model == "cyclegan_s"
                                   else 0.0),
                gan_mode=config.gan_mode, pool_size=config.pool_size, seed=config.seed,
                name="cyclegan")
        return PairedTranslator(*generators, *discriminators, lambda_l1=config.lambda_l1,
                                gan_mode=config.gan_mode, name=config.model)

    model = _with_policy(policy, build)

    def optimizer():
        schedule = LinearDecay(config.model_lr, config.epochs * steps_per_epoch,
                               config.epochs_decay * steps_per_epoch)
        return make_optimizer(policy, schedule, config.beta_1, config.beta_2)

    model.compile(optimizer(), optimizer() if adversarial else None,
                  jit_compile={"auto": "auto", "true": True, "false": False}[config.jit_compile])
    return model
