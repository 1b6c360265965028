"""Load a trained method for inference, whatever it is.

:func:`load_method` takes a run directory (any ``model``: the exported
generators, or the Simple baseline's JSON) or a single exported file and
returns a :class:`Method`: a translator per direction, each a function
``(images, mask) -> images`` on (N, H, W, C) float32 in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .baselines import DIRECTIONS, SimpleBaseline
from .config import TrainConfig
from .precision import compute_policy
from . import viz
from .validation import check_choice

Translator = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
SIMPLE_FILE = "simple_baseline.json"


@dataclass
class Method:
    """A trained method: its name, the image size it works at, and its translators."""

    name: str
    image_size: int | None
    translators: dict[str, Translator] = field(default_factory=dict)
    source: str = ""
    # The dtype policy the generators compute in ("" for the Simple baseline).
    policy: str = ""

    def translate(self, images: np.ndarray, mask: np.ndarray | None = None, *,
                  direction: str) -> np.ndarray:
        check_choice("direction", direction, tuple(self.translators))
        return self.translators[direction](images, mask)


def keras_translator(generator, batch_size: int = 8) -> Translator:
    """Wrap a Keras generator (working in [-1, 1]) as a translator on [0, 1] images.

    Network outputs are not masked: what a generator paints outside the brain
    is part of its result (unmasked metrics see it).
    """
    def translate(images, mask=None):
        return viz.translate(generator, np.asarray(images, np.float32), batch_size)
    return translate


def _generator(path: Path, precision: str | None):
    from .training import load_generator

    return load_generator(path, precision)


def load_method(source, *, direction: str | None = None, batch_size: int = 8,
                precision: str | None = None) -> Method:
    """A run directory or an exported file as a :class:`Method`.

    Args:
        source: A run directory (``config.json`` + ``export/``), a generator
            ``.keras`` file, or a Simple baseline ``.json``.
        direction: For a single ``.keras`` file: which direction it translates
            (``"t1_to_t2"`` or ``"t2_to_t1"``; guessed from a file name like
            ``gen_t1_to_t2.keras``).
        batch_size: Inference batch size.
        precision: ``None``: the dtype policy each generator was trained in;
            ``auto`` (mixed precision where this hardware supports it), ``off``
            or a Keras policy name to translate in that policy instead.

    Raises:
        FileNotFoundError: Nothing to load at ``source``.
        ValueError: A run that has not finished exporting, or an unknown direction.
    """
    source = Path(source)
    if source.is_dir():
        return _load_run(source, batch_size, precision)
    if not source.is_file():
        raise FileNotFoundError(f"no run directory or model file at {source}")
    if source.suffix == ".json":
        baseline = SimpleBaseline.load(source)
        return Method("simple", None, {d: baseline.translator(d) for d in DIRECTIONS},
                      str(source))
    if source.suffix != ".keras":
        raise ValueError(f"{source}: expected a run directory, a .keras generator or a "
                         f"Simple baseline .json, got a {source.suffix or 'suffix-less'} file")
    if direction is None:
        direction = next((d for d in DIRECTIONS if d in source.name), None)
        if direction is None:
            raise ValueError(f"{source}: pass direction='t1_to_t2' or 't2_to_t1' (the file "
                             "name does not say which way it translates)")
    check_choice("direction", direction, DIRECTIONS)
    generator = _generator(source, precision)
    size = generator.input_shape[1]
    return Method(source.stem, size, {direction: keras_translator(generator, batch_size)},
                  str(source), compute_policy(generator))


def _load_run(run_dir: Path, batch_size: int, precision: str | None) -> Method:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    config = TrainConfig.load(config_path)
    export = run_dir / "export"
    policy = ""
    if config.model == "simple":
        baseline = SimpleBaseline.load(export / SIMPLE_FILE)
        translators = {d: baseline.translator(d) for d in DIRECTIONS}
    else:
        translators = {}
        for d in DIRECTIONS:
            path = export / f"gen_{d}.keras"
            if not path.is_file():
                raise ValueError(f"{path}: missing; the run has not finished (re-run its "
                                 "train command to resume and export)")
            generator = _generator(path, precision)
            policy = compute_policy(generator)
            translators[d] = keras_translator(generator, batch_size)
    return Method(config.model, config.image_size, translators, str(run_dir), policy)


def method_label(run_dir) -> str:
    """A run's method name (its config's ``model``), or the directory name."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return Path(run_dir).name


def preprocessing_settings(source) -> dict:
    """The slice size and intensity clipping a model's training data was made with
    (from ``RUN/data.json``; preprocessing defaults when unknown)."""
    from .data.preprocess import PreprocessConfig

    defaults = PreprocessConfig()
    settings = {"size": defaults.size, "clip_low": defaults.clip_low,
                "clip_high": defaults.clip_high}
    source = Path(source)
    record_path = source / "data.json" if source.is_dir() else None
    if record_path is not None and record_path.is_file():
        recorded = json.loads(record_path.read_text()).get("preprocess", {})
        settings.update({k: recorded[k] for k in settings if k in recorded})
    return settings
