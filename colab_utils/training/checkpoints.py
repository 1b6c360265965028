"""Crash-safe checkpoints: numbered ``.npz`` files committed by a JSON sidecar.

A checkpoint ``ckpt-000001234`` is two files:

* ``ckpt-000001234.npz``: every array of the training state (uncompressed);
* ``ckpt-000001234.json``: metadata plus the SHA-256 and size of the ``.npz``.

Both are written to a temporary name, flushed to disk and renamed, and the
JSON is written last: a checkpoint without its JSON was interrupted and is
ignored. On load the newest checkpoint whose hash matches and whose arrays
read back is used; a corrupt or half-written one is skipped with a warning
and the one before it is tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{9})\.json$")


class CheckpointWarning(UserWarning):
    """A checkpoint was unusable and an older one was used instead."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class CheckpointManager:
    """Saves and restores numbered training-state checkpoints in ``directory``.

    Args:
        directory: Folder for the checkpoint files (created if missing).
        keep: How many of the newest checkpoints to keep.
    """

    def __init__(self, directory, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep: expected >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = int(keep)

    def _paths(self, step: int) -> tuple[Path, Path]:
        stem = f"ckpt-{step:09d}"
        return self.directory / f"{stem}.npz", self.directory / f"{stem}.json"

    def steps(self) -> list[int]:
        """Steps of the committed checkpoints (those with a JSON sidecar), oldest first."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
        """Write a checkpoint for ``step`` and delete the oldest beyond ``keep``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        npz_path, json_path = self._paths(step)
        tmp = npz_path.with_name(f".{npz_path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, npz_path)
        record = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "npz": npz_path.name,
            "npz_bytes": npz_path.stat().st_size,
            "npz_sha256": _sha256(npz_path),
            "meta": meta or {},
        }
        atomic_write_bytes(json_path, (json.dumps(record, indent=2) + "\n").encode())
        self._prune()
        return npz_path

    def _prune(self) -> None:
        for step in self.steps()[:-self.keep]:
            npz_path, json_path = self._paths(step)
            json_path.unlink(missing_ok=True)  # uncommit first, then delete the data
            npz_path.unlink(missing_ok=True)
        for leftover in self.directory.glob(".ckpt-*.tmp-*"):
            if leftover.stat().st_mtime < time.time() - 3600:
                leftover.unlink(missing_ok=True)

    def load(self, step: int) -> tuple[dict[str, np.ndarray], dict]:
        """Load and verify one checkpoint; raise ``ValueError`` naming the file if it is bad."""
        npz_path, json_path = self._paths(step)
        try:
            record = json.loads(json_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{json_path}: unreadable checkpoint record ({err})") from err
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{json_path}: expected checkpoint format {FORMAT_VERSION}, "
                             f"got {record.get('format_version')!r}")
        if not npz_path.is_file():
            raise ValueError(f"{npz_path}: checkpoint data file is missing")
        size = npz_path.stat().st_size
        if size != record.get("npz_bytes"):
            raise ValueError(f"{npz_path}: expected {record.get('npz_bytes')} bytes, got {size} "
                             "(truncated or overwritten)")
        digest = _sha256(npz_path)
        if digest != record.get("npz_sha256"):
            raise ValueError(f"{npz_path}: SHA-256 mismatch, expected "
                             f"{record.get('npz_sha256')}, got {digest} (corrupt)")
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as err:  # zipfile/numpy raise many types for bad files
            raise ValueError(f"{npz_path}: checkpoint data unreadable ({err})") from err
        return arrays, record["meta"]

    def latest(self) -> tuple[int, dict[str, np.ndarray], dict] | None:
        """The newest checkpoint that verifies, as ``(step, arrays, meta)``; ``None`` if none.

        Unusable checkpoints are skipped with a :class:`CheckpointWarning`.
        """
        for step in reversed(self.steps()):
            try:
                arrays, meta = self.load(step)
            except ValueError as err:
                warnings.warn(f"skipping unusable checkpoint: {err}", CheckpointWarning,
                              stacklevel=2)
                continue
            return step, arrays, meta
        return None


def collect_state(groups: dict[str, list]) -> dict[str, np.ndarray]:
    """Snapshot variables as ``{"group/00012": array}``, keyed by position.

    Keys are positions, not variable paths: Keras numbers layer names per
    process, so paths differ between an interrupted run and its resumption,
    while the order of a model's variables does not.
    """
    return {f"{group}/{i:05d}": np.asarray(v.numpy())
            for group, variables in groups.items() for i, v in enumerate(variables)}


def restore_state(groups: dict[str, list], arrays: dict[str, np.ndarray], source: str
                  ) -> dict[str, str]:
    """Assign a :func:`collect_state` snapshot back; raise ``ValueError`` on any mismatch.

    Loss-scale groups (``*_loss_scale``, the state ``mixed_float16`` adds to an
    optimizer) may be on one side only: a checkpoint of another dtype policy resumes,
    its loss scale dropped or a new one started. Checkpoints of earlier versions held
    the loss scale's four variables at the front of the optimizer's group; they are
    split off first.

    Returns:
        ``{group: what happened}`` for the groups on one side only (empty when the
        checkpoint matches the model exactly).
    """
    arrays = _split_legacy_loss_scale(groups, arrays)
    stored_groups = {k.split("/", 1)[0] for k in arrays}
    changes = {}
    for group in sorted(stored_groups - set(groups)):
        if not group.endswith("_loss_scale"):
            raise ValueError(f"{source}: holds variables of {group!r}, which this model does "
                             "not have; was it written by a different configuration?")
        changes[group] = "dropped (this dtype policy scales no loss)"
    for group in sorted(set(groups) - stored_groups):
        if not group.endswith("_loss_scale"):
            raise ValueError(f"{source}: expected {len(groups[group])} {group!r} variables, "
                             "got 0; was it written by a different configuration?")
        changes[group] = "started afresh (the checkpoint's dtype policy scaled no loss)"
    present = {g: v for g, v in groups.items() if g in stored_groups}
    for group, variables in present.items():
        stored = sorted(k for k in arrays if k.startswith(f"{group}/"))
        if len(stored) != len(variables):
            raise ValueError(f"{source}: expected {len(variables)} '{group}' variables, got "
                             f"{len(stored)}; was it written by a different configuration?")
        for i, v in enumerate(variables):
            value = arrays[f"{group}/{i:05d}"]
            if tuple(value.shape) != tuple(v.shape):
                raise ValueError(f"{source}: variable {group}/{i} ({v.path}) expected shape "
                                 f"{tuple(v.shape)}, got {tuple(value.shape)}")
    for group, variables in present.items():
        for i, v in enumerate(variables):
            v.assign(arrays[f"{group}/{i:05d}"])
    return changes


# The variables a LossScaleOptimizer adds in front of its inner optimizer's:
# iteration, learning_rate, step_counter, dynamic_scale.
_LEGACY_LOSS_SCALE = 4


def _split_legacy_loss_scale(groups: dict, arrays: dict) -> dict:
    """A checkpoint of an earlier version under ``mixed_float16`` kept the loss scale's
    variables inside the optimizer's group: move them to their own group."""
    out = dict(arrays)
    for name in ("gen_optimizer", "disc_optimizer"):
        stored = sorted(k for k in arrays if k.startswith(f"{name}/"))
        if f"{name}_loss_scale/00000" in arrays or name not in groups or \
                len(stored) != len(groups[name]) + _LEGACY_LOSS_SCALE:
            continue
        for i, key in enumerate(stored):
            del out[key]
            if i < _LEGACY_LOSS_SCALE:
                out[f"{name}_loss_scale/{i:05d}"] = arrays[key]
            else:
                out[f"{name}/{i - _LEGACY_LOSS_SCALE:05d}"] = arrays[key]
    return out
