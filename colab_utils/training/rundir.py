"""A run directory: every file a run writes, under one name each, and their readers.

::

    RUN/config.json             the TrainConfig
    RUN/data.json               the slice store it trained on: path, preprocessing,
                                and the subjects of each split it used
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
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import TrainConfig
from ..fileio import atomic_write_bytes


def read_record(path) -> dict:
    """A JSON object from ``path``, or ``{}`` when it is missing, damaged or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_record(path, record: dict) -> None:
    """Write a JSON object atomically."""
    atomic_write_bytes(Path(path), (json.dumps(record, indent=2) + "\n").encode())


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

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

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
        return self.path / "metrics" / split

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
