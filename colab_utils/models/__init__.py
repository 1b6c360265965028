"""Networks and methods: builders, losses, the two-generator base model, each method,
the Simple baseline and the factory that makes them from settings.

The builders are the package's face (``colab_utils.models.resnet_generator``); each
method lives in its own module (:mod:`.cyclegan`, :mod:`.unit`, :mod:`.paired`,
:mod:`.simple`), built from settings by :mod:`.factory`.
"""

from .networks import (
    patchgan_discriminator,
    receptive_field,
    resnet_generator,
    unet_generator,
    unit_networks,
)

__all__ = ["patchgan_discriminator", "receptive_field", "resnet_generator", "unet_generator",
           "unit_networks"]
