"""Training runs: fit, resume, and write the run directory (:mod:`colab_utils.training.rundir`).

Every ``config.model`` writes the same layout: ``cyclegan``, ``cyclegan_s``,
``unit``, ``unit_s``, ``pix2pix`` and ``supervised`` train two translators (the
GAN ones also discriminators); ``simple`` is fitted without gradient steps and exports
``export/simple_baseline.json`` and one grid instead.

Running :func:`train` again on the same directory resumes from the newest
valid checkpoint: weights, optimizer states, image pools, the schedule
position and the step counter are restored, and the data order and
augmentation are rebuilt from ``(seed, epoch)``, so the result equals an
uninterrupted run (bit for bit with ``deterministic=True`` on a CPU). A run
directory remembers the subjects it trained and validated on: resuming it on
other subjects (a store whose split changed) is refused.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .. import viz
from ..config import TrainConfig
from ..data.batches import eval_batches, steps_per_epoch, training_dataset
from ..data.context import with_context
from ..data.slices import SliceSet, fit_to_size
from ..data.store import SliceStore, load_split
from ..log import get_logger
from ..models.factory import build_model
from ..models.simple import SimpleBaseline
from ..runtime.devices import device_name
from ..runtime.distribute import check_global_batch, describe, resolve_strategy
from ..runtime.precision import resolve_policy
from . import callbacks as cb
from .attempts import Attempts
from .checkpoints import CheckpointManager, collect_state, restore_state
from .health import CollapseCheck, TrainingCollapsed, TrainingFailed, usable
from .rundir import RunDir, write_record

logger = get_logger(__name__)

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
    # Why training stopped before its last step in this call ("" when it did not: it
    # finished, or stop_at_step was reached).
    stopped: str = ""
    # Whether the train step ran compiled with XLA (Keras decides "auto"; it refuses XLA
    # for a deterministic run).
    xla: bool = False

    @property
    def finished(self) -> bool:
        return self.global_step >= self.total_steps


def _subjects(slices: SliceSet | None) -> list[str] | None:
    if slices is None or slices.t1_subjects is None:
        return None
    return sorted(set(slices.t1_subjects) | set(slices.t2_subjects))


def _data_record(data, train_data: SliceSet, val_data: SliceSet | None) -> dict:
    """What ``data.json`` records: the data, and for a slice store its settings and
    content version; the subjects of each split."""
    record = {"data": str(Path(data).resolve()) if data is not None else None,
              "subjects": {"train": _subjects(train_data), "val": _subjects(val_data)}}
    if data is not None and SliceStore.holds_store(data):
        store = SliceStore(data)
        record.update(preprocess=store.settings(), store_version=store.record().get("version"),
                      content_version=store.version)
    return record


def _fixed_slices(slices: SliceSet, count: int) -> tuple[np.ndarray, np.ndarray]:
    idx = slices.spread(count)
    return slices.t1[idx], slices.t2[idx]


def _configure_reproducibility(config: TrainConfig, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # a run after a deterministic one in the same process (a notebook) is not
        try:  # held to it, nor kept from XLA, which Keras refuses under determinism
            from tensorflow.python.framework.config import disable_op_determinism
        except ImportError:  # an older TensorFlow: determinism stays as it was
            return
        disable_op_determinism()


def _load_data(config: TrainConfig, data, train_data, val_data):
    """The training and validation splits at the configured image size (validation
    ``None`` when there is none)."""
    if train_data is None:
        if data is None:
            raise ValueError("pass a data directory (data=...) or train_data")
        train_data = load_split(data, "train", channels=config.channels,
                                size=config.image_size)
        if val_data is None:
            val_data = load_split(data, "val", channels=config.channels, required=False,
                                  size=config.image_size)
    train_data = fit_to_size(train_data, config.image_size)
    val_data = fit_to_size(val_data, config.image_size) if val_data is not None else None
    if config.paired and not train_data.paired:
        raise ValueError(f"{train_data.source}: model {config.model!r} needs paired T1/T2 "
                         "slices (the same subjects and slices, aligned), but this split is "
                         "unpaired; preprocess without unpaired or train 'cyclegan'")
    return train_data, val_data


def train(config: TrainConfig, run_dir, data=None, *, train_data: SliceSet | None = None,
          val_data: SliceSet | None = None, show_inline: bool | str = "auto",
          stop_at_step: int | None = None, deadline: float | None = None,
          extra_callbacks=()) -> TrainResult:
    """Train (or resume) a run of ``config.model`` in ``run_dir``.

    ``cyclegan`` and ``unit`` train on unpaired batches; ``cyclegan_s``, ``unit_s``,
    ``pix2pix`` and ``supervised`` need a paired training split; ``simple`` is fitted (no
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
        deadline: A :func:`time.monotonic` time to stop before, with a checkpoint
            (default: ``config.max_minutes`` from now, when set): a session's budget.
            The result then says ``stopped``; run again to continue.
        extra_callbacks: More Keras callbacks.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: Bad settings, data, or a run directory of another run (other
            settings, or other subjects).
        FileNotFoundError: Missing data.
        TrainingFailed: A non-finite loss, or a collapse (:mod:`colab_utils.training.health`)
            after ``max_restarts`` restarts.
    """
    config = config.validated()
    if deadline is None and config.max_minutes > 0:
        deadline = time.monotonic() + 60 * config.max_minutes
    if deadline is not None and deadline - time.monotonic() < cb.SessionBudget.SAVE_SECONDS:
        raise ValueError(
            f"the session's time budget leaves {max(deadline - time.monotonic(), 0):.0f} s, "
            f"less than a step and a checkpoint ({cb.SessionBudget.SAVE_SECONDS:.0f} s at "
            "least); give more minutes (max_minutes) or none (0)")
    run = RunDir(run_dir)
    train_data, val_data = _load_data(config, data, train_data, val_data)
    run.prepare(config)
    run.record_data(_data_record(data, train_data, val_data))
    check = None
    if config.measures_health:
        if usable(val_data):
            check = CollapseCheck(val_data, train_data, grace_epochs=config.collapse_grace,
                                  context=config.context_slices,
                                  judge=config.checks_collapse)
        else:
            logger.warning("%s: no paired validation slices with brain masks; training "
                           "without the collapse check", run.path)
    val_data = val_data if val_data is not None else train_data
    if config.model == "simple":
        return _fit_simple(config, run, train_data, val_data)
    attempts = Attempts(run)
    while True:
        if attempts.collapsed:  # the current attempt collapsed (now or in an earlier call)
            if attempts.current >= config.max_restarts:
                last = attempts.restarts[-1]
                raise TrainingFailed(
                    f"{run.path}: {config.model} did not learn the translation in "
                    f"{attempts.current + 1} attempt(s) (seeds {config.seed} to "
                    f"{attempts.seed(config)}); the last collapsed at epoch {last['epoch']}: "
                    f"{'; '.join(last['reasons'])}. Look at the grids and history.csv "
                    "(health_* columns) and check the data; a larger --max-restarts "
                    "continues with the next seed (docs/EXPERIMENTS.md)")
            attempts.next(config)
        try:
            return _train_attempt(config, run, train_data, val_data, attempts, check,
                                  show_inline=show_inline, stop_at_step=stop_at_step,
                                  deadline=deadline, extra_callbacks=extra_callbacks)
        except TrainingCollapsed as err:
            attempts.collapse(config, err)


def _train_attempt(config: TrainConfig, run: RunDir, train_data: SliceSet,
                   val_data: SliceSet, attempts: Attempts, check, *, show_inline,
                   stop_at_step, deadline, extra_callbacks) -> TrainResult:
    """One attempt of a run: its seed is the run's plus the attempt's number."""
    seed = attempts.seed(config)
    _configure_reproducibility(config, seed)
    policy = resolve_policy(config.precision)
    strategy = resolve_strategy(config.strategy)
    check_global_batch(config.batch_size, strategy)
    spe = steps_per_epoch(train_data, config.batch_size, config.steps_per_epoch)
    total_steps = spe * config.total_epochs
    with strategy.scope():  # variables are created per replica; fit splits each batch
        model = build_model(dataclasses.replace(config, seed=seed), spe, policy)

    manager = CheckpointManager(run.checkpoints, keep=config.keep_checkpoints)
    resumed_from = _restore(model, manager, spe, attempts, policy, describe(strategy))
    step = int(model.global_step.numpy())
    xla = bool(getattr(model, "jit_compile", False))
    if config.jit_compile == "true" and not xla:
        logger.warning("jit_compile true, but Keras trains this run without XLA (a "
                       "deterministic run, or a layer XLA cannot compile)")
    logger.info("%s run %s: policy %s%s, %s, %d steps/epoch, %s%s of %d", config.model,
                run.path, policy, ", XLA" if xla else "", describe(strategy), spe,
                f"attempt {attempts.current + 1} (seed {seed}), " if attempts.current else "",
                f"resuming at step {step}" if resumed_from is not None else "starting fresh",
                total_steps)

    def save(at_step: int):
        meta = {"global_step": at_step, "epoch": at_step / spe, "steps_per_epoch": spe,
                "policy": policy, "strategy": describe(strategy), "config": config.to_dict(),
                "attempt": attempts.current, "seed": seed,
                "variables": {k: [v.path for v in vs] for k, vs in model.state_groups().items()}}
        path = manager.save(at_step, collect_state(model.state_groups()), meta)
        if not saved:
            size = path.stat().st_size / 1e6
            logger.info("checkpoints: %.1f MB each, the newest %d kept (about %.0f MB) in %s",
                        size, config.keep_checkpoints, size * config.keep_checkpoints,
                        run.checkpoints)
        saved.append(at_step)

    saved: list[int] = []

    if check is not None:  # the trend starts from this attempt's recorded epochs
        check.start(viz.read_history(run.history) if resumed_from is not None else [])
    # What the networks see: each slice with its neighbours (2.5-D), or the slice.
    val_data = with_context(val_data, config.context_slices)
    callbacks = _callbacks(config, run, val_data, show_inline, save, spe, check,
                           extra_callbacks)
    limit = total_steps if stop_at_step is None else min(total_steps, stop_at_step)
    budget = cb.SessionBudget(deadline) if deadline is not None else None
    progress = cb.RunProgress(total_steps, step, describe=device_name(),
                              session_minutes=config.max_minutes,
                              log=lambda text: logger.info("%s", text))
    # The budget before the checkpoint (its stop is saved by the epoch's end).
    callbacks = [progress] + ([budget] if budget else []) + callbacks
    # Validation needs no gradients: a multiple of the batch size of at least
    # VAL_BATCH images per batch (fewer calls). Several replicas: only whole batches,
    # so that no replica gets an empty share.
    val_batch = config.batch_size * max(1, VAL_BATCH // config.batch_size)
    val_ds = (eval_batches(val_data, val_batch,
                           drop_remainder=strategy.num_replicas_in_sync > 1
                           and len(val_data) >= val_batch)
              if config.validate else None)
    try:
        step = _fit(model, config, seed, train_data, val_ds, callbacks, spe, step, limit,
                    budget)
    except cb.NonFiniteLossError as err:
        kept = manager.steps()
        raise TrainingFailed(
            f"{run.path}: training stopped, {err}. Nothing was saved after it; the newest "
            f"checkpoint is " + (f"step {kept[-1]}" if kept else "none (the run had none yet)")
            + ". To roll back and continue at a lower learning rate, run the same "
            f"command again with a smaller --lr (now {config.lr:g}): it resumes from that "
            "checkpoint. If it happens again, check the data.") from err
    finally:
        progress.close()
    if budget is not None and budget.stopped_at is not None and step < total_steps:
        left = (progress.estimate or {}).get("text", "")
        logger.warning("%s: the session's time budget is reached at step %d of %d; the "
                       "checkpoint is saved. Run the same command (or notebook) again to "
                       "continue%s", run.path, step, total_steps, f" ({left})" if left else "")
        return TrainResult(run.path, step, total_steps, resumed_from, policy, {},
                           stopped="time budget", xla=xla)
    exported = {}
    if resumed_from != total_steps or not run.generator("t1_to_t2").is_file():
        exported = run.save_generators(model)
    else:
        logger.info("run %s was already complete at step %d; nothing to do", run.path, step)
    return _finish(run, TrainResult(run.path, step, total_steps, resumed_from, policy,
                                    exported, xla=xla), spe, attempts, seed)


def _callbacks(config: TrainConfig, run: RunDir, val_data: SliceSet, show_inline, save,
               spe: int, check=None, extra=()) -> list:
    grid = cb.ImageGridCallback(
        run.grids, *_fixed_slices(val_data, config.grid_slices), paired=val_data.paired,
        show_inline=cb.in_notebook() if show_inline == "auto" else bool(show_inline))
    measure, guard = (check.callbacks(spe, config.total_epochs) if check is not None
                      else (None, None))
    callbacks = [cb.NonFiniteLossGuard()]  # first: nothing after it sees a broken step
    if measure is not None:  # before the history, which records its figures
        callbacks.append(measure)
    callbacks.append(cb.HistoryCallback(run.history, run.loss_curves))
    if config.grid_slices:
        callbacks.append(grid)
    if config.tensorboard:
        callbacks.append(cb.TensorBoardCallback(run.tensorboard,
                                                grid if config.grid_slices else None))
    callbacks += list(extra)
    # The guard after everything that records the epoch, before its checkpoint: a
    # collapsed epoch is never saved as the newest state to resume from.
    if guard is not None:
        callbacks.append(guard)
    callbacks.append(cb.CheckpointCallback(save, config.checkpoint_every_steps, spe,
                                           config.checkpoint_minutes))
    return callbacks


def _fit(model, config: TrainConfig, seed: int, train_data: SliceSet, val_ds, callbacks,
         spe: int, step: int, limit: int, budget=None) -> int:
    """Train from global ``step`` to ``limit``: whole epochs in one ``fit``, a partial
    epoch (a resume or a stop inside an epoch) on its own; until the session ``budget``
    stops it. Returns the step reached."""
    while step < limit and (budget is None or budget.stopped_at is None):
        epoch = step // spe
        if step % spe == 0 and limit - step >= spe:
            end = step + (limit - step) // spe * spe
        else:
            end = min((epoch + 1) * spe, limit)
        dataset = training_dataset(
            train_data, batch_size=config.batch_size, steps_per_epoch=spe, seed=seed,
            start_step=step, end_step=end, paired=config.paired, augmentation=config.augment,
            jitter_size=config.jitter_size if config.augment else None,
            context=config.context_slices)
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


def _finish(run: RunDir, result: TrainResult, spe: int, attempts: Attempts | None = None,
            seed: int | None = None) -> TrainResult:
    write_record(run.summary_file, {
        "global_step": result.global_step, "total_steps": result.total_steps,
        "steps_per_epoch": spe, "policy": result.policy, "xla": result.xla,
        "resumed_from": result.resumed_from,
        "exported": {k: str(v) for k, v in result.exported.items()},
        "seed": seed, "attempt": attempts.current if attempts else 0,
        "restarts": attempts.restarts if attempts else []})
    logger.info("outputs in %s (grids/, history.csv, checkpoints/, export/)", run.path)
    return result


def _fit_simple(config: TrainConfig, run: RunDir, train_data: SliceSet,
                val_data: SliceSet) -> TrainResult:
    """Fit the Simple baseline's target histograms and save it with a grid of examples."""
    baseline = SimpleBaseline.fit(train_data)
    path = baseline.save(run.simple_file)
    if config.grid_slices:
        t1, t2 = _fixed_slices(val_data, config.grid_slices)
        images = viz.cycle_images(baseline.translator("t1_to_t2"),
                                  baseline.translator("t2_to_t1"), t1, t2)
        viz.save_figure(viz.translation_grid(images, paired=val_data.paired,
                                             title="Simple baseline"), run.grid(1))
    logger.info("simple run %s: fitted T1 and T2 intensity histograms on %d slices",
                run.path, len(train_data))
    return _finish(run, TrainResult(run.path, 0, 0, None, "float32",
                                    {"simple_baseline": path}), 0)


def _restore(model, manager: CheckpointManager, spe: int, attempts: Attempts, policy: str,
             strategy: str) -> int | None:
    """Load the newest valid checkpoint of the current attempt into ``model``; return its
    step or ``None``. Checkpoints of another attempt are never loaded (set aside). A
    checkpoint of another dtype policy or strategy resumes (said in the log)."""
    found = manager.latest()
    if found is not None and found[2].get("attempt", 0) != attempts.current:
        attempts.set_aside(found[2].get("attempt", 0))
        found = None
    if found is None:
        return None
    step, arrays, meta = found
    if meta.get("steps_per_epoch") != spe:
        raise ValueError(
            f"{manager.directory}: checkpoint step {step} was written with "
            f"{meta.get('steps_per_epoch')} steps per epoch, this data gives {spe}; "
            "resume with the same data and batch size or use a new run directory")
    changes = restore_state(model.state_groups(), arrays,
                            source=str(manager.directory / f"ckpt-{step:09d}"))
    before = (meta.get("policy"), meta.get("strategy"))
    if before[0] not in (None, policy) or before[1] not in (None, strategy) or changes:
        logger.info("resuming step %d, written under %s (%s), now under %s (%s): the weights "
                    "and optimizer moments carry over%s", step, before[0], before[1], policy,
                    strategy, "".join(f"; {g}: {what}" for g, what in changes.items()))
    return step
