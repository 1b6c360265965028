"""The CycleGAN ``keras.Model``: two generators, two discriminators, image pools.

The same class trains CycleGAN (unpaired batches) and CycleGAN_s (paired
batches plus a supervised L1 term, ``lambda_supervised > 0``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from . import losses
from .translation import TranslationModel

LOSS_KEYS = (
    "gen_total", "adv_t1_to_t2", "adv_t2_to_t1", "cycle_t1", "cycle_t2",
    "identity_t1", "identity_t2", "structure_t1_to_t2", "structure_t2_to_t1",
    "supervised_t1_to_t2", "supervised_t2_to_t1", "disc_t1", "disc_t2",
)


class ImagePool(keras.layers.Layer):
    """History of generated images shown to a discriminator (Shrivastava et al.).

    Until the pool holds ``pool_size`` images every new image is stored and
    returned. After that, each new image is, with probability 0.5, swapped for
    a random stored one (which is returned), otherwise returned as is. The pool
    is a pair of non-trainable variables, so it is saved and restored with the
    model. Random draws are stateless functions of ``(seed, step)``, so a
    resumed run draws exactly what an uninterrupted one would.

    Under a ``tf.distribute`` strategy with several replicas, every replica
    gathers the whole global batch, runs the same pool update on it (so the
    pools stay identical) and returns its own share: the result is what one
    device would compute for the same global batch.
    """

    def __init__(self, pool_size: int, image_shape, seed: int = 0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        if pool_size < 0:
            raise ValueError(f"pool_size: expected >= 0, got {pool_size}")
        self.pool_size = int(pool_size)
        self.seed = int(seed)
        self.images = self.add_weight(
            shape=(max(self.pool_size, 1), *image_shape), initializer="zeros",
            trainable=False, dtype="float32", aggregation="only_first_replica", name="images")
        self.count = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="int32",
            aggregation="only_first_replica", name="count")
        self.built = True

    def call(self, images, step):
        if self.pool_size == 0:
            return images
        images = tf.cast(images, tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            local = tf.shape(images)[0]
            start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
            pooled = self._update(context.all_gather(images, axis=0), step)
            return pooled[start:start + local]
        return self._update(images, step)

    def _update(self, images, step):
        n = tf.shape(images)[0]
        step = tf.cast(step, tf.int32)
        swap = tf.random.stateless_uniform([n], seed=tf.stack([self.seed, step])) > 0.5
        slot = tf.random.stateless_uniform(
            [n], seed=tf.stack([self.seed + 1, step]), maxval=self.pool_size, dtype=tf.int32)
        capacity = self.pool_size

        def body(i, pool, count, outputs):
            image = images[i]
            fill = count < capacity
            use_stored = tf.logical_and(tf.logical_not(fill), swap[i])
            index = tf.where(fill, tf.minimum(count, capacity - 1), slot[i])
            out = tf.where(use_stored, pool[index], image)
            replace = tf.logical_or(fill, use_stored)
            pool = tf.cond(replace,
                           lambda: tf.tensor_scatter_nd_update(pool, [[index]], image[None]),
                           lambda: pool)
            count = count + tf.cast(fill, tf.int32)
            return i + 1, pool, count, outputs.write(i, out)

        outputs = tf.TensorArray(tf.float32, size=n, element_shape=images.shape[1:])
        _, pool, count, outputs = tf.while_loop(
            lambda i, *_: i < n, body,
            (tf.constant(0), self.images.value, self.count.value, outputs))
        self.images.assign(pool)
        self.count.assign(count)
        return outputs.stack()

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "seed": self.seed}


class CycleGAN(TranslationModel):
    """CycleGAN for T1 ↔ T2 with LSGAN/BCE, cycle, identity, structure and supervised terms.

    Batches are ``(real_t1, real_t2)``, each (batch, H, W, C) float32 in
    [-1, 1]. Use unpaired batches for CycleGAN and paired ones (the same
    subjects and slices, aligned) when ``lambda_supervised > 0``.

    Args:
        gen_t1_to_t2, gen_t2_to_t1: Generators.
        disc_t1, disc_t2: Discriminators for real vs. synthetic T1 and T2.
        lambda_cycle: Weight of the cycle-consistency L1 (10 in the paper).
        lambda_identity: Weight of the identity L1 (0.5·λ_cycle = 5 in the paper).
        lambda_structure: Weight of the structure-consistency term between each
            input and its translation (:func:`losses.structure_loss`, MIND;
            0 in the CycleGAN paper). Unpaired: it needs no target.
        lambda_supervised: Weight of the paired L1 (0 for plain CycleGAN).
        gan_mode: ``"lsgan"`` (the paper) or ``"bce"``.
        pool_size: Images kept per domain in the image pool (50; 0 disables).
        image_shape: (H, W, C) of the images; taken from the generator's input
            when that is fully defined.
        seed: Seed of the image pools' random draws.
    """

    def __init__(self, gen_t1_to_t2, gen_t2_to_t1, disc_t1, disc_t2, *,
                 lambda_cycle=10.0, lambda_identity=5.0, lambda_structure=0.0,
                 lambda_supervised=0.0, gan_mode="lsgan", pool_size=50, image_shape=None,
                 seed=0, **kwargs):
        super().__init__(gen_t1_to_t2, gen_t2_to_t1, disc_t1, disc_t2, loss_keys=LOSS_KEYS,
                         **kwargs)
        for name, value in (("lambda_cycle", lambda_cycle), ("lambda_identity", lambda_identity),
                            ("lambda_structure", lambda_structure),
                            ("lambda_supervised", lambda_supervised)):
            if value < 0:
                raise ValueError(f"{name}: expected >= 0, got {value}")
        self.lambda_cycle = float(lambda_cycle)
        self.lambda_identity = float(lambda_identity)
        self.lambda_structure = float(lambda_structure)
        self.lambda_supervised = float(lambda_supervised)
        self.gan_mode = gan_mode
        self.gen_adv_loss, self.disc_adv_loss = losses.adversarial_losses(gan_mode)
        if image_shape is None:
            image_shape = tuple(gen_t1_to_t2.input_shape[1:])
            if None in image_shape:
                raise ValueError("image_shape: the generator accepts any size, so pass "
                                 "image_shape=(H, W, C) for the image pools")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.pool_t1 = ImagePool(pool_size, self.image_shape, seed=2 * seed, name="pool_t1")
        self.pool_t2 = ImagePool(pool_size, self.image_shape, seed=2 * seed + 10_007,
                                 name="pool_t2")

    def _generator_losses(self, real_t1, real_t2, training):
        """Forward pass of both generators and their loss terms."""
        fake_t2 = self.gen_t1_to_t2(real_t1, training=training)
        fake_t1 = self.gen_t2_to_t1(real_t2, training=training)
        out = {
            "fake_t1": fake_t1,
            "fake_t2": fake_t2,
            "adv_t1_to_t2": self.gen_adv_loss(self.disc_t2(fake_t2, training=training)),
            "adv_t2_to_t1": self.gen_adv_loss(self.disc_t1(fake_t1, training=training)),
            "cycle_t1": losses.cycle_loss(real_t1, self.gen_t2_to_t1(fake_t2, training=training)),
            "cycle_t2": losses.cycle_loss(real_t2, self.gen_t1_to_t2(fake_t1, training=training)),
        }
        zero = tf.constant(0.0)
        if self.lambda_identity > 0:
            out["identity_t1"] = losses.identity_loss(
                real_t1, self.gen_t2_to_t1(real_t1, training=training))
            out["identity_t2"] = losses.identity_loss(
                real_t2, self.gen_t1_to_t2(real_t2, training=training))
        else:
            out["identity_t1"] = out["identity_t2"] = zero
        if self.lambda_structure > 0 or not training:
            out["structure_t1_to_t2"] = losses.structure_loss(real_t1, fake_t2)
            out["structure_t2_to_t1"] = losses.structure_loss(real_t2, fake_t1)
        else:
            out["structure_t1_to_t2"] = out["structure_t2_to_t1"] = zero
        if self.lambda_supervised > 0 or not training:
            out["supervised_t1_to_t2"] = losses.supervised_loss(real_t2, fake_t2)
            out["supervised_t2_to_t1"] = losses.supervised_loss(real_t1, fake_t1)
        else:
            out["supervised_t1_to_t2"] = out["supervised_t2_to_t1"] = zero
        out["gen_total"] = (
            out["adv_t1_to_t2"] + out["adv_t2_to_t1"]
            + self.lambda_cycle * (out["cycle_t1"] + out["cycle_t2"])
            + self.lambda_identity * (out["identity_t1"] + out["identity_t2"])
            + self.lambda_structure * (out["structure_t1_to_t2"] + out["structure_t2_to_t1"])
            + self.lambda_supervised * (out["supervised_t1_to_t2"] + out["supervised_t2_to_t1"])
        )
        return out

    def _judged_fakes(self, out: dict):
        # The discriminators learn from the image pools' history of translations.
        step = self.global_step.value
        return (self.pool_t1(tf.stop_gradient(out["fake_t1"]), step=step),
                self.pool_t2(tf.stop_gradient(out["fake_t2"]), step=step))
