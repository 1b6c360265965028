"""Training runs: build, resume, fit with callbacks, export.

A run directory holds everything about one run::

    RUN/config.json             the TrainConfig
    RUN/checkpoints/            ckpt-000000123.npz + .json (last K kept)
    RUN/grids/epoch_001.png     translation grid after every epoch
    RUN/history.csv             one row of mean losses per epoch
    RUN/loss_curves.png         plotted from history.csv
    RUN/tensorboard/            TensorBoard event files
    RUN/export/gen_t1_to_t2.keras, gen_t2_to_t1.keras   generators for inference
    RUN/data.json               the data it was trained on (store, preprocessing settings)
    RUN/summary.json            final step, dtype policy, exported files

Every ``config.model`` writes this layout: ``cyclegan``, ``cyclegan_s``,
``pix2pix`` and ``supervised`` train two generators (the GAN ones also
discriminators); ``simple`` is fitted without gradient steps and exports
``export/simple_baseline.json`` and one grid instead.

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
from . import viz
from .checkpoints import CheckpointManager, collect_state, restore_state
from .config import RESUMABLE_CHANGES, TrainConfig
from .fileio import atomic_write_bytes
from .inference import SIMPLE_FILE
from .cyclegan import CycleGAN
from .distribute import check_global_batch, describe, resolve_strategy
from .data.batches import eval_batches, steps_per_epoch, training_dataset
from .data.slices import SliceSet, fit_to_size, load_split
from .baselines import PairedTranslator, SimpleBaseline
from .models import patchgan_discriminator, resnet_generator, unet_generator
from .precision import apply_policy, make_optimizer, resolve_policy
from .schedules import LinearDecay

# Images per validation batch (at least; see train()).
VAL_BATCH = 16


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    run_dir: Path
    global_step: int
    total_steps: int
    resumed_from: int | None
    policy: str
    exported: dict


def _optimizers(config: TrainConfig, steps_per_epoch: int, policy: str, adversarial: bool):
    """The generators' optimizer, and the discriminators' (at ``disc_lr_scale`` × lr)."""
    def make(lr):
        schedule = LinearDecay(lr, config.epochs * steps_per_epoch,
                               config.epochs_decay * steps_per_epoch, config.warmup_steps)
        return make_optimizer(policy, schedule, config.beta_1, config.beta_2)
    return make(config.lr), (make(config.lr * config.disc_lr_scale) if adversarial else None)


def _with_policy(policy: str, build):
    """Call ``build()`` with Keras' global dtype policy set to ``policy``, then restore it."""
    previous = keras.mixed_precision.dtype_policy().name
    apply_policy(policy)
    try:
        return build()
    finally:
        apply_policy(previous)


def build_cyclegan(config: TrainConfig, steps_per_epoch: int, policy: str = "float32") -> CycleGAN:
    """Networks, image pools and optimizers of a CycleGAN (or CycleGAN_s) as ``config``
    describes.

    The dtype policy applies to the networks built here only; Keras' global
    policy is restored afterwards.
    """
    size, ch = config.image_size, config.channels
    gen_kw = dict(image_size=size, channels=ch, filters=config.gen_filters,
                  n_blocks=config.n_res_blocks, norm=config.norm, upsampling=config.upsampling,
                  long_skip=config.long_skip, intensity_path=config.intensity_path)
    disc_kw = dict(image_size=size, channels=ch, filters=config.disc_filters,
                   n_layers=config.disc_layers, norm=config.resolved_disc_norm)
    model = _with_policy(policy, lambda: CycleGAN(
        resnet_generator(name="gen_t1_to_t2", **gen_kw),
        resnet_generator(name="gen_t2_to_t1", **gen_kw),
        patchgan_discriminator(name="disc_t1", **disc_kw),
        patchgan_discriminator(name="disc_t2", **disc_kw),
        lambda_cycle=config.lambda_cycle, lambda_identity=config.lambda_identity,
        lambda_structure=config.lambda_structure,
        lambda_supervised=config.lambda_supervised if config.model == "cyclegan_s" else 0.0,
        gan_mode=config.resolved_gan_mode, pool_size=config.pool_size, seed=config.seed,
        name="cyclegan"))
    model.compile(*_optimizers(config, steps_per_epoch, policy, True),
                  jit_compile=config.jit_compile)
    return model


def unet_depth(image_size: int) -> int:
    """Down-samplings of the pix2pix U-Net: 8 at 256 px (down to 1×1), fewer for small
    images (``image_size`` must stay divisible by ``2**depth``)."""
    depth = 0
    while depth < 8 and image_size % (2 ** (depth + 1)) == 0:
        depth += 1
    return depth


def build_paired(config: TrainConfig, steps_per_epoch: int,
                 policy: str = "float32") -> PairedTranslator:
    """The supervised ResNet generators (``model="supervised"``) or pix2pix
    (``model="pix2pix"``: U-Net generators, conditional PatchGANs), both directions."""
    size, ch = config.image_size, config.channels
    adversarial = config.model == "pix2pix"

    def generator(name):
        if adversarial:
            return unet_generator(image_size=size, channels=ch, filters=config.gen_filters,
                                  n_downsamplings=unet_depth(size), norm=config.norm, name=name)
        return resnet_generator(image_size=size, channels=ch, filters=config.gen_filters,
                                n_blocks=config.n_res_blocks, norm=config.norm,
                                upsampling=config.upsampling, long_skip=config.long_skip,
                                intensity_path=config.intensity_path, name=name)

    def build():
        discs = [None, None]
        if adversarial:
            discs = [patchgan_discriminator(image_size=size, channels=2 * ch,
                                            filters=config.disc_filters,
                                            n_layers=config.disc_layers,
                                            norm=config.resolved_disc_norm,
                                            name=name) for name in ("disc_t1", "disc_t2")]
        return PairedTranslator(generator("gen_t1_to_t2"), generator("gen_t2_to_t1"), *discs,
                                lambda_l1=config.lambda_l1, gan_mode=config.resolved_gan_mode,
                                name=config.model)

    model = _with_policy(policy, build)
    model.compile(*_optimizers(config, steps_per_epoch, policy, adversarial),
                  jit_compile=config.jit_compile)
    return model


def build_model(config: TrainConfig, steps_per_epoch: int, policy: str = "float32"):
    """The trainable model of ``config.model`` (every method except ``"simple"``)."""
    if config.model in ("cyclegan", "cyclegan_s"):
        return build_cyclegan(config, steps_per_epoch, policy)
    if config.model in ("pix2pix", "supervised"):
        return build_paired(config, steps_per_epoch, policy)
    raise ValueError(f"model {config.model!r} has no networks to build; "
                     "the Simple baseline is fitted by train() directly")


def state_groups(model) -> dict[str, list]:
    """Every variable that defines the training state, grouped for checkpoints."""
    groups = {"model": model.variables, "gen_optimizer": model.gen_optimizer.variables}
    if model.disc_optimizer is not None:
        groups["disc_optimizer"] = model.disc_optimizer.variables
    return groups


def _prepare_run_dir(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path = run_dir / "config.json"
    if saved_path.is_file():
        saved = TrainConfig.load(saved_path)
        if saved.lr != config.lr:
            print(f"[colab_utils] {run_dir}: learning rate {saved.lr:g} -> {config.lr:g} "
                  "from the newest checkpoint on")
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


def load_generator(path, precision: str | None = None) -> keras.Model:
    """Load an exported generator (``.keras``).

    ``precision``: ``None`` computes in the dtype policy it was trained with;
    ``auto``, ``off`` or a policy name rebuilds it under that policy (see
    :func:`colab_utils.precision.with_policy`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator file not found: {path}")
    model = keras.saving.load_model(path, compile=False)
    if precision is None:
        return model
    from .precision import compute_policy, resolve_policy, with_policy

    policy = resolve_policy(precision)
    return model if compute_policy(model) == policy else with_policy(model, policy)


def _load_data(config: TrainConfig, data, train_data, val_data):
    """The training and validation splits at the configured image size."""
    if train_data is None:
        if data is None:
            raise ValueError("pass a data directory (data=...) or train_data")
        train_data = load_split(data, "train", channels=config.channels)
        if val_data is None:
            val_data = load_split(data, "val", channels=config.channels, required=False)
    train_data = fit_to_size(train_data, config.image_size)
    val_data = fit_to_size(val_data, config.image_size) if val_data is not None else None
    if config.paired and not train_data.paired:
        raise ValueError(f"{train_data.source}: model {config.model!r} needs paired T1/T2 "
                         "slices (the same subjects and slices, aligned), but this split is "
                         "unpaired; preprocess without --unpaired or train 'cyclegan'")
    return train_data, val_data or train_data


def _record_data_source(run_dir: Path, data) -> None:
    """Keep the slice store's preprocessing settings with the run (synthesis repeats them)."""
    if data is None or not Path(data).is_dir():
        return
    record = {"data": str(Path(data).resolve())}
    settings = Path(data) / "preprocess.json"
    if settings.is_file():
        record["preprocess"] = json.loads(settings.read_text()).get("config", {})
    atomic_write_bytes(run_dir / "data.json", (json.dumps(record, indent=2) + "\n").encode())


def train(config: TrainConfig, run_dir, data=None, *, train_data: SliceSet | None = None,
          val_data: SliceSet | None = None, show_inline: bool | str = "auto",
          stop_at_step: int | None = None, extra_callbacks=()) -> TrainResult:
    """Train (or resume) a run of ``config.model`` in ``run_dir``.

    ``cyclegan`` trains on unpaired batches; ``cyclegan_s``, ``pix2pix`` and
    ``supervised`` need a paired training split; ``simple`` is fitted (no
    gradient steps) and saved as ``export/simple_baseline.json``.

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
    train_data, val_data = _load_data(config, data, train_data, val_data)
    _prepare_run_dir(run_dir, config)
    _record_data_source(run_dir, data)
    if config.model == "simple":
        return _fit_simple(config, run_dir, train_data, val_data)
    _configure_reproducibility(config)
    policy = resolve_policy(config.precision)
    strategy = resolve_strategy(config.strategy)
    check_global_batch(config.batch_size, strategy)
    spe = steps_per_epoch(train_data, config.batch_size, config.max_steps_per_epoch)
    total_steps = spe * config.total_epochs
    with strategy.scope():  # variables are created per replica; fit splits each batch
        model = build_model(config, spe, policy)

    manager = CheckpointManager(run_dir / "checkpoints", keep=config.keep_checkpoints)
    resumed_from = _restore(model, manager, spe)
    step = int(model.global_step.numpy())
    print(f"[colab_utils] {config.model} run {run_dir}: policy {policy}, "
          f"{describe(strategy)}, {spe} steps/epoch, "
          + (f"resuming at step {step}" if resumed_from is not None else "starting fresh")
          + f" of {total_steps}")

    def save(at_step: int):
        meta = {"global_step": at_step, "epoch": at_step / spe, "steps_per_epoch": spe,
                "policy": policy, "strategy": describe(strategy), "config": config.to_dict(),
                "variables": {k: [v.path for v in vs] for k, vs in state_groups(model).items()}}
        manager.save(at_step, collect_state(state_groups(model)), meta)

    callbacks = _callbacks(config, run_dir, val_data, show_inline, save) + list(extra_callbacks)
    # Validation needs no gradients: a multiple of the batch size of at least
    # VAL_BATCH images per batch (fewer calls; 90 demo slices 2.0 s instead of
    # 2.7-5.1 s per epoch). Several replicas: only whole batches, so that no
    # replica gets an empty share.
    val_batch = config.batch_size * max(1, VAL_BATCH // config.batch_size)
    val_ds = (eval_batches(val_data, val_batch,
                           drop_remainder=strategy.num_replicas_in_sync > 1
                           and len(val_data) >= val_batch)
              if config.validate else None)
    limit = total_steps if stop_at_step is None else min(total_steps, stop_at_step)
    try:
        step = _fit(model, config, train_data, val_ds, callbacks, spe, step, limit)
    except cb.NonFiniteLossError as err:
        kept = manager.steps()
        raise RuntimeError(
            f"{run_dir}: training stopped, {err}. Nothing was saved after it; the newest "
            f"checkpoint is " + (f"step {kept[-1]}" if kept else "none (the run had none yet)")
            + ". To roll back and continue at a lower learning rate, run the same "
            f"command again with a smaller --lr (now {config.lr:g}): it resumes from that "
            "checkpoint. If it happens again, check the data.") from err
    exported = {}
    if resumed_from != total_steps or not (run_dir / "export" / "gen_t1_to_t2.keras").is_file():
        exported = export_generators(model, run_dir / "export")
    else:
        print(f"[colab_utils] run {run_dir} was already complete at step {step}; nothing to do")
    return _finish(run_dir, TrainResult(run_dir, step, total_steps, resumed_from, policy,
                                        exported), spe)


def _callbacks(config: TrainConfig, run_dir: Path, val_data: SliceSet, show_inline,
               save) -> list:
    grid = cb.ImageGridCallback(
        run_dir / "grids", *_fixed_slices(val_data, config.grid_slices),
        paired=val_data.paired,
        show_inline=cb.in_notebook() if show_inline == "auto" else bool(show_inline))
    callbacks = [cb.NonFiniteLossGuard(),  # first: nothing after it sees a broken step
                 cb.HistoryCallback(run_dir / "history.csv", run_dir / "loss_curves.png")]
    if config.grid_slices:
        callbacks.append(grid)
    if config.tensorboard:
        callbacks.append(cb.TensorBoardCallback(run_dir / "tensorboard",
                                                grid if config.grid_slices else None))
    callbacks.append(cb.CheckpointCallback(save, config.checkpoint_every_steps))
    return callbacks


def _fit(model, config: TrainConfig, train_data: SliceSet, val_ds, callbacks, spe: int,
         step: int, limit: int) -> int:
    """Train from global ``step`` to ``limit``: whole epochs in one ``fit``, a partial
    epoch (a resume or a stop inside an epoch) on its own. Returns the step reached."""
    while step < limit:
        epoch = step // spe
        if step % spe == 0 and limit - step >= spe:
            end = step + (limit - step) // spe * spe
        else:
            end = min((epoch + 1) * spe, limit)
        dataset = training_dataset(
            train_data, batch_size=config.batch_size, steps_per_epoch=spe, seed=config.seed,
            start_step=step, end_step=end, paired=config.paired, augmentation=config.augment,
            jitter_size=config.jitter_size if config.augment else None)
        whole = step % spe == 0 and (end - step) % spe == 0
        model.fit(dataset, initial_epoch=epoch, epochs=end // spe if whole else epoch + 1,
                  steps_per_epoch=spe if whole else end - step,
                  validation_data=val_ds, validation_freq=validation_epochs(config),
                  callbacks=callbacks, verbose=config.verbose, shuffle=False)
        step = int(model.global_step.numpy())
    return step


def validation_epochs(config: TrainConfig) -> list[int]:
    """The epochs (from 1) after which training validates: every ``validate_every``-th
    and the last."""
    last = config.total_epochs
    return [e for e in range(1, last + 1) if e % config.validate_every == 0 or e == last]


def _finish(run_dir: Path, result: TrainResult, spe: int) -> TrainResult:
    summary = {"global_step": result.global_step, "total_steps": result.total_steps,
               "steps_per_epoch": spe, "policy": result.policy,
               "resumed_from": result.resumed_from,
               "exported": {k: str(v) for k, v in result.exported.items()}}
    atomic_write_bytes(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(f"[colab_utils] outputs in {run_dir} (grids/, history.csv, checkpoints/, export/)")
    return result


def _fit_simple(config: TrainConfig, run_dir: Path, train_data: SliceSet,
                val_data: SliceSet) -> TrainResult:
    """Fit the Simple baseline's target histograms and save it with a grid of examples."""
    baseline = SimpleBaseline.fit(train_data)
    path = baseline.save(run_dir / "export" / SIMPLE_FILE)
    if config.grid_slices:
        t1, t2 = _fixed_slices(val_data, config.grid_slices)
        fig = viz.translation_grid(baseline.translator("t1_to_t2"),
                                   baseline.translator("t2_to_t1"), t1, t2,
                                   paired=val_data.paired, title="Simple baseline")
        cb.save_figure(fig, run_dir / "grids" / "epoch_001.png")
    print(f"[colab_utils] simple run {run_dir}: fitted T1 and T2 intensity histograms on "
          f"{len(train_data)} slices")
    return _finish(run_dir, TrainResult(run_dir, 0, 0, None, "float32",
                                        {"simple_baseline": path}), 0)


def _restore(model, manager: CheckpointManager, spe: int) -> int | None:
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
