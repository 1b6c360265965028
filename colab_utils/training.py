"""Training runs: build, resume, fit with callbacks, export.

A run directory holds everything about one run::

    RUN/config.json             the TrainConfig
    RUN/checkpoints/            ckpt-000000123.npz + .json (last K kept)
    RUN/grids/epoch_001.png     translation grid after every epoch
    RUN/history.csv             one row of mean losses per epoch
    RUN/loss_curves.png         plotted from history.csv
    RUN/tensorboard/            TensorBoard event files
    RUN/export/gen_t1_to_t2.keras, gen_t2_to_t1.keras   generators for inference

Running :func:`train` again on the same directory resumes from the newest
valid checkpoint: weights, optimizer states, image pools, the schedule
position and the step counter are restored, and the data order and
augmentation are rebuilt from ``(seed, epoch)``, so the result equals an
uninterrupted run (bit for bit with ``deterministic=True`` on a CPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import callbacks as cb
from .checkpoints import CheckpointManager, collect_state, restore_state
from .config import RESUMABLE_CHANGES, TrainConfig
from .cyclegan import CycleGAN
from .data.batches import eval_batches, steps_per_epoch, training_dataset
from .data.slices import SliceSet, fit_to_size, load_split
from .models import patchgan_discriminator, resnet_generator
from .precision import apply_policy, make_optimizer, resolve_policy
from .schedules import LinearDecay


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    run_dir: Path
    global_step: int
    total_steps: int
    resumed_from: int | None
    policy: str
    exported: dict


def build_cyclegan(config: TrainConfig, steps_per_epoch: int, policy: str = "float32") -> CycleGAN:
    """Networks, image pools and optimizers of a CycleGAN as ``config`` describes.

    The dtype policy applies to the networks built here only; Keras' global
    policy is restored afterwards.
    """
    previous = keras.mixed_precision.dtype_policy().name
    apply_policy(policy)
    try:
        size, ch = config.image_size, config.channels
        gen_kw = dict(image_size=size, channels=ch, filters=config.gen_filters,
                      n_blocks=config.n_res_blocks, norm=config.norm,
                      upsampling=config.upsampling)
        disc_kw = dict(image_size=size, channels=ch, filters=config.disc_filters,
                       n_layers=config.disc_layers, norm=config.norm)
        model = CycleGAN(
            resnet_generator(name="gen_t1_to_t2", **gen_kw),
            resnet_generator(name="gen_t2_to_t1", **gen_kw),
            patchgan_discriminator(name="disc_t1", **disc_kw),
            patchgan_discriminator(name="disc_t2", **disc_kw),
            lambda_cycle=config.lambda_cycle, lambda_identity=config.lambda_identity,
            lambda_supervised=config.lambda_supervised, gan_mode=config.gan_mode,
            pool_size=config.pool_size, seed=config.seed, name="cyclegan",
        )
    finally:
        apply_policy(previous)
    schedule = lambda: LinearDecay(config.lr, config.epochs * steps_per_epoch,  # noqa: E731
                                   config.epochs_decay * steps_per_epoch)
    model.compile(make_optimizer(policy, schedule(), config.beta_1, config.beta_2),
                  make_optimizer(policy, schedule(), config.beta_1, config.beta_2),
                  jit_compile=config.jit_compile)
    return model


def state_groups(model: CycleGAN) -> dict[str, list]:
    """Every variable that defines the training state, grouped for checkpoints."""
    return {"model": model.variables, "gen_optimizer": model.gen_optimizer.variables,
            "disc_optimizer": model.disc_optimizer.variables}


def _prepare_run_dir(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path = run_dir / "config.json"
    if saved_path.is_file():
        saved = TrainConfig.load(saved_path)
        changed = {k: v for k, v in saved.differences(config).items()
                   if k not in RESUMABLE_CHANGES}
        if changed:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in
                                ((k, *v) for k, v in sorted(changed.items())))
            raise ValueError(
                f"{saved_path}: this run directory holds a run with other settings "
                f"({details}); resume with the same settings or choose a new run directory")
    config.save(saved_path)


def _fixed_slices(slices: SliceSet, count: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(slices.t1), len(slices.t2))
    idx = np.unique(np.linspace(0, n - 1, num=min(count, n)).round().astype(int))
    return slices.t1[idx], slices.t2[idx]


def _configure_reproducibility(config: TrainConfig) -> None:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def export_generators(model: CycleGAN, directory) -> dict:
    """Save both generators as ``.keras`` files (written atomically); return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("gen_t1_to_t2", "gen_t2_to_t1"):
        final = directory / f"{name}.keras"
        tmp = directory / f".tmp-{os.getpid()}-{name}.keras"
        getattr(model, name).save(tmp)
        os.replace(tmp, final)
        paths[name] = final
    return paths


def load_generator(path) -> keras.Model:
    """Load an exported generator (``.keras``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator file not found: {path}")
    return keras.saving.load_model(path, compile=False)


def train(config: TrainConfig, run_dir, data=None, *, train_data: SliceSet | None = None,
          val_data: SliceSet | None = None, show_inline: bool | str = "auto",
          stop_at_step: int | None = None, extra_callbacks=()) -> TrainResult:
    """Train (or resume) a CycleGAN / CycleGAN_s run in ``run_dir``.

    Args:
        config: The settings; checked against the run's saved config when
            resuming (only run length and reporting may change).
        run_dir: The run directory (created if needed).
        data: A data directory or ``.npz`` for :func:`load_split`; or pass
            ``train_data``/``val_data`` directly.
        train_data, val_data: Loaded splits (``val_data`` defaults to the
            ``val`` split of ``data`` if present, else the training split).
        show_inline: Display each epoch's grid in the notebook (``"auto"``:
            when running inside one).
        stop_at_step: Stop (with a checkpoint) once this global step is
            reached, e.g. to fit a Colab session; run again to continue. An
            epoch cut short this way is reported (grid, history row) at the
            stop and reported again, complete, when it finishes.
        extra_callbacks: More Keras callbacks.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: Bad settings, data, or a run directory of another run.
        FileNotFoundError: Missing data.
    """
    config = config.validated()
    run_dir = Path(run_dir)
    if train_data is None:
        if data is None:
            raise ValueError("pass a data directory (data=...) or train_data")
        train_data = load_split(data, "train", channels=config.channels)
        if val_data is None:
            val_data = load_split(data, "val", channels=config.channels, required=False)
    train_data = fit_to_size(train_data, config.image_size)
    val_data = fit_to_size(val_data, config.image_size) if val_data is not None else None
    paired = config.model == "cyclegan_s"
    if paired and not train_data.paired:
        raise ValueError(f"{train_data.source}: model 'cyclegan_s' needs paired T1/T2 slices, "
                         "but this split is unpaired")
    val_data = val_data or train_data
    _prepare_run_dir(run_dir, config)
    _configure_reproducibility(config)
    policy = resolve_policy(config.precision)
    spe = steps_per_epoch(train_data, config.batch_size, config.max_steps_per_epoch)
    total_steps = spe * config.total_epochs
    model = build_cyclegan(config, spe, policy)

    manager = CheckpointManager(run_dir / "checkpoints", keep=config.keep_checkpoints)
    resumed_from = _restore(model, manager, spe)
    step = int(model.global_step.numpy())
    print(f"[colab_utils] run {run_dir}: policy {policy}, {spe} steps/epoch, "
          + (f"resuming at step {step}" if resumed_from is not None else "starting fresh")
          + f" of {total_steps}")

    def save(at_step: int):
        meta = {"global_step": at_step, "epoch": at_step / spe, "steps_per_epoch": spe,
                "policy": policy, "config": config.to_dict(),
                "variables": {k: [v.path for v in vs] for k, vs in state_groups(model).items()}}
        manager.save(at_step, collect_state(state_groups(model)), meta)

    grid = cb.ImageGridCallback(
        run_dir / "grids", *_fixed_slices(val_data, config.grid_slices),
        paired=val_data.paired,
        show_inline=cb.in_notebook() if show_inline == "auto" else bool(show_inline))
    callbacks = [cb.HistoryCallback(run_dir / "history.csv", run_dir / "loss_curves.png")]
    if config.grid_slices:
        callbacks.append(grid)
    if config.tensorboard:
        callbacks.append(cb.TensorBoardCallback(run_dir / "tensorboard",
                                                grid if config.grid_slices else None))
    callbacks.append(cb.CheckpointCallback(save, config.checkpoint_every_steps))
    callbacks.extend(extra_callbacks)
    val_ds = eval_batches(val_data, config.batch_size) if config.validate else None

    limit = total_steps if stop_at_step is None else min(total_steps, stop_at_step)
    while step < limit:
        epoch = step // spe
        if step % spe == 0 and limit - step >= spe:
            end = step + (limit - step) // spe * spe  # whole epochs in one call
        else:
            end = min((epoch + 1) * spe, limit)  # a partial epoch on its own
        dataset = training_dataset(
            train_data, batch_size=config.batch_size, steps_per_epoch=spe, seed=config.seed,
            start_step=step, end_step=end, paired=paired, augmentation=config.augment,
            jitter_size=config.jitter_size if config.augment else None)
        whole = step % spe == 0 and (end - step) % spe == 0
        model.fit(dataset, initial_epoch=epoch, epochs=end // spe if whole else epoch + 1,
                  steps_per_epoch=spe if whole else end - step,
                  validation_data=val_ds, callbacks=callbacks, verbose=config.verbose,
                  shuffle=False)
        step = int(model.global_step.numpy())
    exported = {}
    if resumed_from != total_steps or not (run_dir / "export" / "gen_t1_to_t2.keras").is_file():
        exported = export_generators(model, run_dir / "export")
    else:
        print(f"[colab_utils] run {run_dir} was already complete at step {step}; nothing to do")
    summary = {"global_step": step, "total_steps": total_steps, "steps_per_epoch": spe,
               "policy": policy, "resumed_from": resumed_from,
               "exported": {k: str(v) for k, v in exported.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[colab_utils] outputs in {run_dir} (grids/, history.csv, checkpoints/, export/)")
    return TrainResult(run_dir, step, total_steps, resumed_from, policy, exported)


def _restore(model: CycleGAN, manager: CheckpointManager, spe: int) -> int | None:
    """Load the newest valid checkpoint into ``model``; return its step or ``None``."""
    found = manager.latest()
    if found is None:
        return None
    step, arrays, meta = found
    if meta.get("steps_per_epoch") != spe:
        raise ValueError(
            f"{manager.directory}: checkpoint step {step} was written with "
            f"{meta.get('steps_per_epoch')} steps per epoch, this data gives {spe}; "
            "resume with the same data and batch size or use a new run directory")
    restore_state(state_groups(model), arrays, source=str(manager.directory / f"ckpt-{step:09d}"))
    return step
