"""A slice store: the preprocessed dataset, and the one owner of its files.

::

    STORE/preprocess.json     format, settings, splits, paired splits, the content
                              version (see below), subjects left out
    STORE/index.csv           split, subject, slice, modality, shard, row
    STORE/qc.csv, qc/ID.png   registration QC per subject, and its montage
    STORE/SPLIT/shard-000.npz t1 (N, size, size), t2, t1_mask, t2_mask
    STORE/subjects/ID.npz     one subject's slices, mask and record (resumability)
    STORE/volumes/ID.npz      reference volumes for whole-volume evaluation (a cache)

:mod:`colab_utils.data.preprocess` writes a store through :class:`SliceStore`; every
other module reads it through one. No other code opens these files by name.

**The content version.** When the shards are (re)written, the store records a
version: a hash of what they hold (the format, the per-subject settings, each
subject's record and split, the modalities used). "Has the data changed?" has one
answer everywhere: the version. The split cache of this module keys on it, runs
record it, and re-assembling a store whose version would not change rewrites
nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes, read_csv, read_record, write_csv, write_record
from ..log import get_logger
from .slices import SliceSet, as_stack, checked, fit_to_size, load_files_split, open_npz

logger = get_logger(__name__)

FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
# Settings that change what is computed per subject (the rest only split the store).
SUBJECT_FIELDS = ("slices", "seed_slice", "slice_range", "min_brain_fraction", "slice_size",
                  "clip_low", "clip_high")
INDEX_COLUMNS = ("split", "subject", "slice", "modality", "shard", "row")
QC_COLUMNS = ("subject", "split", "outlier", "qc_reasons", "warnings", "corr_t1_template",
              "volume_scale", "rim_ratio", "mask_dice", "mask_fallback", "mask_reason",
              "skull_stripped", "slice_mm", "t1_skew", "t2_skew", "corr_t1_t2",
              "metric_t1_to_template", "metric_t2_to_t1",
              "start_t1_to_template", "start_t2_to_t1", "n_slices", "seconds", "t1", "t2",
              "error")


class SliceStore:
    """The files of one slice store (see the module docstring) and their readers."""

    def __init__(self, path):
        self.path = Path(path)
        self.record_file = self.path / "preprocess.json"
        self.index_file = self.path / "index.csv"
        self.qc_file = self.path / "qc.csv"
        self.qc_images = self.path / "qc"
        self.subjects_dir = self.path / "subjects"
        self.volumes_dir = self.path / "volumes"

    def __repr__(self) -> str:
        return f"SliceStore({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- names -------------------------------------------------------------------------
    def subject_file(self, subject: str) -> Path:
        return self.subjects_dir / f"{subject}.npz"

    def qc_image(self, subject: str) -> Path:
        return self.qc_images / f"{subject}.png"

    def volume_file(self, subject: str) -> Path:
        return self.volumes_dir / f"{subject}.npz"

    def shard_file(self, split: str, shard: int) -> Path:
        return self.path / split / f"shard-{shard:03d}.npz"

    # -- what it holds -----------------------------------------------------------------
    @staticmethod
    def holds_store(path) -> bool:
        """Whether ``path`` is an assembled slice store (it has an index)."""
        return (Path(path) / "index.csv").is_file()

    def exists(self) -> bool:
        return self.holds_store(self.path)

    def record(self) -> dict:
        """``preprocess.json`` (``{}`` before the first subject was processed)."""
        return read_record(self.record_file)

    def settings(self) -> dict:
        """The data settings the store was made with (``DataConfig`` as a dict)."""
        return self.record().get("config", {})

    @property
    def version(self) -> str | None:
        """The content version (module docstring); stores of earlier versions of this
        package, which did not record one, get one from their index file's size and time."""
        recorded = self.record().get("content_version")
        if recorded:
            return recorded
        if not self.index_file.is_file():
            return None
        stat = self.index_file.stat()
        return f"index-{stat.st_size}-{stat.st_mtime_ns}"

    def splits(self) -> dict[str, list[str]]:
        """``{split: sorted subject IDs}`` as recorded."""
        return {k: sorted(v) for k, v in self.record().get("splits", {}).items()}

    def subjects(self, split: str) -> list[str] | None:
        """The subjects of ``split`` (``None``: the store records no splits)."""
        return self.splits().get(split)

    def recorded_splits(self, config) -> dict[str, str]:
        """``{subject: split}`` as recorded, when the store was split with the split
        settings of ``config`` (``{}`` otherwise: new split settings split afresh)."""
        if self.record().get("split_settings") != split_settings(config):
            return {}
        return {s: split for split, members in self.splits().items() for s in members}

    def left_out(self) -> list[str]:
        return list(self.record().get("left_out", []))

    def paired(self, split: str) -> bool:
        return bool(self.record().get("paired", {}).get(split, False))

    def index_rows(self, split: str | None = None) -> list[dict]:
        rows = read_csv(self.index_file, text_columns={"split", "subject", "modality"})
        return [r for r in rows if split is None or r["split"] == split]

    def qc_rows(self) -> list[dict]:
        """``qc.csv``: one row per subject (``error`` set for a subject that failed)."""
        if not self.qc_file.is_file():
            return []
        return read_csv(self.qc_file)

    def subject_record(self, subject: str) -> dict | None:
        """A processed subject's record (``None``: not processed, or by a version without
        subject masks, or damaged: it is processed again)."""
        path = self.subject_file(subject)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if "mask" not in data.files:
                    return None
                return json.loads(str(data["record"]))
        except Exception:  # a damaged file is redone, never used
            return None

    def subject_scans(self, subject: str) -> tuple[Path, Path]:
        """The T1 and T2 files a subject was made from (its record).

        Raises:
            FileNotFoundError: The subject is not in the store, or a scan is no longer
                where the store recorded it.
        """
        record = self.subject_record(subject)
        if record is None:
            raise FileNotFoundError(f"{self.subject_file(subject)}: subject {subject!r} is "
                                    f"not in the slice store {self.path}")
        files = Path(record["t1"]), Path(record["t2"])
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(
                    f"{file}: {subject}'s scan, recorded in {self.subject_file(subject)}, is "
                    "no longer there. Put it back or preprocess again from where the scans "
                    "are now")
        return files

    # -- slices ------------------------------------------------------------------------
    def load(self, split: str, *, channels: int | None = None,
             required: bool = True) -> SliceSet | None:
        """One split as stored (read from the shards every call; :meth:`split` caches).

        Raises:
            FileNotFoundError: A required split that the store lacks, or a missing shard.
            ValueError: Shards that disagree with the index.
        """
        rows = self.index_rows(split) if self.index_file.is_file() else []
        if not rows:
            if required:
                raise FileNotFoundError(f"{self.index_file}: the store has no {split!r} slices")
            return None
        arrays = {"t1": [], "t2": [], "t1_mask": [], "t2_mask": []}
        for shard in sorted({int(r["shard"]) for r in rows}):
            path = self.shard_file(split, shard)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in {self.index_file} is "
                                        "missing; run preprocess on this store to rebuild it")
            with open_npz(path) as data:
                for modality in ("t1", "t2"):
                    stack = data[modality]
                    if len(stack):
                        arrays[modality].append(as_stack(stack, f"{path}[{modality}]",
                                                         channels))
                        arrays[f"{modality}_mask"].append(data[f"{modality}_mask"][..., None])
        info = {m: [r for r in rows if r["modality"] == m] for m in ("t1", "t2")}
        t1, t2 = (np.concatenate(arrays[m]) for m in ("t1", "t2"))
        for modality, stack in (("t1", t1), ("t2", t2)):
            if len(stack) != len(info[modality]):
                raise ValueError(f"{self.path / split}: {self.index_file.name} lists "
                                 f"{len(info[modality])} {modality.upper()} slices, the "
                                 f"shards hold {len(stack)}")
        masks = {m: np.concatenate(arrays[f"{m}_mask"]).astype(bool) for m in ("t1", "t2")}
        return checked(SliceSet(
            t1, t2, self.paired(split), f"{self.path}[{split}]",
            t1_subjects=np.array([r["subject"] for r in info["t1"]]),
            t2_subjects=np.array([r["subject"] for r in info["t2"]]),
            t1_slices=np.array([int(r["slice"]) for r in info["t1"]]),
            t2_slices=np.array([int(r["slice"]) for r in info["t2"]]),
            mask=masks["t1"], t2_mask=masks["t2"]))

    def split(self, split: str, *, size: int | None = None, channels: int | None = None,
              required: bool = True) -> SliceSet | None:
        """:meth:`load` at ``size`` (averaged down), read once per process for each
        content version: the pipeline trains and scores every method on the same slices."""
        return _cached_split(str(self.path.resolve()), self.version, split, size, channels,
                             required)

    # -- writing (preprocess) ----------------------------------------------------------
    def open_for(self, config) -> None:
        """Start (or continue) a store with the data settings ``config``; refuse a store
        made with other per-subject settings or by an older format."""
        record = self.record()
        if record:
            if record.get("version") != FORMAT_VERSION:
                raise ValueError(
                    f"{self.record_file}: this store was made by an earlier version of "
                    "colab_utils (no per-subject brain masks, registration of the head); "
                    "preprocess into a new store directory")
            saved = record.get("config", {})
            mine = {k: config.to_dict()[k] for k in SUBJECT_FIELDS}
            changed = sorted(k for k in mine if saved.get(k) != mine[k])
            if changed:
                raise ValueError(f"{self.record_file}: this store was made with other "
                                 f"settings ({changed}); use the same settings or a new "
                                 "store directory")
        self.subjects_dir.mkdir(parents=True, exist_ok=True)
        write_record(self.record_file, {**record, "version": FORMAT_VERSION,
                                        "config": config.to_dict()})

    def write_subject(self, subject: str, arrays: dict, record: dict, montage: bytes) -> None:
        """A processed subject: its slices and mask, its record, its QC montage (PNG)."""
        self.qc_images.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.qc_image(subject), montage)
        _savez(self.subject_file(subject), **arrays, record=json.dumps(record))

    def commit(self, assignment: dict[str, str], records: dict[str, dict], failures: dict,
               *, unpaired_modality: dict[str, str] | None, shard_size: int,
               split_settings: dict | None = None) -> bool:
        """Write the shards, ``index.csv``, ``qc.csv`` and the record for ``assignment``
        (``{subject: split}``). Returns ``False`` when the store already held exactly
        this content (nothing is rewritten)."""
        version = content_version(self.settings(), assignment, records, unpaired_modality)
        qc = [{**records[s], "split": assignment.get(s, "excluded")} for s in sorted(records)]
        qc += [{"subject": s, "error": error} for s, error in sorted(failures.items())]
        if self.record().get("content_version") == version and self.exists():
            write_csv(self.qc_file, qc, QC_COLUMNS)  # a failure may have been retried
            if self.record().get("split_settings") != split_settings:
                write_record(self.record_file, {**self.record(),
                                                "split_settings": split_settings})
            return False
        rows = []
        for split in SPLITS:
            members = sorted(s for s in assignment if assignment[s] == split)
            use = {s: (unpaired_modality[s],) if unpaired_modality and split == "train"
                   else ("t1", "t2") for s in members}
            rows += self._write_split(split, members, use, shard_size)
        write_csv(self.index_file, rows, INDEX_COLUMNS)
        write_csv(self.qc_file, qc, QC_COLUMNS)
        record = self.record()
        record.update({
            "splits": {k: sorted(s for s in assignment if assignment[s] == k) for k in SPLITS},
            "left_out": sorted(set(records) - set(assignment)),
            "paired": {"train": not unpaired_modality, "val": True, "test": True},
            "split_settings": split_settings, "content_version": version})
        write_record(self.record_file, record)
        return True

    def _write_split(self, split: str, members: list[str], use: dict,
                     shard_size: int) -> list[dict]:
        """Write a split's shards one at a time; return its index rows."""
        folder = self.path / split
        folder.mkdir(exist_ok=True)
        for old in folder.glob("shard-*.npz"):
            old.unlink()
        rows, shard = [], 0
        buffers = {"t1": [], "t2": [], "t1_mask": [], "t2_mask": []}

        def flush():
            nonlocal shard, buffers
            if not buffers["t1"] and not buffers["t2"]:
                return
            _savez(self.shard_file(split, shard),
                   **{m: (np.stack(b) if b else np.zeros((0, 1, 1), np.float32))
                      for m, b in buffers.items()})
            shard, buffers = shard + 1, {k: [] for k in buffers}

        for subject in members:
            with np.load(self.subject_file(subject), allow_pickle=False) as data:
                volumes = {m: data[m] for m in use[subject]}
                masks, zs = data["mask"], data["slices"]
            for i, z in enumerate(zs):
                if max(len(b) for b in buffers.values()) >= shard_size:
                    flush()
                for modality, images in volumes.items():
                    rows.append({"split": split, "subject": subject, "slice": int(z),
                                 "modality": modality, "shard": shard,
                                 "row": len(buffers[modality])})
                    buffers[modality].append(images[i])
                    buffers[f"{modality}_mask"].append(masks[i])
        flush()
        return rows


def split_settings(config) -> dict:
    """The settings a store's split depends on."""
    return {k: getattr(config, k) for k in ("split_seed", "val_fraction", "test_fraction",
                                            "split_file", "exclude_outliers")}


def content_version(settings: dict, assignment: dict, records: dict,
                    unpaired_modality: dict | None) -> str:
    """A short hash of what a store's shards hold (see the module docstring)."""
    subject_settings = {k: settings.get(k) for k in SUBJECT_FIELDS}
    content = {"format": FORMAT_VERSION, "settings": subject_settings,
               "subjects": {s: [assignment[s], records[s],
                                (unpaired_modality or {}).get(s)] for s in sorted(assignment)},
               "shard_size": settings.get("shard_size")}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=4)
def _cached_split(path: str, version, split: str, size, channels, required):
    slices = SliceStore(path).load(split, channels=channels, required=required)
    return fit_to_size(slices, size) if slices is not None and size else slices


def _savez(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def load_split(data, split: str, *, channels: int | None = None, required: bool = True,
               size: int | None = None) -> SliceSet | None:
    """One split of ``data``: a slice store (read through :class:`SliceStore`, cached per
    content version) or any file layout of :func:`colab_utils.data.slices.
    load_files_split`; at ``size`` (averaged down) when given."""
    if isinstance(data, SliceStore) or SliceStore.holds_store(data):
        store = data if isinstance(data, SliceStore) else SliceStore(data)
        return store.split(split, size=size, channels=channels, required=required)
    slices = load_files_split(data, split, channels=channels, required=required)
    return fit_to_size(slices, size) if slices is not None and size else slices
