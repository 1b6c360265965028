"""colab_utils: the tested engine behind the T1w <-> T2w CycleGAN notebooks.

Folders are the stages of the data flow, and data flows one way through them::

    data/        sources, registration, brain masks, QC, splits, the slice store
        ↓        (SliceStore owns a store's files)
    models/      network builders, losses, the two-generator base model, each
        ↓        method (CycleGAN, UNIT, supervised, pix2pix, Simple), the factory
    training/    fit and resume, restarts, callbacks, checkpoints, the collapse
        ↓        check (RunDir owns a run's files)
    evaluation/  inference, slice and whole-volume scores, the comparison and its
                 report, synthesis of whole scans

Beside them: ``config`` (the settings tree) and ``presets``; ``runtime`` (precision
and tf.distribute); ``metrics``, ``viz`` (figures from arrays), ``log`` (the one
log channel), ``fileio``, ``validation``. On top: ``pipeline`` (the whole chain),
``cli`` (``python -m colab_utils``) and ``colab`` (workspace, Drive, hardware,
display). The map, with the owner of each set of files: docs/ARCHITECTURE.md.

Import what you need, e.g. ``from colab_utils.models import resnet_generator``.
"""

__version__ = "0.3.0"
