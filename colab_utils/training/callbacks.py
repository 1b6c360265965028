"""Keras callbacks for a run directory: grids, history, TensorBoard, checkpoints.

They also work with a plain ``model.fit`` on a :class:`~colab_utils.models.cyclegan.CycleGAN`.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path

import keras
import numpy as np

from .. import viz
from ..fileio import atomic_write_bytes
from ..models.translation import generate


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


class ImageGridCallback(keras.callbacks.Callback):
    """Saves ``grids/epoch_001.png``… of fixed validation slices after every epoch.

    Args:
        directory: Where the PNGs go.
        t1, t2: Fixed slices (N, H, W, C) in [0, 1].
        paired: Whether ``t1[i]`` and ``t2[i]`` are the same anatomy (adds a
            ground-truth column).
        show_inline: Display each grid in the notebook as it is written.
    """

    def __init__(self, directory, t1, t2, *, paired: bool, show_inline: bool = False):
        super().__init__()
        self.directory = Path(directory)
        self.t1, self.t2 = np.asarray(t1), np.asarray(t2)
        self.paired = paired
        self.show_inline = show_inline
        self.last_path: Path | None = None

    def on_epoch_end(self, epoch, logs=None):
        images = viz.cycle_images(lambda x: generate(self.model.gen_t1_to_t2, x),
                                  lambda x: generate(self.model.gen_t2_to_t1, x),
                                  self.t1, self.t2)
        fig = viz.translation_grid(images, paired=self.paired,
                                   title=f"epoch {epoch + 1}{viz.health_caption(logs or {})}")
        self.last_path = viz.save_figure(fig, self.directory / f"epoch_{epoch + 1:03d}.png")
        if self.show_inline:
            from IPython.display import Image, display

            display(Image(filename=str(self.last_path)))


class HistoryCallback(keras.callbacks.Callback):
    """Keeps ``history.csv`` (one row per epoch) and ``loss_curves.png`` up to date.

    A resumed run overwrites the rows of epochs it redoes, so the file always
    describes one consistent run. The CSV is written after every epoch. The
    PNG (about a second to draw on a CPU) is redrawn after an epoch only when
    ``redraw_seconds`` have passed since it was last drawn, and always when
    training ends: with short epochs it lags by at most that long.
    """

    def __init__(self, csv_path, png_path=None, *, redraw_seconds: float = 60.0):
        super().__init__()
        self.csv_path = Path(csv_path)
        self.png_path = Path(png_path) if png_path else None
        self.redraw_seconds = redraw_seconds
        self._started = None
        self._rows: list[dict] = []
        self._drawn_at = None  # perf_counter() of the last drawing; None: not drawn yet
        self._stale = False  # rows written since the last drawing

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "step": int(self.model.global_step.numpy()),
               "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
               "seconds": round(time.perf_counter() - (self._started or time.perf_counter()), 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        rows = [r for r in viz.read_history(self.csv_path) if r.get("epoch", 0) < epoch + 1]
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _format(r.get(k, "")) for k in fields})
        atomic_write_bytes(self.csv_path, text.getvalue().encode())
        self._rows, self._stale = rows, True
        if self._drawn_at is None or time.perf_counter() - self._drawn_at >= self.redraw_seconds:
            self._draw()

    def on_train_end(self, logs=None):
        if self._stale:
            self._draw()

    def _draw(self):
        if self.png_path:
            viz.save_figure(viz.loss_curves(self._rows), self.png_path)
        self._drawn_at, self._stale = time.perf_counter(), False


def _format(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


class TensorBoardCallback(keras.callbacks.Callback):
    """Writes epoch losses (and the latest image grid, if any) to TensorBoard."""

    def __init__(self, log_dir, grid_callback: ImageGridCallback | None = None):
        super().__init__()
        self.log_dir = str(log_dir)
        self.grid_callback = grid_callback
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch + 1):
            for key, value in (logs or {}).items():
                tf.summary.scalar(key, float(value))
            grid = self.grid_callback.last_path if self.grid_callback else None
            if grid is not None and grid.is_file():
                image = tf.io.decode_png(grid.read_bytes(), channels=3)[None]
                tf.summary.image("translation_grid", image)
        self._writer.flush()


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite loss."""

    def __init__(self, step: int, losses: dict):
        self.step = step
        self.losses = losses
        names = ", ".join(f"{k} = {v}" for k, v in losses.items())
        super().__init__(f"non-finite loss at step {step}: {names}")


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first step whose losses are not finite.

    It raises :class:`NonFiniteLossError` from ``on_train_batch_end``; put it
    first in the callback list so that no later callback (a checkpoint, a
    history row) records the broken state.
    """

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items()
               if np.ndim(v) == 0 and not np.isfinite(float(v))}
        if bad:
            raise NonFiniteLossError(int(self.model.global_step.numpy()), bad)


class CheckpointCallback(keras.callbacks.Callback):
    """Calls ``save(step)`` after every epoch, every ``every_steps`` steps (0: never) and
    when ``every_minutes`` have passed since the last save (0: never; for epochs longer
    than that: a session that ends inside one loses at most those minutes).

    A step that ends an epoch is saved by the epoch's end, after every callback before
    this one has judged the epoch (the collapse check): a step checkpoint there would
    let a run killed before the verdict resume past an epoch nobody judged.
    """

    def __init__(self, save, every_steps: int = 0, steps_per_epoch: int = 0,
                 every_minutes: float = 0.0):
        super().__init__()
        self.save = save
        self.every_steps = int(every_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_seconds = 60.0 * float(every_minutes)
        self._last_saved = None
        self._saved_at = time.monotonic()

    def _save(self):
        step = int(self.model.global_step.numpy())
        if step != self._last_saved:
            self.save(step)
            self._last_saved, self._saved_at = step, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.global_step.numpy())
        if self.steps_per_epoch and step % self.steps_per_epoch == 0:
            return  # the epoch's end saves it
        due = (self.every_steps and step % self.every_steps == 0) or (
            self.every_seconds and time.monotonic() - self._saved_at >= self.every_seconds)
        if due:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


class SessionBudget(keras.callbacks.Callback):
    """Stops training, cleanly, before a session's time runs out.

    ``deadline`` is a :func:`time.monotonic` time. After each step the callback checks
    whether another step and a checkpoint still fit before it (twice the slowest of the
    recent steps and the longest save, with a floor of :data:`SAVE_SECONDS`); when not,
    it stops training: the epoch's end then records the partial epoch and saves a
    checkpoint, and the next session resumes from it.
    """

    SAVE_SECONDS = 15.0

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped_at: int | None = None
        self._began = None
        self._steps: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._began = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self._began is not None:
            self._steps = (self._steps + [now - self._began])[-20:]
        needed = 2 * max(self._steps or [0.0]) + self.SAVE_SECONDS
        if now + needed > self.deadline:
            self.stopped_at = int(self.model.global_step.numpy())
            self.model.stop_training = True


class RunProgress(keras.callbacks.Callback):
    """A progress bar over the whole run (steps, steps per second, time left), and once,
    after the first steps (tracing excluded), an estimate of the run's time on this
    device: in total, and in sessions of ``session_minutes`` when they are set."""

    ESTIMATE_AFTER = 20

    def __init__(self, total_steps: int, start_step: int, *, describe: str = "",
                 session_minutes: float = 0.0, log=None):
        super().__init__()
        self.total, self.start = int(total_steps), int(start_step)
        self.describe, self.session_minutes = describe, float(session_minutes)
        self.log = log
        self.bar = None
        self._times: list[float] = []
        self.estimate: dict | None = None

    def on_train_begin(self, logs=None):
        from ..log import progress

        if self.bar is None:
            self.bar = progress(total=self.total, initial=self.start, desc="steps",
                                unit="step")

    def on_train_batch_end(self, batch, logs=None):
        self._times.append(time.monotonic())
        if self.bar is not None:
            self.bar.update(1)
        if self.estimate is None and len(self._times) > self.ESTIMATE_AFTER:
            seconds = float(np.median(np.diff(self._times[1:])))  # the first step traces
            step = int(self.model.global_step.numpy())
            self.estimate = time_estimate(seconds, self.total - step, self.total,
                                          self.session_minutes)
            if self.log is not None:
                self.log(f"{seconds:.3f} s a step on {self.describe}: "
                         f"{self.estimate['text']}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def time_estimate(step_seconds: float, steps_left: int, total_steps: int,
                  session_minutes: float = 0.0) -> dict:
    """The time a run needs at ``step_seconds`` a step: ``{"left_s", "total_s",
    "sessions", "text"}`` (``sessions``: of ``session_minutes``, when set)."""
    left, total = step_seconds * steps_left, step_seconds * total_steps
    text = f"about {_duration(left)} left of about {_duration(total)} in all"
    sessions = None
    if session_minutes > 0:
        sessions = int(np.ceil(left / (60 * session_minutes)))
        text += f"; with {session_minutes:g}-minute sessions, {sessions} more session(s)"
    return {"left_s": left, "total_s": total, "sessions": sessions, "text": text}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
