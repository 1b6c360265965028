"""A run directory: every file a run writes, under one name each, and their readers.

::

    RUN/config.json             the TrainConfig
    RUN/data.json               the data it trained on: the slice store and its content
                                version, its preprocessing, the subjects of each split
    RUN/checkpoints/            ckpt-000000123.npz + .json (the newest few)
    RUN/grids/epoch_001.png     translation grid after every epoch
    RUN/history.csv             one row of mean losses per epoch
    RUN/loss_curves.png         plotted from history.csv
    RUN/tensorboard/            TensorBoard event files
    RUN/export/gen_t1_to_t2.keras, gen_t2_to_t1.keras   the generators
    RUN/export/simple_baseline.json                     (the Simple baseline instead)
    RUN/summary.json            final step, dtype policy, seed, restarts, exported files
    RUN/restarts.json           the current attempt and the collapses that restarted it
    RUN/attempts/attempt-K/     a collapsed attempt's checkpoints, grids and history
    RUN/metrics/SPLIT/          written by evaluation (evaluation.json and tables)

Readers of JSON records return ``{}`` for a file that is missing or damaged
(a run that has not got that far); the config is the exception: a run
directory without a readable one is an error.

Which subjects a run saw is recorded once (``data.json``) and checked in one
place, :meth:`RunDir.subject_changes`: training refuses to resume on other
subjects, the pipeline sets such a run aside, and evaluation refuses to score a
run on subjects it trained on (:meth:`RunDir.trained_on`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import DIRECTIONS, RESUMABLE_CHANGES, TrainConfig
from ..fileio import read_record, write_record
from ..log import get_logger

logger = get_logger(__name__)

__all__ = ["RunDir", "read_record", "write_record"]


class RunDir:
    """The files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.data_file = self.path / "data.json"
        self.summary_file = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"
        self.grids = self.path / "grids"
        self.history = self.path / "history.csv"
        self.loss_curves = self.path / "loss_curves.png"
        self.tensorboard = self.path / "tensorboard"
        self.restarts_file = self.path / "restarts.json"
        self.attempts = self.path / "attempts"
        self.export = self.path / "export"
        self.simple_file = self.export / "simple_baseline.json"
        self.metrics_dir = self.path / "metrics"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def generator(self, direction: str) -> Path:
        """The exported generator of a direction (``"t1_to_t2"`` or ``"t2_to_t1"``)."""
        return self.export / f"gen_{direction}.keras"

    def grid(self, epoch: int) -> Path:
        return self.grids / f"epoch_{epoch:03d}.png"

    def metrics(self, split: str) -> Path:
        """Where an evaluation on ``split`` writes its tables."""
        return self.metrics_dir / split

    def attempt_dir(self, attempt: int) -> Path:
        return self.attempts / f"attempt-{attempt}"

    # -- records -----------------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The run's settings.

        Raises:
            FileNotFoundError: Not a run directory (no config.json).
            ValueError: An unreadable config.json (the message names it).
        """
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.json)")
        return TrainConfig.load(self.config_file)

    def model(self) -> str:
        """The run's method (its config's ``model``), or the directory's name."""
        return read_record(self.config_file).get("model") or self.name

    def summary(self) -> dict:
        """``summary.json``: final step, dtype policy, exports (``{}`` before the end)."""
        return read_record(self.summary_file)

    def trained_step(self) -> int | None:
        """The global step the run finished training at, if it has finished."""
        try:
            return int(self.summary()["global_step"])
        except (KeyError, TypeError, ValueError):
            return None

    def version(self) -> str | None:
        """What identifies the run's finished state (its last step, attempt and seed), for
        caches of its loaded models; ``None`` before it has finished."""
        summary = self.summary()
        if "global_step" not in summary:
            return None
        return f"{summary['global_step']}-{summary.get('attempt', 0)}-{summary.get('seed')}"

    def data_record(self) -> dict:
        """``data.json``: the store, its preprocessing and the subjects of each split."""
        return read_record(self.data_file)

    def subjects(self, split: str) -> list[str] | None:
        """The subject IDs of ``split`` the run trained (or validated) on; ``None`` when
        the run does not record them (trained before subjects were recorded, or on
        slices without subject IDs)."""
        subjects = self.data_record().get("subjects", {})
        return subjects.get(split) if isinstance(subjects, dict) else None

    def evaluation_record(self, split: str) -> dict:
        return read_record(self.metrics(split) / "evaluation.json")

    # -- the subjects a run saw ----------------------------------------------------------
    def subject_changes(self, current: dict[str, list[str] | None]) -> list[str]:
        """How the subjects of each split in ``current`` (``{split: IDs or None}``) differ
        from those the run recorded, one line per split (empty: the same, or unknown)."""
        changes = []
        for split, now in current.items():
            before = self.subjects(split)
            if before is not None and now is not None and sorted(before) != sorted(now):
                added, removed = sorted(set(now) - set(before)), sorted(set(before) - set(now))
                changes.append(f"{split}: {len(before)} subjects then, {len(now)} now"
                               + (f" (new: {', '.join(added[:3])}"
                                  + (" …" if len(added) > 3 else "") + ")" if added else "")
                               + (f" (gone: {', '.join(removed[:3])}"
                                  + (" …" if len(removed) > 3 else "") + ")" if removed else ""))
        return changes

    def trained_on(self, subjects) -> list[str] | None:
        """Which of ``subjects`` the run trained on (``None``: it does not record its
        training subjects)."""
        trained = self.subjects("train")
        return None if trained is None else sorted(set(trained) & set(subjects))

    # -- writing -----------------------------------------------------------------------
    def prepare(self, config: TrainConfig) -> None:
        """Create the directory and record ``config``; a directory of a run with other
        settings (beyond :data:`~colab_utils.config.RESUMABLE_CHANGES`) is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_file.is_file():
            saved = self.config()
            if saved.lr != config.lr:
                logger.info("%s: learning rate %g -> %g from the newest checkpoint on",
                            self.path, saved.lr, config.lr)
            changed = {k: v for k, v in saved.differences(config).items()
                       if k not in RESUMABLE_CHANGES}
            if changed:
                details = ", ".join(f"{k}: {a!r} -> {b!r}"
                                    for k, (a, b) in sorted(changed.items()))
                raise ValueError(
                    f"{self.config_file}: this run directory holds a run with other settings "
                    f"({details}); resume with the same settings or choose a new run "
                    "directory")
        config.save(self.config_file)

    def record_data(self, record: dict) -> None:
        """Write ``data.json`` (``{"data", "subjects": {split: IDs}, ...}``); refuse a run
        directory that trained on other subjects.

        Raises:
            ValueError: The run recorded other subjects for a split (named).
        """
        changes = self.subject_changes(record.get("subjects", {}))
        if changes:
            raise ValueError(f"{self.data_file}: this run trained on other subjects "
                             f"({'; '.join(changes)}; the store's split changed); train into "
                             "a new run directory")
        write_record(self.data_file, record)

    def save_generators(self, model) -> dict[str, Path]:
        """Save both generators of a trained model as ``.keras`` files in ``export/``
        (each written atomically); return their paths by name."""
        self.export.mkdir(parents=True, exist_ok=True)
        paths = {}
        for direction in DIRECTIONS:
            final = self.generator(direction)
            tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
            getattr(model, f"gen_{direction}").save(tmp)
            os.replace(tmp, final)
            paths[f"gen_{direction}"] = final
        return paths

    def set_aside(self, attempt: int) -> Path:
        """Move what an attempt left (checkpoints, grids, history, curves, TensorBoard,
        export, summary, evaluations) into ``attempts/attempt-K/``, merging with what an
        interrupted earlier call moved there; nothing of a collapsed attempt is then
        evaluated or synthesised from."""
        target = self.attempt_dir(attempt)
        target.mkdir(parents=True, exist_ok=True)
        for path in (self.checkpoints, self.grids, self.history, self.loss_curves,
                     self.tensorboard, self.export, self.summary_file, self.metrics_dir):
            if not path.exists():
                continue
            moved = target / path.name
            if moved.is_dir() and path.is_dir():
                for child in path.iterdir():
                    os.replace(child, moved / child.name)
                path.rmdir()
            else:
                os.replace(path, moved)
        return target
