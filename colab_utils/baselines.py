"""The methods CycleGAN is compared with.

* :class:`SimpleBaseline`: no learning. The input's intensities are inverted
  inside the brain (T1 and T2 have roughly opposite tissue contrast: CSF is
  dark on T1 and bright on T2) and histogram-matched to the target domain's
  training distribution. It is the floor any learned method must clear.
* :class:`PairedTranslator`: supervised translation both ways on paired
  slices. With ``adversarial=False`` it is the *supervised generator* (the
  ResNet generator trained with L1 alone); with discriminators it is
  *pix2pix* (Isola et al. 2017: U-Net generator, conditional PatchGAN that
  sees ``(input, output)`` pairs, GAN loss + λ_L1·L1 with λ_L1 = 100).

CycleGAN and CycleGAN_s are :class:`colab_utils.cyclegan.CycleGAN`.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import rankdata

from . import losses
from .cyclegan import GeneratorPair
from .precision import apply_gradients
from .data.slices import SliceSet
from .fileio import atomic_write_bytes

DIRECTIONS = ("t1_to_t2", "t2_to_t1")


def brain_masks(images: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``mask`` as booleans, or where ``images`` is non-zero (preprocessing zeros the
    background) when no mask is given."""
    if mask is None:
        return np.asarray(images) > 0
    mask = np.asarray(mask).astype(bool)
    if mask.shape != np.shape(images):
        raise ValueError(f"mask: expected the images' shape {np.shape(images)}, "
                         f"got {mask.shape}")
    return mask


class SimpleBaseline:
    """Inverted input intensities, histogram-matched inside the brain.

    For each image, the brain pixels of ``1 - input`` are ranked and each rank
    is mapped to the same quantile of the target domain's training intensities
    (inside the brain). Pixels outside the brain are 0, like the targets.

    Args:
        quantiles: ``{"t1": q, "t2": q}``, each an increasing array of the
            domain's intensity quantiles at evenly spaced levels in [0, 1].
    """

    method = "simple"

    def __init__(self, quantiles: dict[str, np.ndarray]):
        self.quantiles = {}
        for domain in ("t1", "t2"):
            q = np.asarray(quantiles[domain], np.float64)
            if q.ndim != 1 or len(q) < 2 or np.any(np.diff(q) < 0) or not np.isfinite(q).all():
                raise ValueError(f"quantiles[{domain!r}]: expected an increasing 1-D array of "
                                 f"at least 2 finite values, got shape {q.shape}")
            self.quantiles[domain] = q

    @classmethod
    def fit(cls, slices: SliceSet, n_quantiles: int = 1001) -> "SimpleBaseline":
        """Quantiles of each domain's training intensities inside the brain."""
        levels = np.linspace(0.0, 1.0, n_quantiles)
        quantiles = {}
        for domain, images, mask in (("t1", slices.t1, slices.mask),
                                     ("t2", slices.t2, slices.t2_mask)):
            inside = np.asarray(images)[brain_masks(images, mask)]
            if inside.size == 0:
                raise ValueError(f"{slices.source}: no {domain.upper()} brain pixels to fit "
                                 "the Simple baseline on (all images are zero)")
            quantiles[domain] = np.quantile(inside, levels)
        return cls(quantiles)

    def translate(self, images: np.ndarray, mask: np.ndarray | None = None, *,
                  direction: str = "t1_to_t2") -> np.ndarray:
        """Translate (N, H, W, C) images in [0, 1]; returns float32 in [0, 1]."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
        target = self.quantiles[direction[-2:]]
        levels = np.linspace(0.0, 1.0, len(target))
        images = np.asarray(images, np.float32)
        masks = brain_masks(images, mask)
        out = np.zeros_like(images)
        for i in range(len(images)):
            inside = masks[i]
            values = 1.0 - images[i][inside]
            if values.size == 0:
                continue
            ranks = (rankdata(values, method="average") - 0.5) / values.size  # in (0, 1)
            out[i][inside] = np.interp(ranks, levels, target)
        return np.clip(out, 0.0, 1.0)

    def translator(self, direction: str):
        """A function ``(images, mask) -> images`` for one direction."""
        return lambda images, mask=None: self.translate(images, mask, direction=direction)

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"method": self.method,
                           "quantiles": {k: v.tolist() for k, v in self.quantiles.items()}})
        atomic_write_bytes(path, text.encode())
        return path

    @classmethod
    def load(cls, path) -> "SimpleBaseline":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Simple baseline file not found: {path}")
        try:
            values = json.loads(path.read_text())
            return cls(values["quantiles"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected a Simple baseline JSON with 'quantiles' for "
                             f"t1 and t2 ({err})") from err
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err


PAIRED_LOSS_KEYS = ("gen_total", "supervised_t1_to_t2", "supervised_t2_to_t1",
                    "adv_t1_to_t2", "adv_t2_to_t1", "disc_t1", "disc_t2")


class PairedTranslator(GeneratorPair, keras.Model):
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
        super().__init__(**kwargs)
        if (disc_t1 is None) != (disc_t2 is None):
            raise ValueError("disc_t1, disc_t2: pass both discriminators or neither")
        if lambda_l1 < 0:
            raise ValueError(f"lambda_l1: expected >= 0, got {lambda_l1}")
        self.gen_t1_to_t2 = gen_t1_to_t2
        self.gen_t2_to_t1 = gen_t2_to_t1
        self.disc_t1 = disc_t1
        self.disc_t2 = disc_t2
        self.adversarial = disc_t1 is not None
        self.lambda_l1 = float(lambda_l1) if self.adversarial else 1.0
        self.gen_adv_loss, self.disc_adv_loss = losses.adversarial_losses(gan_mode)
        self.global_step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica",
                                           name="global_step")
        keys = PAIRED_LOSS_KEYS if self.adversarial else PAIRED_LOSS_KEYS[:3]
        self.trackers = {key: keras.metrics.Mean(name=key) for key in keys}

    def compile(self, gen_optimizer, disc_optimizer=None, **kwargs):
        """One optimizer for both generators; one for both discriminators (pix2pix)."""
        if self.adversarial and disc_optimizer is None:
            raise ValueError("disc_optimizer: pix2pix needs an optimizer for its discriminators")
        super().compile(optimizer=gen_optimizer, **kwargs)
        self.gen_optimizer = gen_optimizer
        self.disc_optimizer = disc_optimizer if self.adversarial else None
        gen_optimizer.build(self.generator_variables)
        if self.adversarial:
            disc_optimizer.build(self.discriminator_variables)

    def call(self, inputs, training=False):
        """Translate T1 to T2."""
        return self.gen_t1_to_t2(inputs, training=training)

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

    def _disc_losses(self, real_t1, real_t2, fake_t1, fake_t2, training):
        fake_t1, fake_t2 = tf.stop_gradient(fake_t1), tf.stop_gradient(fake_t2)
        return {
            "disc_t2": self.disc_adv_loss(
                self.disc_t2(self._pair(real_t1, real_t2), training=training),
                self.disc_t2(self._pair(real_t1, fake_t2), training=training)),
            "disc_t1": self.disc_adv_loss(
                self.disc_t1(self._pair(real_t2, real_t1), training=training),
                self.disc_t1(self._pair(real_t2, fake_t1), training=training)),
        }

    def train_step(self, data):
        # 1. Translate both ways; L1 to the paired targets (+ adversarial for pix2pix).
        # 2. Update both generators.
        # 3. pix2pix: discriminators on (input, real) vs (input, synthetic); update them.
        # 4. Count the step; return mean losses.
        real_t1, real_t2 = data
        with tf.GradientTape() as tape:
            out = self._generator_losses(real_t1, real_t2, training=True)
        apply_gradients(self.gen_optimizer, tape, out["gen_total"], self.generator_variables)
        if self.adversarial:
            with tf.GradientTape() as tape:
                out.update(self._disc_losses(real_t1, real_t2, out["fake_t1"], out["fake_t2"],
                                             training=True))
                disc_total = out["disc_t1"] + out["disc_t2"]
            apply_gradients(self.disc_optimizer, tape, disc_total, self.discriminator_variables)
        self.global_step.assign_add(1)
        return self._update_trackers(out)

    def test_step(self, data):
        real_t1, real_t2 = data
        out = self._generator_losses(real_t1, real_t2, training=False)
        if self.adversarial:
            out.update(self._disc_losses(real_t1, real_t2, out["fake_t1"], out["fake_t2"],
                                         training=False))
        return self._update_trackers(out)

    def _update_trackers(self, out):
        for key, tracker in self.trackers.items():
            tracker.update_state(out[key])
        return {key: tracker.result() for key, tracker in self.trackers.items()}
