"""The whole chain in one call: phantom → preprocess → train every method → evaluate → compare.

This is the README's main job and the engine of ``04_compare_methods``. Each
step is skipped when its output is already complete (phantom subjects, store
subjects, finished runs, evaluations), so re-running after an interruption
continues where it stopped. Step timings and settings go to
``OUT/pipeline.json``; the report to ``OUT/comparison/report.md``.

The default :class:`PipelineSettings` are a *demo*: 64-pixel slices, narrow
networks and a few hundred steps, sized to finish in minutes on a 2-core CPU.
They show the protocol, not the methods' best results (use the paper preset on
a GPU for that).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import MODELS, TrainConfig
from .fileio import atomic_write_bytes
from .validation import check_choice


@dataclass
class PipelineSettings:
    """Settings of a whole-chain run (defaults: the offline demo on the phantom)."""

    subjects: int = 10
    seed: int = 0
    slices: str = "range"
    slice_range: tuple[int, int] = (50, 140)
    val_fraction: float = 0.1
    test_fraction: float = 0.3
    image_size: int = 64
    methods: tuple[str, ...] = ("simple", "supervised", "pix2pix", "cyclegan", "cyclegan_s")
    reference: str = "cyclegan"
    # Training of each learned method (see method_config for the networks).
    epochs: int = 4
    epochs_decay: int = 4
    steps_per_epoch: int = 50
    batch_size: int = 4
    lr: float = 8e-4
    gen_filters: int = 16
    n_res_blocks: int = 4
    disc_filters: int = 16
    # The identity loss asks G_t1→t2(T2) = T2, which fights an inverted contrast; in the
    # short demo it holds CycleGAN back (masked SSIM 0.12 with 5, 0.41 without, 400 steps).
    lambda_identity: float = 0.0
    precision: str = "auto"
    workers: int = 2

    def validated(self) -> "PipelineSettings":
        for method in self.methods:
            check_choice("methods", method, MODELS)
        if len(set(self.methods)) < 2:
            raise ValueError(f"methods: expected at least two different methods, got "
                             f"{list(self.methods)}")
        check_choice("reference", self.reference, tuple(self.methods))
        if self.subjects < 3:
            raise ValueError(f"subjects: expected >= 3 (train, val and test need one each), "
                             f"got {self.subjects}")
        return self

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["slice_range"] = list(self.slice_range)
        values["methods"] = list(self.methods)
        return values


def method_config(method: str, settings: PipelineSettings) -> TrainConfig:
    """The training configuration of one method in a pipeline run."""
    return TrainConfig.smoke(
        model=method, image_size=settings.image_size,
        jitter_size=TrainConfig.jitter_for(settings.image_size),
        gen_filters=settings.gen_filters, n_res_blocks=settings.n_res_blocks,
        disc_filters=settings.disc_filters, disc_layers=3,
        lambda_identity=settings.lambda_identity, pool_size=20,
        batch_size=settings.batch_size, lr=settings.lr, epochs=settings.epochs,
        epochs_decay=settings.epochs_decay, max_steps_per_epoch=settings.steps_per_epoch,
        precision=settings.precision, seed=settings.seed, tensorboard=False, grid_slices=2,
        verbose=2)


def _evaluated(run: Path, split: str) -> bool:
    """Whether ``run`` has a complete evaluation of its current training state."""
    from .evaluation import trained_step

    record = run / "metrics" / split / "evaluation.json"
    if not (record.is_file() and (run / "metrics" / split / "summary.csv").is_file()):
        return False
    step = trained_step(run)
    return step is not None and json.loads(record.read_text()).get("trained_step") == step


def run_pipeline(out="runs/phantom", data="data", settings: PipelineSettings | None = None,
                 *, input_dir=None, log=print) -> dict:
    """Run the whole chain and return its record (also written to ``OUT/pipeline.json``).

    Args:
        out: Where the runs (``OUT/METHOD/``) and the comparison (``OUT/comparison/``) go.
        data: Where the phantom (``DATA/phantom``) and slice store (``DATA/phantom_store``) go.
        settings: A :class:`PipelineSettings` (default: the demo).
        input_dir: A folder of your own T1/T2 NIfTI pairs instead of the phantom
            (the store then goes to ``DATA/store``).
        log: Progress messages.

    Returns:
        ``{"settings", "steps": [{"step", "seconds", ...}], "report", "table"}``.
    """
    from .compare import compare
    from .data.nifti import find_pairs
    from .data.phantom import write_phantom
    from .data.preprocess import PreprocessConfig, preprocess
    from .evaluation import evaluate
    from .training import train

    settings = (settings or PipelineSettings()).validated()
    out, data = Path(out), Path(data)
    out.mkdir(parents=True, exist_ok=True)
    steps: list[dict] = []

    def timed(name, function, **extra):
        log(f"[pipeline] {name} ...")
        started = time.perf_counter()
        result = function()
        seconds = round(time.perf_counter() - started, 1)
        steps.append({"step": name, "seconds": seconds, **extra})
        log(f"[pipeline] {name}: {seconds:.1f} s")
        return result

    if input_dir is None:
        input_dir = data / "phantom"
        store = data / "phantom_store"
        timed("phantom", lambda: write_phantom(input_dir, settings.subjects, settings.seed),
              subjects=settings.subjects)
    else:
        input_dir, store = Path(input_dir), data / "store"
    config = PreprocessConfig(slices=settings.slices, slice_range=tuple(settings.slice_range),
                              val_fraction=settings.val_fraction,
                              test_fraction=settings.test_fraction).validated()
    timed("preprocess", lambda: preprocess(find_pairs(input_dir).pairs, store, config,
                                           workers=settings.workers))
    runs = []
    for method in settings.methods:
        run = out / method
        cfg = method_config(method, settings)
        timed(f"train {method}", lambda: train(cfg, run, store, show_inline=False),
              steps=cfg.total_epochs * cfg.max_steps_per_epoch if method != "simple" else 0)
        runs.append(run)
    for run in runs:
        if _evaluated(run, "test"):
            log(f"[pipeline] {run.name}: already evaluated at its last training step")
            continue
        timed(f"evaluate {run.name}", lambda: evaluate(run, store, split="test"))
    comparison = timed("compare", lambda: compare(runs, out / "comparison", data=store,
                                                  reference=settings.reference))
    record = {"settings": settings.to_dict(), "data": str(store), "steps": steps,
              "total_seconds": round(sum(s["seconds"] for s in steps), 1),
              "report": str(comparison.report)}
    atomic_write_bytes(out / "pipeline.json", (json.dumps(record, indent=2) + "\n").encode())
    report = comparison.report.read_text() + (
        "\n## How long each step took (this run)\n\n" + timings_markdown(steps) + "\n\n"
        f"Settings: `{json.dumps(settings.to_dict())}`\n")
    atomic_write_bytes(comparison.report, report.encode())
    log(timings_markdown(steps))
    log(f"[pipeline] report: {comparison.report}")
    return {**record, "table": comparison.table}


def timings_markdown(steps: list[dict]) -> str:
    """A Markdown table of step timings."""
    lines = ["| step | seconds |", "|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']:.1f} |" for s in steps]
    lines.append(f"| **total** | **{sum(s['seconds'] for s in steps):.1f}** |")
    return "\n".join(lines)
