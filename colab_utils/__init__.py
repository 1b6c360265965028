"""colab_utils: the tested engine behind the T1w <-> T2w CycleGAN notebooks.

Modules: ``config``, ``models``, ``losses``, ``cyclegan``, ``training``,
``callbacks``, ``checkpoints``, ``schedules``, ``precision``, ``viz`` and
``data`` (slices, batches, toy data). Import what you need, e.g.
``from colab_utils.models import resnet_generator``.
"""

__version__ = "0.1.0"
