"""The whole chain in one call: data → preprocess → train every method → evaluate → compare.

This is the README's main job and the engine of the notebooks. Each step is
skipped when its output is already complete (phantom subjects, store
subjects, finished runs, evaluations), so re-running after an interruption
continues where it stopped. A run whose subjects are no longer the store's
(the split changed: more subjects, a split file) is moved aside and trained
again, never reused.

Settings are chosen on the validation subjects; the test subjects are scored
once, for the report's headline. Step timings, the settings and both
comparisons go to ``OUT/pipeline.json``; the report to ``OUT/comparison/report.md``
(test) with the validation comparison in ``OUT/comparison_val/``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import DataConfig, Experiment
from .fileio import write_record
from .log import get_logger
from .presets import method_config, preset
from .training.rundir import RunDir
from .workspace import run_name, source_name, store_name

logger = get_logger(__name__)


class StepTimer:
    """Runs named steps, logs them, and records how long each took."""

    def __init__(self):
        self.steps: list[dict] = []

    def __call__(self, name: str, function, **extra):
        logger.info("%s ...", name)
        started = time.perf_counter()
        result = function()
        seconds = round(time.perf_counter() - started, 1)
        self.steps.append({"step": name, "seconds": seconds, **extra})
        logger.info("%s: %.1f s", name, seconds)
        return result


def phantom_folder(data: DataConfig, data_dir) -> Path:
    """Where the phantom of these settings is written (``phantom-icbm``, ...)."""
    seed = f"-seed{data.phantom_seed}" if data.phantom_seed else ""
    return Path(data_dir) / f"{source_name(data)}{seed}"


def store_path(data: DataConfig, data_dir) -> Path:
    """Where the slice store of these data settings lives under ``data_dir``
    (:func:`colab_utils.workspace.store_name`)."""
    return Path(data_dir) / store_name(data)


def method_run(experiment: Experiment, method: str, store, out) -> Path:
    """The run directory of one method of the experiment on ``store``, under ``out``
    (:func:`colab_utils.workspace.run_name`): the same settings and data always give the
    same folder."""
    return Path(out) / run_name(method_config(experiment, method), store)


def available_phantom(data: DataConfig, data_dir) -> DataConfig:
    """The data settings with a phantom kind that can be made here: the real-contrast
    kind ``"icbm"`` needs the ICBM 2009c pair (fetched once into ``DATA/icbm152``); when
    it cannot be had (no network, a wrong checksum, a partial download), the tissue-map
    ``"head"`` kind instead, said in the log."""
    if data.source != "phantom" or data.phantom_kind != "icbm":
        return data
    from .data.icbm import Unavailable, fetch_icbm

    try:
        fetch_icbm(Path(data_dir) / "icbm152")
        return data
    except Unavailable as err:
        logger.warning("%s. Using the tissue-map phantom (kind 'head') instead: its T2 is "
                       "made from tissue maps, nearly a function of its T1, so it cannot "
                       "show whether a method learns real T2 contrast", err)
        return data.replace(phantom_kind="head", phantom_lesions=0)


def prepare_data(data: DataConfig, data_dir="data", *, timer: StepTimer | None = None) -> Path:
    """Get a data source and preprocess it into a slice store; return the store.

    Args:
        data: The data settings: ``source`` ``"phantom"`` (generated offline),
            ``"ixi"`` (downloaded and verified; ``subjects`` of them, streamed;
            ``protocol="ixi-40"`` fixes subjects and splits), ``"folder"`` (your own
            T1/T2 NIfTI pairs in ``folder``, e.g. BraTS or OASIS) or ``"gdrive"`` (a
            shared Google Drive folder ``gdrive_id`` of NIfTI pairs).
        data_dir: The data directory (e.g. on Google Drive in Colab).
        timer: Records the steps (a :class:`StepTimer`).

    Each step skips what is already done, so calling it again is cheap.
    """
    from .data.download import download_gdrive
    from .data.ixi import PROTOCOL_MARGIN, fetch_ixi, write_protocol_split
    from .data.nifti import find_pairs
    from .data.phantom import write_phantom
    from .data.preprocess import preprocess

    data = data.validated()
    timer = timer or StepTimer()
    data_dir = Path(data_dir)
    if data.source == "phantom":
        data = available_phantom(data, data_dir)
        folder = phantom_folder(data, data_dir)
        timer("phantom", lambda: write_phantom(
            folder, data.subjects, data.phantom_seed, kind=data.phantom_kind,
            workers=data.workers, icbm_dir=data_dir / "icbm152",
            lesions=data.phantom_lesions), subjects=data.subjects)
        pairs = find_pairs(folder).pairs
    elif data.source == "ixi":
        # A protocol takes the first paired subjects: fetch a few more than it needs.
        wanted = data.subjects + (PROTOCOL_MARGIN if data.protocol else 0)
        pairs = timer("download ixi", lambda: fetch_ixi(data_dir / "ixi", subjects=wanted))
        if data.protocol == "ixi-40":
            pairs, split_file = write_protocol_split(pairs, data_dir / "ixi")
            data = data.replace(split_file=str(split_file))
    elif data.source == "folder":
        if not data.folder or not Path(data.folder).is_dir():
            raise FileNotFoundError(f"source 'folder': expected a folder of T1/T2 NIfTI "
                                    f"pairs, got {data.folder!r}")
        pairs = find_pairs(data.folder, data.pair_pattern).pairs
    else:
        if not data.gdrive_id:
            raise ValueError("source 'gdrive': expected the ID (or share URL) of a Google "
                             "Drive folder of T1/T2 NIfTI pairs (gdrive_id)")
        path = timer("download gdrive", lambda: download_gdrive(data.gdrive_id,
                                                                 data_dir / "gdrive",
                                                                 folder=True))
        pairs = find_pairs(path, data.pair_pattern).pairs
    if len(pairs) < 3:
        raise ValueError(f"{data.source}: expected at least 3 subjects with both a T1 and a "
                         f"T2 (train, val and test need one each), found {len(pairs)}")
    store = store_path(data, data_dir)
    timer("preprocess", lambda: preprocess(pairs, store, data, workers=data.workers))
    return store


def train_method(experiment: Experiment, method: str, store, out, *, show_inline=False,
                 deadline: float | None = None):
    """Train (or resume, or find finished) one method of the experiment into its run
    directory under ``out`` (:func:`method_run`; a run on other subjects or settings
    lives on under its own name), stopping with a checkpoint before ``deadline``
    (:func:`time.monotonic`; default: ``max_minutes`` from now, when set)."""
    from .training.fit import train

    return train(method_config(experiment, method), method_run(experiment, method, store, out),
                 store, show_inline=show_inline, deadline=deadline)


def train_methods(store, out, experiment: Experiment, *, timer: StepTimer | None = None,
                  show_inline=False, failed: list | None = None,
                  deadline: float | None = None, unfinished: list | None = None) -> list[Path]:
    """Train (or resume, or find finished) every method into its run directory.

    A method whose training fails (:class:`~colab_utils.training.health.TrainingFailed`: a
    collapse that restarts did not rescue, a non-finite loss) is logged, appended to
    ``failed`` as ``{"method", "error"}`` and left out of the returned runs; the
    other methods still train. Without ``failed`` the error is raised. When the
    session's ``deadline`` stops a method, it and the methods after it are appended to
    ``unfinished`` and training ends (the next session continues)."""
    from .training.health import TrainingFailed

    timer = timer or StepTimer()
    runs = []
    for i, method in enumerate(experiment.methods):
        config = method_config(experiment, method)
        steps = config.total_epochs * config.steps_per_epoch if method != "simple" else 0
        try:
            result = timer(f"train {method}", lambda method=method: train_method(
                experiment, method, store, out, show_inline=show_inline, deadline=deadline),
                steps=steps)
            if result.stopped:
                if unfinished is None:
                    raise TrainingFailed(f"{method}: stopped by the {result.stopped}")
                unfinished += list(experiment.methods[i:])
                return runs
        except TrainingFailed as err:
            if failed is None:
                raise
            logger.error("%s FAILED: %s", method, err)
            failed.append({"method": method, "error": str(err)})
            continue
        runs.append(method_run(experiment, method, store, out))
    return runs


def evaluate_runs(runs, store, *, split: str = "test", timer: StepTimer | None = None,
                  examples: int = 3, volume_methods=(), plane_step: int = 1) -> None:
    """Evaluate each run that has no evaluation of its current training state; runs of
    ``volume_methods`` also on whole volumes."""
    from .evaluation.scoring import evaluate, is_current

    timer = timer or StepTimer()
    for run in runs:
        volumes = RunDir(run).model() in volume_methods
        if is_current(run, store, split, volumes=volumes, plane_step=plane_step):
            logger.info("%s: already evaluated on %s at its last training step",
                        Path(run).name, split)
            continue
        timer(f"evaluate {RunDir(run).model()} ({split}{', volumes' if volumes else ''})",
              lambda run=run, volumes=volumes: evaluate(
                  run, store, split=split, examples=examples, volumes=volumes,
                  plane_step=plane_step))


def run_pipeline(experiment: Experiment | None = None, out="runs/phantom",
                 data_dir="data") -> dict:
    """Run the whole chain and return its record (also written to ``OUT/pipeline.json``).

    Args:
        experiment: The settings (default: the ``demo`` preset).
        out: Where the runs (``OUT/METHOD/``) and the comparisons go.
        data_dir: Where the data and slice store go (see :func:`prepare_data`).

    Returns:
        ``{"settings", "data", "steps", "total_seconds", "report", "warnings",
        "machine", "failed", "restarts", "table", "validation_table"}``: ``table`` the
        test comparison (per subject), ``validation_table`` the validation one (for
        choosing settings); ``failed`` the methods whose training failed (compared
        without them); ``restarts`` each run's collapse restarts; ``warnings`` names
        those and the learned methods far below the Simple baseline on validation
        (:func:`colab_utils.evaluation.report.failed_methods`).
    """
    from .evaluation.compare import compare
    from .evaluation.report import (
        failed_methods,
        machine_record,
        pipeline_sections,
        restarts_record,
        write_report,
    )

    experiment = (experiment or preset("demo")).validated()
    minutes = experiment.train.max_minutes
    deadline = time.monotonic() + 60 * minutes if minutes > 0 else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timer = StepTimer()
    store = prepare_data(experiment.data, data_dir, timer=timer)
    failed: list[dict] = []
    unfinished: list[str] = []
    runs = train_methods(store, out, experiment, timer=timer, failed=failed,
                         deadline=deadline, unfinished=unfinished)
    if unfinished:
        record = {"settings": experiment.to_dict(), "data": str(store), "steps": timer.steps,
                  "total_seconds": round(sum(s["seconds"] for s in timer.steps), 1),
                  "report": None, "unfinished": unfinished, "failed": failed,
                  "warnings": [f"the session's {minutes:g} minutes ended while "
                               f"{unfinished[0]} trained: run the pipeline again to "
                               f"continue ({', '.join(unfinished)} to go)"],
                  "table": [], "validation_table": []}
        write_record(out / "pipeline.json", record)
        logger.warning("%s", record["warnings"][0])
        return record
    warnings = [f"{f['method']} has no model: {f['error']}" for f in failed]
    reference = comparison_reference(runs, experiment.reference)
    if reference not in (None, experiment.reference):
        warnings.append(f"the methods are tested against {reference}: "
                        f"{experiment.reference} has no model")
    evaluate_runs(runs, store, split="val", timer=timer, examples=0)
    validation = test = None
    if reference is not None:
        validation = timer("compare (val)", lambda: compare(
            runs, out / "comparison_val", data=store, split="val", reference=reference,
            qualitative_slices=0))
        warnings += (failed_methods(validation.table) if "simple" in experiment.methods
                     else [])
        evaluate_runs(runs, store, split="test", timer=timer,
                      volume_methods=experiment.volume_methods,
                      plane_step=experiment.volume_plane_step)
        test = timer("compare (test)", lambda: compare(
            runs, out / "comparison", data=store, split="test", reference=reference,
            render=False))
    else:
        warnings.append(f"no comparison: {len(runs)} method(s) with a model")
    record = {"settings": experiment.to_dict(), "data": str(store), "steps": timer.steps,
              "total_seconds": round(sum(s["seconds"] for s in timer.steps), 1),
              "report": str(test.directory / "report.md") if test else None,
              "warnings": warnings, "machine": machine_record(runs), "failed": failed,
              "unfinished": [], "restarts": restarts_record(runs)}
    tables = {"table": test.table if test else [],
              "validation_table": validation.table if validation else []}
    if test is not None:
        write_report(test, pipeline_sections(validation.report, store, record))
    write_record(out / "pipeline.json", {**record, **tables})
    for warning in warnings:
        logger.warning("%s", warning)
    logger.info("report: %s", record["report"])
    return {**record, **tables}


def comparison_reference(runs, wanted: str) -> str | None:
    """The method the comparison tests the others against: ``wanted``, or, when its
    training failed, the first other learned method with a model (``None``: fewer than
    two runs, nothing to compare)."""
    if len(runs) < 2:
        return None
    methods = [RunDir(run).model() for run in runs]
    if wanted in methods:
        return wanted
    return next((m for m in methods if m != "simple"), methods[0])
