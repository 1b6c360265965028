"""colab_utils: the tested engine behind the T1w <-> T2w CycleGAN notebooks.

One concept per module:

* settings: ``config`` (the settings tree), ``presets`` (smoke, demo, paper, ixi-40);
* data (``colab_utils.data``): ``manifest``, ``download``, ``archive``, ``ixi``,
  ``nifti``, ``template``, ``registration``, ``brain_mask``, ``qc``, ``splits``,
  ``axial``, ``preprocess`` (the slice store), ``slices``, ``context`` (2.5-D
  neighbourhoods), ``batches``, ``datasets``, ``head`` and ``phantom`` (the offline
  phantom), ``toy``;
* networks and methods: ``models`` (builders), ``losses``, ``translation`` (the base
  model), ``cyclegan``, ``unit`` (UNIT, UNIT_s), ``paired`` (supervised, pix2pix),
  ``simple`` (the baseline),
  ``factory`` (models from settings), ``schedules``, ``precision``, ``distribute``;
* runs: ``rundir`` (a run directory's files), ``training`` (fit and resume),
  ``callbacks``, ``checkpoints``, ``inference`` (export and load);
* results: ``metrics``, ``evaluation``, ``volumes`` (whole volumes), ``compare``,
  ``report``, ``synthesis``;
* glue: ``pipeline`` (the whole chain), ``cli``, ``colab``, ``viz``, ``fileio``,
  ``validation``.

Import what you need, e.g. ``from colab_utils.models import resnet_generator``.
"""

__version__ = "0.2.0"
