"""Trained methods in and out: export generators, and load any method for inference.

:func:`export_generators` writes a run's generators; :func:`load_method` takes a
run directory (any ``model``: the exported generators, or the Simple
baseline's JSON) or a single exported file and returns a :class:`Method`: a
translator per direction, each a function ``(images, mask) -> images`` on
(N, H, W, C) float32 in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from .. import viz
from ..config import DIRECTIONS
from ..data.context import context_of, middle
from ..models.simple import SimpleBaseline
from ..runtime.precision import compute_policy, resolve_policy, with_policy
from ..training.rundir import RunDir
from ..validation import check_choice

Translator = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass
class Method:
    """A trained method: its name, the image size it works at, and its translators.

    With ``context`` K > 0 (2.5-D) a translator takes each slice's neighbourhood,
    (N, H, W, 2K + 1) images (:mod:`colab_utils.data.context`), and returns the
    slice's translation, (N, H, W, 1); the mask is the slice's.
    """

    name: str
    image_size: int | None
    translators: dict[str, Translator] = field(default_factory=dict)
    source: str = ""
    # The dtype policy the generators compute in ("" for the Simple baseline).
    policy: str = ""
    context: int = 0

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
        return middle(viz.translate(generator, np.asarray(images, np.float32), batch_size))
    return translate


def export_generators(model, run: RunDir) -> dict:
    """Save both generators of a trained model as ``.keras`` files in ``run.export``
    (each written atomically); return their paths."""
    run.export.mkdir(parents=True, exist_ok=True)
    paths = {}
    for direction in DIRECTIONS:
        final = run.generator(direction)
        tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
        getattr(model, f"gen_{direction}").save(tmp)
        os.replace(tmp, final)
        paths[f"gen_{direction}"] = final
    return paths


def load_generator(path, precision: str | None = None) -> keras.Model:
    """Load an exported generator (``.keras``).

    ``precision``: ``None`` computes in the dtype policy it was trained with;
    ``auto`` or a policy name rebuilds it under that policy (see
    :func:`colab_utils.runtime.precision.with_policy`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator file not found: {path}")
    model = keras.saving.load_model(path, compile=False)
    if precision is None:
        return model
    policy = resolve_policy(precision)
    return model if compute_policy(model) == policy else with_policy(model, policy)


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
            ``auto`` (mixed precision where this hardware supports it) or a Keras
            policy name to translate in that policy instead.

    Raises:
        FileNotFoundError: Nothing to load at ``source``.
        ValueError: A run that has not finished exporting, or an unknown direction.
    """
    source = Path(source)
    if source.is_dir():
        return _load_run(RunDir(source), batch_size, precision)
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
    generator = load_generator(source, precision)
    size = generator.input_shape[1]
    return Method(source.stem, size, {direction: keras_translator(generator, batch_size)},
                  str(source), compute_policy(generator),
                  context_of(int(generator.input_shape[-1])))


def _load_run(run: RunDir, batch_size: int, precision: str | None) -> Method:
    config = run.config()
    policy = ""
    if config.model == "simple":
        baseline = SimpleBaseline.load(run.simple_file)
        translators = {d: baseline.translator(d) for d in DIRECTIONS}
    else:
        translators = {}
        for d in DIRECTIONS:
            path = run.generator(d)
            if not path.is_file():
                raise ValueError(f"{path}: missing; the run has not finished (re-run its "
                                 "train command to resume and export)")
            generator = load_generator(path, precision)
            policy = compute_policy(generator)
            translators[d] = keras_translator(generator, batch_size)
    return Method(config.model, config.image_size, translators, str(run.path), policy,
                  config.context_slices)


def preprocessing_settings(source) -> dict:
    """The slice size and intensity clipping a model's training data was made with
    (from ``RUN/data.json``; preprocessing defaults when unknown)."""
    from ..config import DataConfig

    defaults = DataConfig()
    settings = {"slice_size": defaults.slice_size, "clip_low": defaults.clip_low,
                "clip_high": defaults.clip_high}
    source = Path(source)
    if source.is_dir():
        recorded = RunDir(source).data_record().get("preprocess", {})
        if "size" in recorded:  # stores of version 1 called it size
            recorded = {**recorded, "slice_size": recorded["size"]}
        settings.update({k: recorded[k] for k in settings if k in recorded})
    return settings
