"""UNIT (Liu, Breuel & Kautz 2017): unpaired translation through a shared latent space.

Each domain has a VAE: an encoder to a latent code and a generator back to
images. The encoders' last block and the generators' first block are shared
(:func:`colab_utils.models.unit_networks`), so a T1 and the T2 of the same
anatomy are pushed to one code, and T1 → T2 is "encode as T1, decode as
T2". The same class trains UNIT (unpaired batches) and UNIT_s (paired
batches plus the supervised L1 that CycleGAN_s uses).
"""

from __future__ import annotations

import tensorflow as tf

from ..config import UNIT_PAPER_WEIGHTS
from . import losses
from .networks import chain
from .translation import TranslationModel

LOSS_KEYS = (
    "gen_total", "adv_t1_to_t2", "adv_t2_to_t1", "kl_t1", "kl_t2", "recon_t1", "recon_t2",
    "kl_cycle_t1", "kl_cycle_t2", "cycle_t1", "cycle_t2",
    "supervised_t1_to_t2", "supervised_t2_to_t1", "disc_t1", "disc_t2",
)
PARTS = ("enc_t1", "enc_t2", "enc_shared", "dec_shared", "dec_t1", "dec_t2")


class UNIT(TranslationModel):
    """UNIT for T1 ↔ T2: two VAEs with shared layers, two discriminators.

    Per direction (T1 shown; T2 is symmetric), with ``E`` the encoders (the mean
    of ``q(z|x) = N(E(x), I)``), ``G`` the generators and ``z = E(x) + noise``
    in training (the mean alone when translating):

    * VAE: ``λ1 · KL(E1(x1)) + λ2 · |x1 - G1(z1)|``;
    * GAN: ``λ0 · gan(D2(G2(z1)))`` (BCE, as the paper's objective);
    * cycle: ``λ3 · KL(E2(G2(z1))) + λ4 · |x1 - G1(z')|`` with
      ``z' = E2(G2(z1)) + noise``;
    * UNIT_s: ``λ_supervised · |x2 - G2(z1)|`` on paired batches: on the translation
      the GAN term judges too (from the sampled code, like every translation in
      training; translating uses the mean).

    The paper counts ``KL(E1(x1))`` in both the VAE and the cycle term; like its
    implementation, it is counted once here (under λ1). Reconstruction is the L1
    of the paper's Laplacian likelihood. The discriminators see real images and
    translations (no image pool, as in the paper).

    Args:
        networks: :func:`colab_utils.models.unit_networks` (the six parts).
        disc_t1, disc_t2: Discriminators for real vs. synthetic T1 and T2.
        weights: λ0..λ4 (:data:`~colab_utils.config.UNIT_PAPER_WEIGHTS`).
        lambda_supervised: Weight of the paired L1 (0 for plain UNIT).
        gan_mode: ``"bce"`` (the paper) or ``"lsgan"``.
        image_size, channels: The translators' input shape.
        seed: Seed of the latent noise (a function of the seed and the step, so
            a resumed run draws what an uninterrupted one would).
        noise: The latent noise's standard deviation in training (1, the paper's).
    """

    def __init__(self, networks: dict, disc_t1, disc_t2, *, weights=UNIT_PAPER_WEIGHTS,
                 lambda_supervised=0.0, gan_mode="bce", image_size=None, channels=1, seed=0,
                 noise=1.0, **kwargs):
        missing = sorted(set(PARTS) - set(networks))
        if missing:
            raise ValueError(f"networks: missing UNIT parts {missing}")
        weights = tuple(float(w) for w in weights)
        if len(weights) != 5 or min(weights) < 0:
            raise ValueError(f"weights: expected five non-negative λ0..λ4, got {weights}")
        if lambda_supervised < 0:
            raise ValueError(f"lambda_supervised: expected >= 0, got {lambda_supervised}")
        n = networks

        def translator(source, target):
            return chain([n[f"enc_{source}"], n["enc_shared"], n["dec_shared"],
                          n[f"dec_{target}"]], image_size=image_size, channels=channels,
                         name=f"gen_{source}_to_{target}")

        super().__init__(translator("t1", "t2"), translator("t2", "t1"), disc_t1, disc_t2,
                         loss_keys=LOSS_KEYS, **kwargs)
        for name in PARTS:
            setattr(self, name, networks[name])
        self.weights_gan, self.weights_kl, self.weights_recon, self.weights_kl_cycle, \
            self.weights_cycle = weights
        self.lambda_supervised = float(lambda_supervised)
        self.gen_adv_loss, self.disc_adv_loss = losses.adversarial_losses(gan_mode)
        self.seed = int(seed)
        self.noise = float(noise)

    @property
    def generator_variables(self):
        # Each part once: the two translators share enc_shared and dec_shared.
        return [v for name in PARTS for v in getattr(self, name).trainable_variables]

    def _encode(self, images, domain, training):
        return self.enc_shared(getattr(self, f"enc_{domain}")(images, training=training),
                               training=training)

    def _decode(self, code, domain, training):
        return getattr(self, f"dec_{domain}")(self.dec_shared(code, training=training),
                                              training=training)

    def _sample(self, mean, draw: int, training):
        """``mean + N(0, I)`` in training (a stateless draw of (seed, step, replica)), the
        mean otherwise."""
        if not training:
            return mean
        replica = tf.distribute.get_replica_context()
        replica_id = (tf.cast(replica.replica_id_in_sync_group, tf.int32)
                      if replica is not None else tf.constant(0))
        # int64: a large run seed times 8 must not wrap around (int32 did above 2**28).
        seed = tf.stack([tf.constant(self.seed * 8 + draw, tf.int64)
                         + 1024 * tf.cast(replica_id, tf.int64),
                         tf.cast(self.global_step.value, tf.int64)])
        noise = tf.random.stateless_normal(tf.shape(mean), seed, dtype=tf.float32)
        return mean + tf.cast(self.noise * noise, mean.dtype)

    def _generator_losses(self, real_t1, real_t2, training):
        """Both VAEs, both translations and both cycles, and their loss terms."""
        mean_t1 = self._encode(real_t1, "t1", training)
        mean_t2 = self._encode(real_t2, "t2", training)
        z_t1 = self._sample(mean_t1, 0, training)
        z_t2 = self._sample(mean_t2, 1, training)
        fake_t2 = self._decode(z_t1, "t2", training)
        fake_t1 = self._decode(z_t2, "t1", training)
        mean_cycle_t1 = self._encode(fake_t2, "t2", training)
        mean_cycle_t2 = self._encode(fake_t1, "t1", training)
        out = {
            "fake_t1": fake_t1,
            "fake_t2": fake_t2,
            "adv_t1_to_t2": self.gen_adv_loss(self.disc_t2(fake_t2, training=training)),
            "adv_t2_to_t1": self.gen_adv_loss(self.disc_t1(fake_t1, training=training)),
            "kl_t1": losses.kl_loss(mean_t1),
            "kl_t2": losses.kl_loss(mean_t2),
            "recon_t1": losses.l1(real_t1, self._decode(z_t1, "t1", training)),
            "recon_t2": losses.l1(real_t2, self._decode(z_t2, "t2", training)),
            "kl_cycle_t1": losses.kl_loss(mean_cycle_t1),
            "kl_cycle_t2": losses.kl_loss(mean_cycle_t2),
            "cycle_t1": losses.cycle_loss(
                real_t1, self._decode(self._sample(mean_cycle_t1, 2, training), "t1", training)),
            "cycle_t2": losses.cycle_loss(
                real_t2, self._decode(self._sample(mean_cycle_t2, 3, training), "t2", training)),
        }
        if self.lambda_supervised > 0 or not training:
            out["supervised_t1_to_t2"] = losses.supervised_loss(real_t2, fake_t2)
            out["supervised_t2_to_t1"] = losses.supervised_loss(real_t1, fake_t1)
        else:
            out["supervised_t1_to_t2"] = out["supervised_t2_to_t1"] = tf.constant(0.0)
        out["gen_total"] = self.total(out)
        return out

    def total(self, terms: dict):
        """The generators' objective from its named terms (floats or tensors)."""
        return (self.weights_gan * (terms["adv_t1_to_t2"] + terms["adv_t2_to_t1"])
                + self.weights_kl * (terms["kl_t1"] + terms["kl_t2"])
                + self.weights_recon * (terms["recon_t1"] + terms["recon_t2"])
                + self.weights_kl_cycle * (terms["kl_cycle_t1"] + terms["kl_cycle_t2"])
                + self.weights_cycle * (terms["cycle_t1"] + terms["cycle_t2"])
                + self.lambda_supervised * (terms["supervised_t1_to_t2"]
                                            + terms["supervised_t2_to_t1"]))
