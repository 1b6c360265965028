"""Trained methods for inference: load any method, and translate slices or planes.

:func:`load_method` takes a run directory (any ``model``: the exported generators,
or the Simple baseline's JSON) or a single exported file and returns a
:class:`Method`. A method translates a split of slices (:meth:`Method.translate_split`)
or the consecutive planes of a volume (:meth:`Method.translate_planes`); for a 2.5-D
method it gathers each slice's neighbourhood and keeps the middle channel of the
output. This is the one place where inference adds and strips the 2.5-D context:
callers pass plain slices and get plain translations back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np

from ..config import DIRECTIONS, DataConfig
from ..data.context import context_of, middle, plane_rows, rows_of, stack
from ..data.slices import SliceSet
from ..models import networks  # noqa: F401  (registers the custom layers .keras files name)
from ..models.simple import SimpleBaseline
from ..models.translation import generate
from ..runtime.precision import compute_policy, inference_policy, with_policy
from ..training.rundir import RunDir
from ..validation import check_choice

# (images, mask) -> images on (N, H, W, C) float32 in [0, 1]: neighbourhoods in for a
# 2.5-D method, the middle slice's translation out.
Translator = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass
class Method:
    """A trained method: its name, the image size it works at, and its translators.

    With ``context`` K > 0 (2.5-D) a translator takes each slice's neighbourhood,
    (N, H, W, (2K + 1)·channels) images (:mod:`colab_utils.data.context`), and returns
    the slice's translation, (N, H, W, channels); :meth:`translate_split` and
    :meth:`translate_planes` build the neighbourhoods.
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
        """The translator of ``direction`` on images as it takes them (neighbourhoods for
        a 2.5-D method)."""
        check_choice("direction", direction, tuple(self.translators))
        return self.translators[direction](images, mask)

    def translate_split(self, slices: SliceSet, direction: str, rows=None) -> np.ndarray:
        """The translation of a split's slices in ``direction`` ((N, H, W, 1), or the
        ``rows`` given): each slice with its neighbours from the whole split for a 2.5-D
        method. Masks are the split's (``slices.mask``; non-zero pixels without one)."""
        contrast = direction.split("_to_")[0]
        source = getattr(slices, contrast)
        rows = np.arange(len(source)) if rows is None else np.asarray(rows)
        if self.context:
            images = stack(source, rows_of(slices, self.context, contrast)[rows])
        else:
            images = source[rows]
        mask = None if slices.mask is None else slices.mask[rows]
        return self.translate(images, mask, direction=direction)

    def translate_planes(self, planes: np.ndarray, masks: np.ndarray | None, direction: str,
                         batch_size: int = 16) -> np.ndarray:
        """The translation of a volume's consecutive planes (N, H, W, 1), in batches; the
        neighbours of a 2.5-D method are the planes below and above (repeated at the
        ends)."""
        outputs = []
        for start in range(0, len(planes), batch_size):
            index = np.arange(start, min(start + batch_size, len(planes)))
            if self.context:
                images = stack(planes, plane_rows(len(planes), self.context)[index])
            else:
                images = planes[index]
            outputs.append(np.asarray(self.translate(
                images, None if masks is None else masks[index], direction=direction),
                np.float32))
        return np.concatenate(outputs)


def keras_translator(generator, batch_size: int = 8, channels: int = 1) -> Translator:
    """Wrap a Keras generator (working in [-1, 1]) as a translator on [0, 1] images; of a
    2.5-D generator's output it keeps the middle slice's ``channels``.

    Network outputs are not masked: what a generator paints outside the brain
    is part of its result (unmasked metrics see it).
    """
    def translate(images, mask=None):
        return middle(generate(generator, np.asarray(images, np.float32), batch_size),
                      channels)
    return translate


def load_generator(path, precision: str | None = None) -> keras.Model:
    """Load an exported generator (``.keras``).

    ``precision``: see :func:`colab_utils.runtime.precision.inference_policy`
    (``None``: as trained; ``auto``: the fastest policy of this hardware); a policy
    other than the trained one rebuilds the generator under it
    (:func:`colab_utils.runtime.precision.with_policy`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generator file not found: {path}")
    model = keras.saving.load_model(path, compile=False)
    trained = compute_policy(model)
    policy = inference_policy(trained, precision)
    return model if policy == trained else with_policy(model, policy)


def load_method(source, *, direction: str | None = None, batch_size: int = 8,
                precision: str | None = None, channels: int = 1) -> Method:
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
        channels: For a single ``.keras`` file: the channels of one slice (a run
            directory records its own); its 2.5-D context follows from its inputs.

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
    inputs = int(generator.input_shape[-1])
    if inputs % channels or (inputs // channels) % 2 == 0:
        raise ValueError(f"{source}: expected an odd number of {channels}-channel slices as "
                         f"input (a slice and its neighbours), got {inputs} channels")
    return Method(source.stem, generator.input_shape[1],
                  {direction: keras_translator(generator, batch_size, channels)},
                  str(source), compute_policy(generator), context_of(inputs, channels))


def loaded_method(source, *, batch_size: int = 8, precision: str | None = None) -> Method:
    """:func:`load_method`, kept for the next call on the same finished run (the
    pipeline scores every run on validation, then on test). A run's models are the same
    while its :meth:`~colab_utils.training.rundir.RunDir.version` is."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no run directory or model file at {source}")
    version = RunDir(source).version() if source.is_dir() else source.stat().st_mtime_ns
    return _load_cached(str(source.resolve()), batch_size, precision, version)


@lru_cache(maxsize=8)
def _load_cached(source: str, batch_size: int, precision: str | None, version) -> Method:
    return load_method(source, batch_size=batch_size, precision=precision)


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
            translators[d] = keras_translator(generator, batch_size, config.channels)
    return Method(config.model, config.image_size, translators, str(run.path), policy,
                  config.context_slices)


def preprocessing_settings(source) -> dict:
    """The slice size and intensity clipping a model's training data was made with
    (from ``RUN/data.json``; preprocessing defaults when unknown)."""
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
