"""Models that travel: a trained run as one archive, and that archive loaded anywhere.

``export_model(run, dest)`` writes ``NAME.model.zip``::

    model.json         format, method, image size, 2.5-D context, channels, dtype policy,
                       the preprocessing the model expects (slice size, clipping),
                       the run's settings, the data (source, subjects of each split,
                       licence), the metrics on validation and test (with n)
    MODEL_CARD.md      the same for a reader
    gen_t1_to_t2.keras, gen_t2_to_t1.keras   the generators (Keras' own format)
    simple_baseline.json                     (the Simple baseline instead)

``load_model(source)`` takes such an archive from a path, from an ``https://`` URL
(with its SHA-256: a model from someone else's link is verified before it is
opened), or a single generator from the Hugging Face Hub in Keras' own form
(``hf://owner/name``, :func:`keras.saving.load_model`), and returns a
:class:`~colab_utils.evaluation.inference.Method` and the preprocessing it
expects. Archives are unpacked, member by member checked, into a cache folder
named by their SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

from .. import __version__
from ..config import DIRECTIONS
from ..data.store import SliceStore
from ..fileio import atomic_write_bytes, read_csv
from ..log import get_logger
from ..training.rundir import RunDir
from .inference import Method, load_method, preprocessing_settings

logger = get_logger(__name__)

FORMAT = 1
SUFFIX = ".model.zip"
# Licences of the data the models of each source are trained on.
LICENCES = {"phantom": "a phantom generated from the MNI ICBM152 templates (their terms: "
                       "copy and distribute with the copyright notice)",
            "ixi": "IXI, CC BY-SA 3.0", "folder": "the user's own data (their terms)",
            "gdrive": "the user's own data (their terms)"}


def export_model(run, dest) -> Path:
    """Write a finished run as one archive (see the module docstring).

    Args:
        run: A run directory whose training finished (its generators exported).
        dest: The archive's path, or a folder to put ``RUN.model.zip`` in.

    Raises:
        ValueError: The run has not finished.
    """
    run = RunDir(run)
    config = run.config()
    files = ([run.simple_file] if config.model == "simple"
             else [run.generator(d) for d in DIRECTIONS])
    missing = [f for f in files if not f.is_file()]
    if missing or run.trained_step() is None:
        what = missing[0].name if missing else "summary.json"
        raise ValueError(f"{run.path}: the run has not finished (no {what}); train it to the "
                         "end, then export it")
    dest = Path(dest)
    if dest.is_dir() or not dest.name.endswith(SUFFIX):
        dest = dest / f"{run.name}{SUFFIX}"
    card = model_record(run)
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.json", json.dumps(card, indent=2) + "\n")
        zf.writestr("MODEL_CARD.md", model_card(card))
        for file in files:
            zf.write(file, file.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, buffer.getvalue())
    logger.info("%s: %s exported (%.1f MB; sha256 %s)", dest, config.model,
                dest.stat().st_size / 1e6, sha256(dest))
    return dest


def model_record(run: RunDir) -> dict:
    """What ``model.json`` says of a run (see the module docstring)."""
    config = run.config()
    summary, data = run.summary(), run.data_record()
    store = SliceStore(data["data"]) if data.get("data") else None
    source = (data.get("preprocess") or {}).get("source", "unknown")
    metrics = {}
    for split in ("val", "test"):
        table = run.metrics(split) / "per_subject.csv"
        if table.is_file():
            rows = read_csv(table)
            metrics[split] = {d: _summary([r for r in rows if r["direction"] == d])
                              for d in DIRECTIONS}
    return {
        "format": FORMAT, "colab_utils": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": run.name, "method": config.model, "image_size": config.image_size,
        "context_slices": config.context_slices, "channels": config.channels,
        "policy": summary.get("policy"), "trained_steps": summary.get("global_step"),
        "preprocess": preprocessing_settings(run.path), "settings": config.to_dict(),
        "data": {"store": store.path.name if store else None, "source": source,
                 "phantom_kind": (data.get("preprocess") or {}).get("phantom_kind"),
                 "subjects": data.get("subjects", {}),
                 "licence": LICENCES.get(source, "unknown")},
        "metrics": metrics}


def _summary(rows: list[dict]) -> dict:
    import numpy as np

    out = {"n_subjects": len(rows)}
    for metric in ("ssim", "psnr", "mae"):
        values = np.asarray([r[f"{metric}_masked"] for r in rows], float)
        out[metric] = [round(float(values.mean()), 4), round(float(values.std()), 4)] \
            if len(values) else None
    return out


def model_card(card: dict) -> str:
    """The model card: what the model is, what it was trained on, how well it does."""
    lines = [f"# {card['method']} T1 ↔ T2 ({card['run']})", "",
             f"Exported by colab_utils {card['colab_utils']} on {card['created']}.", "",
             "## The model", "",
             f"- method `{card['method']}`, {card['image_size']} px, 2.5-D context "
             f"{card['context_slices']}, trained {card['trained_steps']} steps in "
             f"{card['policy'] or 'float32'}",
             f"- expects scans preprocessed as its training data: registered to MNI152, "
             f"clipped to the {card['preprocess']['clip_low']}–"
             f"{card['preprocess']['clip_high']}th percentiles inside the brain, axial "
             f"slices of {card['preprocess']['slice_size']} px "
             "(`python -m colab_utils synthesize --model THIS.zip` does it)", "",
             "## The data", "",
             f"- source `{card['data']['source']}`"
             + (f" (kind `{card['data']['phantom_kind']}`: a phantom, not real subjects)"
                if card["data"]["source"] == "phantom" else ""),
             f"- licence of the training data: {card['data']['licence']}"]
    for split, subjects in (card["data"]["subjects"] or {}).items():
        if subjects:
            lines.append(f"- {split}: {len(subjects)} subjects")
    lines += ["", "## How well it does (masked, per subject: mean ± std, n)", ""]
    if not card["metrics"]:
        lines.append("Not evaluated before export.")
    for split, directions in card["metrics"].items():
        for direction, values in directions.items():
            if values.get("ssim"):
                lines.append(f"- {split}, {direction.replace('_to_', ' → ').upper()}: SSIM "
                             f"{values['ssim'][0]:.3f} ± {values['ssim'][1]:.3f}, PSNR "
                             f"{values['psnr'][0]:.1f} ± {values['psnr'][1]:.1f} dB "
                             f"(n = {values['n_subjects']})")
    return "\n".join(lines) + "\n"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where unpacked and downloaded models are kept (``$COLAB_UTILS_CACHE`` or
    ``~/.cache/colab_utils``)."""
    import os

    return Path(os.environ.get("COLAB_UTILS_CACHE", Path.home() / ".cache" / "colab_utils"))


def load_model(source, *, sha256_digest: str | None = None, direction: str | None = None,
               batch_size: int = 8, precision: str | None = None) -> tuple[Method, dict]:
    """A trained model from an archive (a path or an ``https://`` URL), a run directory,
    an exported file, or a Keras model on the Hugging Face Hub (``hf://owner/name``, one
    direction); returns ``(method, preprocessing)``.

    Args:
        source: See above.
        sha256_digest: The archive's SHA-256; required for a URL (a model from a link is
            verified before it is opened), checked for a local archive when given.
        direction: For ``hf://`` and single files: the direction the model translates.
        batch_size, precision: As :func:`~colab_utils.evaluation.inference.load_method`.

    Raises:
        ValueError: A wrong checksum, a URL without one, an archive of a newer format, or
            not a model archive (the message names the file).
        FileNotFoundError: Nothing at ``source``.
    """
    text = str(source)
    if text.startswith("hf://"):
        return _load_hub(text, direction, batch_size, precision)
    if text.startswith(("https://", "http://")):
        if not sha256_digest:
            raise ValueError(f"{text}: give the archive's SHA-256 (sha256_digest) to load a "
                             "model from a link: it is verified before it is opened")
        from ..data.download import download

        path = download(text, cache_dir() / "downloads" / f"{sha256_digest}{SUFFIX}",
                        checksum=f"sha256:{sha256_digest}", progress=False)
        return _load_archive(path, batch_size, precision)
    path = Path(source)
    if path.is_file() and path.name.endswith(".zip"):
        if sha256_digest and sha256(path) != sha256_digest.lower():
            raise ValueError(f"{path}: SHA-256 {sha256(path)}, expected {sha256_digest}")
        return _load_archive(path, batch_size, precision)
    method = load_method(path, direction=direction, batch_size=batch_size, precision=precision)
    return method, preprocessing_settings(path)


def _load_archive(path: Path, batch_size: int, precision: str | None) -> tuple[Method, dict]:
    from ..data.archive import safe_extract

    try:
        with zipfile.ZipFile(path) as zf:
            card = json.loads(zf.read("model.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a model archive of colab_utils (expected a zip with "
                         f"model.json; {err})") from err
    if not isinstance(card.get("format"), int) or card["format"] > FORMAT:
        raise ValueError(f"{path}: a model archive of format {card.get('format')!r}, written by "
                         f"colab_utils {card.get('colab_utils', '?')}; this version reads "
                         f"format {FORMAT} and earlier: install a newer colab_utils")
    folder = cache_dir() / "models" / sha256(path)
    if not (folder / "model.json").is_file():
        safe_extract(path, folder)
    translators = {}
    if card["method"] == "simple":
        method = load_method(folder / "simple_baseline.json", batch_size=batch_size)
    else:
        parts = [load_method(folder / f"gen_{d}.keras", direction=d, batch_size=batch_size,
                             precision=precision, channels=card.get("channels", 1))
                 for d in DIRECTIONS]
        translators = {d: m.translators[d] for d, m in zip(DIRECTIONS, parts)}
        method = Method(card["method"], card["image_size"], translators, str(path),
                        parts[0].policy, card.get("context_slices", 0))
    logger.info("%s: %s, %s px, trained on %s (%s)", path.name, card["method"],
                card["image_size"], card["data"]["source"], card["data"]["licence"])
    return method, card["preprocess"]


def _load_hub(address: str, direction: str | None, batch_size: int, precision: str | None):
    import keras

    from .inference import keras_translator

    if direction not in DIRECTIONS:
        raise ValueError(f"{address}: say which direction the model translates "
                         f"(direction: one of {list(DIRECTIONS)})")
    generator = keras.saving.load_model(address, compile=False)
    from ..runtime.precision import compute_policy, inference_policy, with_policy

    trained = compute_policy(generator)
    if inference_policy(trained, precision) != trained:
        generator = with_policy(generator, inference_policy(trained, precision))
    size = generator.input_shape[1]
    method = Method(address, size, {direction: keras_translator(generator, batch_size)},
                    address, context=(int(generator.input_shape[-1]) - 1) // 2)
    return method, preprocessing_settings(address)
