"""Loss functions for CycleGAN, CycleGAN_s, UNIT, UNIT_s, pix2pix and supervised training.

All are pure functions of tensors that return a float32 scalar: the mean over
every element of the batch. Discriminator outputs are unbounded scores
(logits), as produced by :func:`colab_utils.models.patchgan_discriminator`.
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

from ..validation import check_choice

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


def kl_loss(mean):
    """UNIT's KL term for a latent code ``z ~ N(mean, I)`` against the prior ``N(0, I)``.

    The divergence is ``0.5 · Σ mean²``; as in UNIT's implementation it is taken as
    ``mean(mean²)`` over every element, so its weight does not depend on the latent
    size (the paper's λ1 = λ3 = 0.1 are weights of this mean).
    """
    return ops.mean(ops.square(_f32(mean)))


# The four neighbours (row, column offsets) of the 2-D MIND descriptor.
_MIND_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def _shifted(padded, dy: int, dx: int, pad: int):
    """The image inside ``padded`` (padded by ``pad`` on each side) moved by (dy, dx)."""
    rows = slice(pad + dy, (dy - pad) or None)
    cols = slice(pad + dx, (dx - pad) or None)
    return padded[:, rows, cols, :]


def mind_descriptor(images, distance: int = 1, patch: int = 3):
    """Modality-independent neighbourhood descriptor (MIND; Heinrich et al. 2012), 2-D.

    For each pixel and each of its four neighbours at ``distance`` pixels, the
    mean squared difference between the ``patch``×``patch`` patches around the
    two (``D``), turned into ``exp(-D / V)`` with ``V`` the mean of ``D`` over the
    four neighbours, and scaled so that the largest of the four is 1. It
    describes local structure (edges, their orientation, flat regions). It
    does not change under an affine remapping of the intensities, an inverted
    contrast included, and little under a smooth monotone one, which makes it
    a loss that compares a T1 with a T2 (Yang et al. 2018).

    Args:
        images: (batch, H, W, C) tensor.
        distance: Pixel distance of the neighbours.
        patch: Side of the square patches (odd).

    Returns:
        (batch, H, W, C, 4) float32 tensor with values in (0, 1], the last axis
        over the neighbours.
    """
    x = _f32(images)
    padded = ops.pad(x, [[0, 0], [distance, distance], [distance, distance], [0, 0]],
                     mode="reflect")
    # The squared differences to the four neighbours side by side on the channel
    # axis, (batch, H, W, 4·C), so that one pooling averages all the patches.
    squares = ops.concatenate(
        [ops.square(x - _shifted(padded, dy * distance, dx * distance, distance))
         for dy, dx in _MIND_OFFSETS], axis=-1)
    pooled = ops.average_pool(squares, patch, strides=1, padding="same")
    dists = ops.stack(ops.split(pooled, len(_MIND_OFFSETS), axis=-1), axis=-1)
    variance = ops.mean(dists, axis=-1, keepdims=True)
    # Bound V around its image mean, so that flat regions (V -> 0) and strong
    # edges do not give extreme ratios (as in Heinrich et al.).
    mean = ops.mean(variance, axis=(1, 2, 3, 4), keepdims=True) + 1e-6
    desc = ops.exp(-dists / ops.clip(variance, 1e-3 * mean, 1e3 * mean))
    return desc / ops.max(desc, axis=-1, keepdims=True)


def structure_loss(source, translated):
    """Structure-consistency loss: mean |MIND(source) - MIND(translated)|.

    Unpaired: it compares a translation with its own input, not with a target,
    and asks the translation to keep the input's edges where they are, in
    whichever contrast (Yang et al. 2018, "structure-constrained CycleGAN").
    """
    return l1(mind_descriptor(source), mind_descriptor(translated))
