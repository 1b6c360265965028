"""The base of every trainable method: two generators, and two discriminators or none.

It owns what they all share: the step counter (saved in checkpoints; the
learning-rate schedule and the image pools' random draws follow it), the
named loss trackers that ``fit`` shows, ``compile`` with one optimizer for both
generators and one for both discriminators, and ``call`` (T1 → T2).
Subclasses supply their losses and steps: :class:`colab_utils.models.cyclegan.CycleGAN`
(CycleGAN, CycleGAN_s), :class:`colab_utils.models.unit.UNIT` (UNIT, UNIT_s) and
:class:`colab_utils.models.paired.PairedTranslator` (supervised, pix2pix).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..data.slices import from_network, to_network
from ..runtime.precision import apply_gradients


def generate(generator, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run a Keras generator (working in [-1, 1]) on [0, 1] images (N, H, W, C), in
    batches; returns [0, 1] float32 (N, H, W, C_out)."""
    x = to_network(np.asarray(images, np.float32))
    strategy = getattr(generator, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # A model built under several replicas: predict() would split these few images
        # over the replicas (and fail on an empty share); call it on one device instead.
        def run(chunk):
            return generator(chunk, training=False)
    else:
        # predict_on_batch reuses the compiled predict function without predict()'s
        # data adapter and callbacks, which cost more than a grid's few slices.
        run = generator.predict_on_batch
    out = np.concatenate([np.asarray(run(x[i:i + batch_size]), np.float32)
                          for i in range(0, len(x), batch_size)])
    return np.clip(from_network(out), 0.0, 1.0)


class TranslationModel(keras.Model):
    """T1 ↔ T2 generators, optional discriminators, a step counter and loss trackers.

    Args:
        gen_t1_to_t2, gen_t2_to_t1: Generators (images in [-1, 1]).
        disc_t1, disc_t2: Discriminators, or both ``None``.
        loss_keys: The names of the losses a step returns, in the order shown.
    """

    def __init__(self, gen_t1_to_t2, gen_t2_to_t1, disc_t1=None, disc_t2=None, *,
                 loss_keys, **kwargs):
        super().__init__(**kwargs)
        if (disc_t1 is None) != (disc_t2 is None):
            raise ValueError("disc_t1, disc_t2: pass both discriminators or neither")
        self.gen_t1_to_t2 = gen_t1_to_t2
        self.gen_t2_to_t1 = gen_t2_to_t1
        self.disc_t1 = disc_t1
        self.disc_t2 = disc_t2
        self.global_step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica",
                                           name="global_step")
        self.trackers = {key: keras.metrics.Mean(name=key) for key in loss_keys}
        self.gen_optimizer = self.disc_optimizer = None

    @property
    def adversarial(self) -> bool:
        return self.disc_t1 is not None

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def generator_variables(self):
        return self.gen_t1_to_t2.trainable_variables + self.gen_t2_to_t1.trainable_variables

    @property
    def discriminator_variables(self):
        if not self.adversarial:
            return []
        return self.disc_t1.trainable_variables + self.disc_t2.trainable_variables

    def compile(self, gen_optimizer, disc_optimizer=None, **kwargs):
        """One optimizer for both generators; one for both discriminators (when there
        are discriminators)."""
        if self.adversarial and disc_optimizer is None:
            raise ValueError(f"disc_optimizer: {self.name} has discriminators and needs an "
                             "optimizer for them")
        super().compile(optimizer=gen_optimizer, **kwargs)
        self.gen_optimizer = gen_optimizer
        self.disc_optimizer = disc_optimizer if self.adversarial else None
        # Build the slot variables now, so that a checkpoint restores them before the
        # first step.
        gen_optimizer.build(self.generator_variables)
        if self.adversarial:
            disc_optimizer.build(self.discriminator_variables)

    def call(self, inputs, training=False):
        """Translate T1 to T2."""
        return self.gen_t1_to_t2(inputs, training=training)

    def state_groups(self) -> dict[str, list]:
        """Every variable that defines the training state, grouped for checkpoints.

        An optimizer's own state (Adam's step and moments) is one group, and the loss
        scaling that ``mixed_float16`` wraps it in another (``*_loss_scale``), so that a
        checkpoint written under one dtype policy resumes under any other: the moments
        carry over, the loss scale is created or dropped
        (:func:`colab_utils.training.checkpoints.restore_state`).
        """
        groups = {"model": self.variables}
        for name, optimizer in (("gen_optimizer", self.gen_optimizer),
                                ("disc_optimizer", self.disc_optimizer)):
            if optimizer is None:
                continue
            inner = getattr(optimizer, "inner_optimizer", None)
            if inner is None:
                groups[name] = optimizer.variables
                continue
            mine = {id(v) for v in inner.variables}
            groups[name] = inner.variables
            groups[f"{name}_loss_scale"] = [v for v in optimizer.variables
                                            if id(v) not in mine]
        return groups

    def _update_generators(self, real_t1, real_t2) -> dict:
        """One generator update on the subclass's ``_generator_losses``; returns them."""
        with tf.GradientTape() as tape:
            out = self._generator_losses(real_t1, real_t2, training=True)
        apply_gradients(self.gen_optimizer, tape, out["gen_total"], self.generator_variables)
        return out

    def _update_discriminators(self, disc_losses) -> dict:
        """One discriminator update on ``disc_losses()`` (``{"disc_t1", "disc_t2"}``,
        computed under the tape); returns them."""
        with tf.GradientTape() as tape:
            out = disc_losses()
            total = out["disc_t1"] + out["disc_t2"]
        apply_gradients(self.disc_optimizer, tape, total, self.discriminator_variables)
        return out

    def _judge(self, domain: str, source, image, training):
        """The discriminator of ``domain`` on ``image`` (translated from ``source``)."""
        return getattr(self, f"disc_{domain}")(image, training=training)

    def _disc_losses(self, real_t1, real_t2, fake_t1, fake_t2, training) -> dict:
        """Each discriminator on its domain's real images against synthetic ones (no
        gradient reaches the generators through them)."""
        fake_t1, fake_t2 = tf.stop_gradient(fake_t1), tf.stop_gradient(fake_t2)
        return {
            "disc_t1": self.disc_adv_loss(self._judge("t1", real_t2, real_t1, training),
                                          self._judge("t1", real_t2, fake_t1, training)),
            "disc_t2": self.disc_adv_loss(self._judge("t2", real_t1, real_t2, training),
                                          self._judge("t2", real_t1, fake_t2, training)),
        }

    def _judged_fakes(self, out: dict):
        """The synthetic images the discriminators learn from in a step (CycleGAN: from
        its image pools)."""
        return out["fake_t1"], out["fake_t2"]

    def train_step(self, data):
        # 1. The subclass's forward pass and generator losses; update both generators.
        # 2. With discriminators: real vs. synthetic per domain; update both.
        # 3. Count the step; return the mean losses.
        real_t1, real_t2 = data
        out = self._update_generators(real_t1, real_t2)
        if self.adversarial:
            fake_t1, fake_t2 = self._judged_fakes(out)
            out.update(self._update_discriminators(lambda: self._disc_losses(
                real_t1, real_t2, fake_t1, fake_t2, training=True)))
        self.global_step.assign_add(1)
        return self._update_trackers(out)

    def test_step(self, data):
        # The losses without updates; the supervised terms are the translation errors
        # (meaningful when the batch is paired).
        real_t1, real_t2 = data
        out = self._generator_losses(real_t1, real_t2, training=False)
        if self.adversarial:
            out.update(self._disc_losses(real_t1, real_t2, out["fake_t1"], out["fake_t2"],
                                         training=False))
        return self._update_trackers(out)

    def _update_trackers(self, out: dict) -> dict:
        for key, tracker in self.trackers.items():
            tracker.update_state(out[key])
        return {key: tracker.result() for key, tracker in self.trackers.items()}
