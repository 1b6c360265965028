"""Loss functions for CycleGAN, CycleGAN_s, pix2pix and supervised training.

All are pure functions of tensors that return a float32 scalar: the mean over
every element of the batch. Discriminator outputs are unbounded scores
(logits), as produced by :func:`colab_utils.models.patchgan_discriminator`.
"""

from __future__ import annotations

from typing import Callable

from keras import ops

from .validation import check_choice

LOSS_GAN_MODES = ("lsgan", "bce")


def _f32(x):
    return ops.cast(x, "float32")


def lsgan_generator_loss(disc_fake):
    """Least-squares GAN loss for the generator: mean((D(fake) - 1)²)."""
    return ops.mean(ops.square(_f32(disc_fake) - 1.0))


def lsgan_discriminator_loss(disc_real, disc_fake):
    """Least-squares GAN loss for the discriminator, halved as in CycleGAN.

    0.5 · (mean((D(real) - 1)²) + mean(D(fake)²)).
    """
    real = ops.mean(ops.square(_f32(disc_real) - 1.0))
    fake = ops.mean(ops.square(_f32(disc_fake)))
    return 0.5 * (real + fake)


def _bce_logits(logits, target: float):
    logits = _f32(logits)
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits,
                                            from_logits=True))


def bce_generator_loss(disc_fake):
    """Non-saturating GAN loss for the generator: BCE(D(fake), 1) on logits."""
    return _bce_logits(disc_fake, 1.0)


def bce_discriminator_loss(disc_real, disc_fake):
    """BCE loss for the discriminator on logits, halved: 0.5 · (BCE(real, 1) + BCE(fake, 0))."""
    return 0.5 * (_bce_logits(disc_real, 1.0) + _bce_logits(disc_fake, 0.0))


def adversarial_losses(gan_mode: str) -> tuple[Callable, Callable]:
    """Return ``(generator_loss, discriminator_loss)`` for ``"lsgan"`` or ``"bce"``."""
    check_choice("gan_mode", gan_mode, LOSS_GAN_MODES)
    if gan_mode == "lsgan":
        return lsgan_generator_loss, lsgan_discriminator_loss
    return bce_generator_loss, bce_discriminator_loss


def l1(a, b):
    """Mean absolute difference of two tensors of the same shape."""
    return ops.mean(ops.abs(_f32(a) - _f32(b)))


def cycle_loss(real, cycled):
    """Cycle-consistency L1: mean |x - F(G(x))|."""
    return l1(real, cycled)


def identity_loss(real, same):
    """Identity L1: mean |y - G(y)| for G mapping into y's domain."""
    return l1(real, same)


def supervised_loss(target, translated):
    """Supervised L1 between a translation and its paired ground truth."""
    return l1(target, translated)
