"""Is a run learning? The collapse check that runs during training.

A CycleGAN can fail without any loss going wrong: early on, the generators
settle on translations that keep the source's tissue order (white matter
brighter than grey on a "T2"), which a cycle loss is happy with, and never
leave them (docs/EXPERIMENTS.md). On Colab that costs hours before anyone sees it.
So after every epoch, on a fixed set of validation slices (never test),
:class:`CollapseCheck` measures for each direction:

* ``health_ssim_*``: the translation's masked SSIM against the real target;
* ``health_simple_*``: the Simple baseline's, fitted on the training slices in
  a second (the floor any learned method must clear);
* ``health_order_*``: the rank correlation (Spearman) between the translation and
  the real target inside the brain masks. T1 and T2 order the tissues
  oppositely, so a translation that keeps the source's order correlates
  negatively with the target whatever its SSIM.

A run has collapsed when, past ``collapse_grace`` epochs, a direction keeps the
source's tissue order (its order is negative), or it is more than
:data:`COLLAPSE_MARGIN` below the Simple baseline and either not improving (its
SSIM rose by less than :data:`MIN_GAIN` since the epoch before), or its
discriminators have won (an epoch's mean LSGAN loss below :data:`DISC_WON`,
against about 0.25 at balance: the generators then learn from the cycle loss
alone, slowly if ever), or the run is at its last epoch. A run that trails
Simple while it learns (on real contrast, learning runs trail it for the first
few hundred steps) is left to learn; one that stalls far below it, or learnt the
wrong order, is not. The figures go to ``history.csv`` (and so to the loss
curves and the grid's caption); the verdict raises :class:`TrainingCollapsed`,
which training answers by starting again with the next seed
(:func:`colab_utils.training.fit.train`).
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.stats import spearmanr

from ..config import DIRECTIONS
from ..data.context import middle, with_context
from ..data.slices import SliceSet
from ..metrics import ssim
from ..models.simple import SimpleBaseline
from ..models.translation import generate

COLLAPSE_MARGIN = 0.1
# Less SSIM gain than this from one epoch to the next is "not improving".
MIN_GAIN = 0.02
# An epoch's mean LSGAN discriminator loss below this: the discriminators have won (0.25
# at balance, with CycleGAN's halved loss).
DISC_WON = 0.1
# Validation slices the check translates (evenly spaced through the split).
CHECK_SLICES = 48
# Brain pixels the rank correlation is computed on (evenly spaced).
ORDER_PIXELS = 20_000


class TrainingFailed(RuntimeError):
    """A run stopped without a usable model (the message says why and what to do)."""


class TrainingCollapsed(RuntimeError):
    """The collapse check found that a run does not learn the translation."""

    def __init__(self, epoch: int, reasons: list[str]):
        self.epoch = epoch
        self.reasons = reasons
        super().__init__(f"collapsed at epoch {epoch}: {'; '.join(reasons)}")


def _subset(slices: SliceSet, count: int) -> SliceSet:
    index = slices.spread(count)
    return SliceSet(slices.t1[index], slices.t2[index], True, slices.source,
                    mask=slices.mask[index], t2_mask=slices.mask[index])


def _mean_ssim(reference: np.ndarray, estimate: np.ndarray, masks: np.ndarray) -> float:
    scores = [ssim(r, e, data_range=1.0, mask=m) for r, e, m in zip(reference, estimate, masks)
              if m.any()]
    return float(np.mean(scores)) if scores else float("nan")


def contrast_order(reference: np.ndarray, estimate: np.ndarray, masks: np.ndarray) -> float:
    """Spearman correlation of the two images' intensities over the brain pixels
    (0 when either is flat there)."""
    inside = masks.astype(bool)
    step = max(1, int(inside.sum()) // ORDER_PIXELS)
    ref, est = reference[inside][::step], estimate[inside][::step]
    if ref.size < 2 or np.ptp(ref) == 0 or np.ptp(est) == 0:
        return 0.0  # a flat image orders nothing
    rho = spearmanr(ref, est)[0]
    return float(rho) if np.isfinite(rho) else 0.0


def generators(model) -> dict:
    """A two-generator model's translators of [0, 1] images, by direction."""
    def translator(generator):
        return lambda images: generate(generator, images, batch_size=16)

    return {d: translator(getattr(model, f"gen_{d}")) for d in DIRECTIONS}


def usable(val: SliceSet | None) -> bool:
    """Whether a validation split can be checked: paired, with brain masks."""
    return val is not None and val.paired and val.mask is not None


class CollapseCheck:
    """Measures a model's translations on validation slices against the Simple baseline.

    Args:
        val: Paired validation slices with masks (:func:`usable`).
        train: Training slices (the Simple baseline is fitted on them).
        grace_epochs: No verdict before this many epochs.
        epochs: The epochs (from 1) after which the check measures (all of them by
            default).
        context: The model's 2.5-D context (it sees each slice with this many
            neighbours; its middle output channel is measured).
        judge: Raise :class:`TrainingCollapsed` on a collapse (``False``: only measure,
            for the learning curves of methods the check does not restart).
    """

    def __init__(self, val: SliceSet, train: SliceSet, *, grace_epochs: int, epochs=None,
                 context: int = 0, judge: bool = True):
        index = val.spread(CHECK_SLICES)
        stacks = with_context(val, context)
        self.inputs = {"t1_to_t2": stacks.t1[index], "t2_to_t1": stacks.t2[index]}
        self.slices = _subset(val, CHECK_SLICES)
        self.masks = self.slices.mask.astype(bool)
        self.grace = int(grace_epochs)
        self.judge = bool(judge)
        self.epochs = None if epochs is None else set(epochs)
        # The figures of each complete epoch measured (for the trend), by epoch.
        self.measured: dict[int, dict] = {}
        self.simple = {}
        baseline = SimpleBaseline.fit(train)
        for direction in DIRECTIONS:
            source, target = self._pair(direction)
            out = baseline.translate(source, self.masks, direction=direction)
            self.simple[direction] = _mean_ssim(target, out, self.masks)
        self.last: dict = {}

    def _pair(self, direction):
        if direction == "t1_to_t2":
            return self.slices.t1, self.slices.t2
        return self.slices.t2, self.slices.t1

    def measure(self, translators: dict) -> dict:
        """The check's figures for ``translators``: ``{direction: function}`` of [0, 1]
        images (each slice's neighbourhood for a 2.5-D model; the middle output channel
        is measured). :func:`generators` makes them from a two-generator model."""
        figures = {}
        for direction in DIRECTIONS:
            _, target = self._pair(direction)
            out = middle(np.asarray(translators[direction](self.inputs[direction])))
            out = np.where(self.masks, out, 0.0)
            figures[f"health_ssim_{direction}"] = _mean_ssim(target, out, self.masks)
            figures[f"health_simple_{direction}"] = self.simple[direction]
            figures[f"health_order_{direction}"] = contrast_order(target, out, self.masks)
        return figures

    def start(self, history: list[dict]) -> None:
        """Begin an attempt whose ``history.csv`` rows so far are ``history`` (a resumed
        attempt's earlier epochs count for the trend)."""
        self.measured = {int(row["epoch"]): row for row in history
                         if isinstance(row.get("health_ssim_t1_to_t2"), float)}
        self.last = {}

    @staticmethod
    def verdict(figures: dict, before: dict | None = None, *, losses: dict | None = None,
                final: bool = False) -> list[str]:
        """Why the figures mean a collapse (empty: they do not).

        Args:
            figures: The epoch's figures (:meth:`measure`).
            before: The figures of the epoch before (``None``: none measured; a direction
                far below Simple then collapses unless it is learning by another sign).
            losses: The epoch's mean training losses (``disc_t1``, ``disc_t2``: LSGAN).
            final: The run's last epoch: far below Simple is a failure, whatever the trend.
        """
        losses = losses or {}
        won = [d for d in ("t1", "t2") if losses.get(f"disc_{d}", 1.0) < DISC_WON]
        reasons = []
        for direction in DIRECTIONS:
            mine, floor = figures[f"health_ssim_{direction}"], figures[f"health_simple_{direction}"]
            order = figures[f"health_order_{direction}"]
            if order < 0:
                reasons.append(f"{direction} keeps the source's tissue order (rank "
                               f"correlation with the target {order:.2f})")
                continue
            if mine >= floor - COLLAPSE_MARGIN:
                continue
            gain = None if before is None else mine - before[f"health_ssim_{direction}"]
            if final:
                why = "at the last epoch"
            elif won:
                why = "the discriminators have won (loss " + ", ".join(
                    f"{d.upper()} {losses[f'disc_{d}']:.3f}" for d in won) + ")"
            elif gain is None:
                why = "not improving"
            elif gain < MIN_GAIN:
                why = f"not improving ({gain:+.3f} since the epoch before)"
            else:
                why = None  # far below, but learning: left to learn
            if why:
                reasons.append(f"{direction} masked SSIM {mine:.3f}, more than "
                               f"{COLLAPSE_MARGIN} below the Simple baseline's {floor:.3f}, "
                               f"and {why}")
        return reasons

    def callbacks(self, steps_per_epoch: int, epochs: int | None = None
                  ) -> tuple[keras.callbacks.Callback, keras.callbacks.Callback]:
        """``(measure, guard)``: put ``measure`` before the history callback (its figures
        are added to the epoch's logs) and ``guard`` after the epoch is recorded, before
        its checkpoint (it raises :class:`TrainingCollapsed`). An epoch cut short (a stop
        inside it) is measured but judged only once it is complete."""
        check = self

        class Measure(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                check.last = {}
                if (check.epochs is None or epoch + 1 in check.epochs) and logs is not None:
                    check.last = check.measure(generators(self.model))
                    logs.update(check.last)

        class Guard(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                complete = int(self.model.global_step.numpy()) == (epoch + 1) * steps_per_epoch
                if not (check.last and complete):
                    return
                before = check.measured.get(epoch)  # the epoch before this one
                check.measured[epoch + 1] = check.last
                if check.judge and epoch + 1 > check.grace:
                    reasons = check.verdict(check.last, before, losses=logs,
                                            final=epochs is not None and epoch + 1 >= epochs)
                    if reasons:
                        raise TrainingCollapsed(epoch + 1, reasons)

        return Measure(), Guard()
