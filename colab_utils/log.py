"""One voice: every message of the package goes through ``logging`` under ``colab_utils``.

Each module logs with ``logger = get_logger(__name__)``. The package's logger has
one handler of its own, which writes ``[stage] message`` lines (``[preprocess]``,
``[fit]``, ``[pipeline]``; warnings say so) to the standard error as it is at
that moment (beside tqdm's bars; a command's answer and a benchmark's JSON line
keep the standard output), so the lines show in a notebook cell, in a terminal
and in a captured test alike. Records also propagate to the root logger, where an
application's own logging (or pytest's ``caplog``) sees them.

To quieten the package: ``logging.getLogger("colab_utils").setLevel(logging.WARNING)``.
Progress of long loops is a ``tqdm`` bar (:func:`progress`), not log lines.
"""

from __future__ import annotations

import logging
import sys

PACKAGE = "colab_utils"


class _CurrentStderr(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record comes
    (a notebook, pytest and ``contextlib.redirect_stderr`` all replace it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property decides
        pass


class _StageFormatter(logging.Formatter):
    """``[stage] message``: the stage is the module's own name (``colab_utils.data.
    preprocess`` -> ``preprocess``); warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        stage = record.name.rsplit(".", 1)[-1]
        level = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        text = f"[{stage}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _install() -> logging.Logger:
    root = logging.getLogger(PACKAGE)
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_StageFormatter())
        root.addHandler(handler)
        if root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger of a module (pass ``__name__``); the package's handler is attached on
    first use."""
    _install()
    return logging.getLogger(name if name.startswith(PACKAGE) else f"{PACKAGE}.{name}")


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", **kwargs):
    """A ``tqdm`` progress bar (the notebook widget in a notebook, text in a terminal)
    over ``iterable``; hidden when the package's logger is quieter than INFO."""
    from tqdm.auto import tqdm

    quiet = not logging.getLogger(PACKAGE).isEnabledFor(logging.INFO)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=quiet, leave=False,
                **kwargs)
