"""Supervised translation on paired slices: the supervised generator and pix2pix.

Without discriminators :class:`PairedTranslator` is the *supervised generator*
(the ResNet generator trained with L1 alone); with them it is *pix2pix*
(Isola et al. 2017: U-Net generator, conditional PatchGAN that sees
``(input, output)`` pairs, GAN loss + λ_L1·L1 with λ_L1 = 100).
"""

from __future__ import annotations

import tensorflow as tf

from . import losses
from .translation import TranslationModel

PAIRED_LOSS_KEYS = ("gen_total", "supervised_t1_to_t2", "supervised_t2_to_t1",
                    "adv_t1_to_t2", "adv_t2_to_t1", "disc_t1", "disc_t2")


class PairedTranslator(TranslationModel):
    """Supervised T1 → T2 and T2 → T1 generators trained on aligned pairs.

    Batches are ``(real_t1, real_t2)`` of the same slices. Without
    discriminators the loss is the L1 to the target (the supervised
    generator). With them (pix2pix) each discriminator judges
    ``concat(input, output)``: ``disc_t2`` sees (T1, real or synthetic T2),
    ``disc_t1`` sees (T2, real or synthetic T1), and the generator loss is
    adversarial + ``lambda_l1`` · L1.

    Args:
        gen_t1_to_t2, gen_t2_to_t1: Generators.
        disc_t1, disc_t2: Conditional discriminators with ``2 * channels``
            inputs, or ``None`` for L1-only training.
        lambda_l1: Weight of the L1 term when adversarial (100 in pix2pix);
            1 without discriminators.
        gan_mode: ``"bce"`` (pix2pix) or ``"lsgan"``.
    """

    def __init__(self, gen_t1_to_t2, gen_t2_to_t1, disc_t1=None, disc_t2=None, *,
                 lambda_l1: float = 100.0, gan_mode: str = "bce", **kwargs):
        if lambda_l1 < 0:
            raise ValueError(f"lambda_l1: expected >= 0, got {lambda_l1}")
        keys = PAIRED_LOSS_KEYS if disc_t1 is not None else PAIRED_LOSS_KEYS[:3]
        super().__init__(gen_t1_to_t2, gen_t2_to_t1, disc_t1, disc_t2, loss_keys=keys,
                         **kwargs)
        self.lambda_l1 = float(lambda_l1) if self.adversarial else 1.0
        self.gen_adv_loss, self.disc_adv_loss = losses.adversarial_losses(gan_mode)

    def _generator_losses(self, real_t1, real_t2, training):
        fake_t2 = self.gen_t1_to_t2(real_t1, training=training)
        fake_t1 = self.gen_t2_to_t1(real_t2, training=training)
        out = {"fake_t1": fake_t1, "fake_t2": fake_t2,
               "supervised_t1_to_t2": losses.supervised_loss(real_t2, fake_t2),
               "supervised_t2_to_t1": losses.supervised_loss(real_t1, fake_t1)}
        out["gen_total"] = self.lambda_l1 * (out["supervised_t1_to_t2"]
                                             + out["supervised_t2_to_t1"])
        if self.adversarial:
            out["adv_t1_to_t2"] = self.gen_adv_loss(
                self.disc_t2(self._pair(real_t1, fake_t2), training=training))
            out["adv_t2_to_t1"] = self.gen_adv_loss(
                self.disc_t1(self._pair(real_t2, fake_t1), training=training))
            out["gen_total"] += out["adv_t1_to_t2"] + out["adv_t2_to_t1"]
        return out

    @staticmethod
    def _pair(condition, image):
        # (batch, H, W, 2C): what the conditional discriminator judges.
        return tf.concat([tf.cast(condition, tf.float32), tf.cast(image, tf.float32)], axis=-1)

    def _judge(self, domain, source, image, training):
        return getattr(self, f"disc_{domain}")(self._pair(source, image), training=training)
