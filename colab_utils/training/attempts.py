"""A run's attempts: the restart state machine of the collapse check.

``RUN/restarts.json`` records which attempt is current (its seed is the run's
plus its number), whether it collapsed, and every collapse so far. The states:

* *training*: the current attempt trains (or resumes);
* *collapsed*: the check stopped it; recorded before anything else moves;
* *next*: the collapsed attempt's files are set aside (:meth:`RunDir.set_aside`),
  then the next attempt is recorded as current.

An interruption anywhere leaves a state the next call continues from: a
collapsed attempt not yet set aside is set aside then.
"""

from __future__ import annotations

from ..config import TrainConfig
from ..fileio import read_record, write_record
from ..log import get_logger
from .health import TrainingCollapsed
from .rundir import RunDir

logger = get_logger(__name__)


class Attempts:
    """A run's attempts (see the module docstring)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.path = run.restarts_file
        record = read_record(self.path)
        self.current = int(record.get("attempt", 0))
        self.collapsed = bool(record.get("collapsed", False))
        self.restarts: list[dict] = list(record.get("restarts", []))

    def seed(self, config: TrainConfig) -> int:
        return config.seed + self.current

    def _write(self) -> None:
        write_record(self.path, {"attempt": self.current, "collapsed": self.collapsed,
                                 "restarts": self.restarts})

    def collapse(self, config: TrainConfig, err: TrainingCollapsed) -> None:
        """Record that the current attempt collapsed."""
        self.restarts.append({"attempt": self.current, "seed": self.seed(config),
                              "epoch": err.epoch, "reasons": err.reasons})
        self.collapsed = True
        self._write()
        logger.warning("%s: attempt %d (seed %d) %s", self.run.path, self.current + 1,
                       self.seed(config), err)

    def next(self, config: TrainConfig) -> None:
        """Set the collapsed attempt aside, then record the next one as current. An
        interruption in between leaves the old attempt recorded as collapsed: the next
        call sets aside what is left of it and goes on."""
        self.set_aside(self.current)
        self.current, self.collapsed = self.current + 1, False
        self._write()
        logger.info("%s: starting again from scratch with seed %d (restart %d of at most %d)",
                    self.run.path, self.seed(config), self.current, config.max_restarts)

    def set_aside(self, attempt: int) -> None:
        """Set attempt ``attempt``'s files aside (:meth:`RunDir.set_aside`)."""
        self.run.set_aside(attempt)
