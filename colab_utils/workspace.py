"""A workspace: the folder (a Colab ``WORKDIR``, or any folder) that holds the slice
stores and the runs of several experiments.

::

    WORKDIR/data/phantom-icbm-1c9e0f2a_store/   a slice store, named from its settings
    WORKDIR/data/phantom-icbm/ icbm152/ ixi/     the scans the stores were made from
    WORKDIR/runs/cyclegan-64px-5d1f3b07/         a run, named from its settings and data
    WORKDIR/runs/comparison/, comparison_val/    the latest comparison (pipeline)

A store's name is a readable part (the source) and a short hash of the settings
that decide what it holds (:func:`store_name`); a run's name, the method, its image
size and a short hash of its settings and of the subjects it trains and validates
on (:func:`run_name`). The same settings come back to the same folder (a run
resumes, a store is reused); other settings get a folder of their own, and
nothing is deleted. :func:`contents` lists what a workspace holds, as the
notebooks show it and ``python -m colab_utils list WORKDIR`` prints it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import RESUMABLE_CHANGES, DataConfig, TrainConfig
from .data.store import SUBJECT_FIELDS, SliceStore
from .fileio import read_record
from .training.rundir import RunDir

# What decides the scans a store is made from (with SUBJECT_FIELDS, what it holds).
SOURCE_FIELDS = ("source", "protocol", "phantom_kind", "phantom_seed", "phantom_lesions",
                 "folder", "gdrive_id")


def short_hash(values) -> str:
    """Eight hex digits of a stable hash of a JSON-able value."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def source_name(data: DataConfig) -> str:
    """The readable part of a store's name: ``phantom-icbm``, ``ixi``, ``ixi-40``,
    ``folder-brats``, ``gdrive``."""
    if data.protocol:
        return data.protocol
    if data.source == "phantom":
        lesions = f"-lesions{data.phantom_lesions}" if (data.phantom_kind == "icbm"
                                                       and data.phantom_lesions) else ""
        return f"phantom-{data.phantom_kind}{lesions}"
    if data.source == "folder" and data.folder:
        return f"folder-{Path(data.folder).name}"
    return data.source


def store_name(data: DataConfig) -> str:
    """A store's folder name: the source and a hash of what decides its slices (the scans'
    source and the per-subject settings; more subjects and other split settings are the
    same store, grown or split again)."""
    values = data.to_dict()
    key = {k: values[k] for k in SOURCE_FIELDS + SUBJECT_FIELDS}
    if data.brain_extractor != "own":  # other masks, another store (own: names as before)
        key["brain_extractor"] = data.brain_extractor
    return f"{source_name(data)}-{short_hash(key)}_store"


def run_name(config: TrainConfig, store=None) -> str:
    """A run's folder name: the method, its image size and a hash of the settings a step
    depends on (not those a resume may change) and of the data it trains on (the store's
    name and the subjects of its training and validation splits)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    data = None
    if store is not None:
        store = SliceStore(store)
        data = {"store": store.path.name,
                "subjects": {k: store.subjects(k) for k in ("train", "val")}}
    return f"{config.model}-{config.image_size}px-{short_hash([settings, data])}"


def contents(root) -> dict:
    """What a workspace holds: ``{"stores": [...], "runs": [...]}``, one row each (see
    :func:`markdown`)."""
    root = Path(root)
    stores = []
    for path in sorted((root / "data").glob("*_store")):
        store = SliceStore(path)
        settings = store.settings()
        splits = store.splits()
        stores.append({
            "store": path.name, "source": settings.get("source", "?"),
            "kind": settings.get("phantom_kind", "") if settings.get("source") == "phantom"
            else "",
            "subjects": "/".join(str(len(splits.get(k, []))) for k in ("train", "val", "test")),
            "slices": settings.get("slices", "?"), "slice_size": settings.get("slice_size"),
            "complete": store.exists()})
    runs = []
    for path in sorted(p for p in (root / "runs").glob("*") if (p / "config.json").is_file()):
        run = RunDir(path)
        config = read_record(run.config_file)
        summary = run.summary()
        total = summary.get("total_steps")
        newest = _newest_checkpoint(run)
        step = summary.get("global_step", newest)
        evaluated = [s for s in ("val", "test") if run.evaluation_record(s)]
        runs.append({
            "run": path.name, "method": config.get("model", "?"),
            "image_size": config.get("image_size"),
            "store": Path(run.data_record().get("data") or "?").name,
            "progress": (f"{step}/{total}" if total else
                         f"{newest} steps" if newest else "not started"),
            "finished": bool(summary), "evaluated": ", ".join(evaluated) or "–",
            "test_scored": bool(run.evaluation_record("test"))})
    return {"stores": stores, "runs": runs}


def _newest_checkpoint(run: RunDir) -> int | None:
    steps = sorted(int(p.stem.split("-")[1]) for p in run.checkpoints.glob("ckpt-*.json"))
    return steps[-1] if steps else None


def markdown(root) -> str:
    """:func:`contents` as two Markdown tables."""
    held = contents(root)
    lines = [f"**Workspace** `{root}`", ""]
    if held["stores"]:
        lines += ["| slice store | source | train/val/test subjects | slices | size |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s['store']}{'' if s['complete'] else ' (incomplete)'} | "
                  f"{s['source']}{' ' + s['kind'] if s['kind'] else ''} | {s['subjects']} | "
                  f"{s['slices']} | {s['slice_size']} |" for s in held["stores"]]
    else:
        lines.append("No slice store yet: notebook 01 (or `python -m colab_utils pipeline`) "
                     "makes one.")
    lines.append("")
    if held["runs"]:
        lines += ["| run | method | px | store | steps | finished | evaluated on |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {r['method']} | {r['image_size']} | {r['store']} | "
                  f"{r['progress']} | {'yes' if r['finished'] else 'no'} | {r['evaluated']} |"
                  for r in held["runs"]]
    else:
        lines.append("No run yet: notebook 02 trains one.")
    return "\n".join(lines) + "\n"
