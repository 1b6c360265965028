"""Presets: functions that return a whole settings tree (:class:`~colab_utils.config.Experiment`).

* ``smoke``: seconds on a CPU (tests);
* ``demo``: the README's main job, minutes on a 2-core CPU on the offline phantom
  (narrow networks, 64 px, a few hundred steps). It shows the protocol, not the
  methods' best results; what each of its settings gave is in docs/EXPERIMENTS.md;
* ``paper``: the CycleGAN paper's networks and schedule (256 px, batch 1,
  100 + 100 epochs, every brain slice): hours on a GPU;
* ``ixi-40``: ``paper`` on the published IXI protocol (:data:`IXI_40`).

:func:`preset` applies overrides by setting name; a ``None`` leaves the preset's
value, so a notebook field or command-line flag left unset takes the preset's.
"""

from __future__ import annotations

import dataclasses

from .config import UNIT_MODELS, DataConfig, Experiment, TrainConfig
from .validation import check_choice

PRESETS = ("smoke", "demo", "paper", "ixi-40")
# The demo's methods: UNIT and UNIT_s do not learn in its minutes, pix2pix does not fit
# them (docs/EXPERIMENTS.md); every other preset has all seven.
DEMO_METHODS = ("simple", "supervised", "cyclegan", "cyclegan_s")
# The IXI protocol of SynDiff (Özbey et al. 2023) and SelfRDB: the first 40 paired
# subjects in ID order, 25 train / 5 val / 10 test, about 100 axial brain slices each.
IXI_40 = {"subjects": 40, "train": 25, "val": 5, "test": 10}


def paper() -> Experiment:
    """The CycleGAN paper's training (TrainConfig's defaults) on every brain slice of the
    demo's subjects (12 phantoms unless ``source`` says otherwise)."""
    data = dataclasses.replace(demo().data, slices="brain")
    return Experiment(data, TrainConfig(precision="auto"), cyclegan_step_factor=1.0).validated()


def demo() -> Experiment:
    """Minutes on a CPU: 12 real-contrast phantom subjects (6 train, 2 val, 4 test), 90
    axial slices each at 64 px, narrow networks, 4 epochs of 64 steps (512 steps for
    CycleGAN); Simple, the supervised generator, CycleGAN and CycleGAN_s."""
    data = DataConfig(subjects=12, phantom_kind="icbm", slices="range",
                      slice_range=(50, 140), val_fraction=0.2, test_fraction=0.3, split_seed=6)
    train = TrainConfig(
        image_size=64, jitter_size=TrainConfig.jitter_for(64), gen_filters=16,
        n_res_blocks=4, disc_filters=32, long_skip=True, intensity_path=True,
        lambda_identity=0.0, lambda_structure=2.0, pool_size=20, batch_size=4, lr=8e-4,
        epochs=3, epochs_decay=1, steps_per_epoch=64, validate=False, precision="auto",
        grid_slices=2, tensorboard=False,
        # The first verdict after epoch 2, with the trend from epoch 1 (docs/EXPERIMENTS.md).
        collapse_grace=1)
    # Steps and volume settings are the main job's time budget (docs/EXPERIMENTS.md).
    return Experiment(data, train, methods=DEMO_METHODS, cyclegan_step_factor=2.0,
                      volume_methods=("cyclegan",), volume_plane_step=4).validated()


def smoke() -> Experiment:
    """Seconds on a CPU: 3 phantom subjects, 4 slices at 32 px, tiny networks, 2 epochs."""
    data = DataConfig(subjects=3, phantom_kind="head", slices="range", slice_range=(70, 74),
                      val_fraction=0.2, test_fraction=0.3, split_seed=6)
    train = TrainConfig(
        image_size=32, jitter_size=36, gen_filters=8, n_res_blocks=2, disc_filters=8,
        disc_layers=2, pool_size=4, batch_size=2, epochs=1, epochs_decay=1,
        steps_per_epoch=8, grid_slices=2)
    return Experiment(data, train, methods=("simple", "cyclegan"), volume_methods=("cyclegan",),
                      volume_plane_step=2).validated()


def ixi_40() -> Experiment:
    """``paper`` training on the IXI protocol (:data:`IXI_40`)."""
    base = paper()
    # The 99 axial slices whose brain area is at least 45% of the largest (z -38 to +60 mm).
    data = dataclasses.replace(base.data, source="ixi", protocol="ixi-40",
                               subjects=IXI_40["subjects"], min_brain_fraction=0.45)
    return dataclasses.replace(base, data=data).validated()


_BUILDERS = {"smoke": smoke, "demo": demo, "paper": paper, "ixi-40": ixi_40}


def preset(name: str = "demo", **overrides) -> Experiment:
    """The preset ``name`` with ``overrides`` (setting names, e.g. ``image_size=128``;
    ``None`` keeps the preset's value)."""
    check_choice("preset", name, PRESETS)
    return _BUILDERS[name]().with_overrides(**overrides)


def method_config(experiment: Experiment, method: str) -> TrainConfig:
    """The training settings of one method's run in an experiment."""
    steps = experiment.train.steps_per_epoch
    if method == "cyclegan":  # unpaired: longer epochs (see Experiment)
        steps = round(steps * experiment.cyclegan_step_factor)
    elif method in UNIT_MODELS:
        steps = round(steps * experiment.unit_step_factor)
    return experiment.train.replace(model=method, steps_per_epoch=steps)


def smoke_config(**overrides) -> TrainConfig:
    """The ``smoke`` preset's training settings with ``overrides`` (for tests and trials)."""
    return smoke().train.replace(**overrides)
