"""Learning-rate schedules."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="colab_utils")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant for ``constant_steps``, then linear to zero over ``decay_steps``.

    This is CycleGAN's schedule (100 epochs at 2e-4, then 100 decaying to 0)
    expressed in optimizer steps, so the position in the schedule is the
    optimizer's iteration count and is restored with the optimizer.
    """

    def __init__(self, initial_learning_rate: float, constant_steps: int, decay_steps: int):
        if initial_learning_rate <= 0 or constant_steps < 0 or decay_steps < 0:
            raise ValueError("expected initial_learning_rate > 0 and non-negative step counts, "
                             f"got {initial_learning_rate}, {constant_steps}, {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.constant_steps = int(constant_steps)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        past = ops.maximum(step - self.constant_steps, 0.0)
        fraction = ops.minimum(past / max(self.decay_steps, 1), 1.0)
        return self.initial_learning_rate * (1.0 - fraction)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "constant_steps": self.constant_steps, "decay_steps": self.decay_steps}
