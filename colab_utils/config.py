"""The settings, as one tree: ``Experiment(data=DataConfig, train=TrainConfig, ...)``.

* :class:`DataConfig`: where the scans come from and how they become a slice
  store (source, subjects, slices, normalisation, splits);
* :class:`TrainConfig`: one training run (the method, its networks, losses and
  schedule, precision, bookkeeping); its defaults are the CycleGAN paper
  (Zhu et al. 2017: 256 px, ResNet-9, Adam 2e-4, β1 0.5, λ_cycle 10,
  λ_identity 0.5·λ_cycle, pool 50, LSGAN, 100 + 100 epochs), and the same
  fields train the other methods (``model``);
* :class:`Experiment`: both, and the few settings of the comparison itself.

Each setting is defined once, here, under one name that the command line
(``--image-size``), the notebooks (``IMAGE_SIZE``) and the JSON files use too;
no name appears in two of the classes. Presets are functions in
:mod:`colab_utils.presets`. Every run directory stores its ``TrainConfig`` as
``config.json``; files written before a setting was renamed or removed still
load (:data:`LEGACY`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .data.axial import SLICE_MODES
from .data.context import MAX_CONTEXT
from .fileio import atomic_write_bytes
from .validation import check_choice

DIRECTIONS = ("t1_to_t2", "t2_to_t1")
MODELS = ("cyclegan", "cyclegan_s", "unit", "unit_s", "pix2pix", "supervised", "simple")
PAIRED_MODELS = ("cyclegan_s", "unit_s", "pix2pix", "supervised")
UNIT_MODELS = ("unit", "unit_s")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multiworker")
# XLA compilation of the training step: as Keras decides ("auto": on GPUs), or forced.
JIT_CHOICES = ("auto", "true", "false")
SOURCES = ("phantom", "ixi", "folder", "gdrive")
PHANTOM_KINDS = ("head", "brain", "thick", "icbm")
PROTOCOLS = ("", "ixi-40")
# Who makes each subject's brain mask: the project's own refinement, or deepbet (a
# learned extractor, optional: pip install deepbet, which needs torch).
BRAIN_EXTRACTORS = ("own", "deepbet")
# UNIT's loss weights in its paper (Liu et al. 2017), λ0..λ4: GAN, VAE KL, VAE
# reconstruction, cycle KL, cycle reconstruction.
UNIT_PAPER_WEIGHTS = (10.0, 0.1, 100.0, 0.1, 100.0)

# Fields of TrainConfig that may differ when resuming a run: they change how long it
# trains or how it reports, not what a step computes.
RESUMABLE_CHANGES = frozenset({
    "epochs", "epochs_decay", "checkpoint_every_steps", "checkpoint_minutes",
    "keep_checkpoints", "max_minutes", "grid_slices", "validate", "validate_every", "verbose",
    "tensorboard",
    # The collapse check watches and decides; it does not change a step.
    "collapse_check", "collapse_grace", "max_restarts",
    # Checkpoints hold one copy of each variable, and the loss scale of mixed_float16
    # apart from the optimizer's moments: a run may resume on other hardware, under
    # another strategy or dtype policy (a T4's mixed_float16, a CPU's mixed_bfloat16).
    "strategy", "precision", "jit_compile",
    # The schedule is a function of (lr, step), not a saved state: resuming with a
    # smaller lr continues from the newest good checkpoint at the lower rate (the
    # way back from a non-finite loss).
    "lr",
})

# TrainConfig keys of earlier versions: renamed ones, and removed ones with the one
# value the code still implements (a run that used another cannot be resumed).
LEGACY = {
    "renamed": {"max_steps_per_epoch": "steps_per_epoch"},
    "removed": {"norm": "instance", "disc_norm": "auto", "upsampling": "transpose",
                "gan_mode": "auto", "warmup_steps": 0, "disc_lr_scale": 1.0},
    "values": {"precision": {"off": "float32"},
               "jit_compile": {False: "false", True: "true"}},
    # Removed settings that never changed what a run computes: any value is dropped.
    "ignored": ("notes",),
}


class _Settings:
    """What every settings class shares: validation, dicts, JSON, differences."""

    def validated(self):
        raise NotImplementedError

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config"):
        """Build from a mapping; unknown keys and wrong types are errors naming ``source``."""
        defaults = cls()
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}; "
                             f"expected some of {sorted(cls.field_names())}")
        converted = {name: _coerce(name, value, getattr(defaults, name), source)
                     for name, value in values.items()}
        try:
            return cls(**converted).validated()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    def replace(self, **changes):
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes).validated()

    def differences(self, other) -> dict:
        """Fields whose values differ: ``{name: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


@dataclass
class DataConfig(_Settings):
    """Where the scans come from and how they become a slice store.

    ``seed_slice`` 120 is the axial slice of the article this project follows;
    in the MNI152 template grid it lies at z = +48 mm (centrum semiovale).
    """

    # The source: the offline phantom, IXI (downloaded), a folder of NIfTI pairs, or a
    # shared Google Drive folder.
    source: str = "phantom"
    subjects: int = 10
    folder: str = ""
    gdrive_id: str = ""
    # How T1 and T2 files are paired by subject ("": ID-T1/ID_t2/sub-01_T1w names and
    # BraTS 2023's t1n/t2w; "ixi"; or a regular expression with groups id and modality).
    pair_pattern: str = ""
    # A published protocol that fixes subjects, splits and slices ("ixi-40").
    protocol: str = ""
    # The offline phantom: "head" (tissue maps; a full head like IXI's), "brain"
    # (skull-stripped), "thick" (5 mm slices), or "icbm" (real T1/T2 contrast: the MNI
    # ICBM 2009c pair, fetched once; the "head" kind when it cannot be had).
    phantom_kind: str = "head"
    phantom_seed: int = 0
    # Lesion-like spots per "icbm" subject (up to this many; T2-bright, T1-dark).
    phantom_lesions: int = 0
    # Axial slices of the template grid: the article's one slice, a range, or every
    # slice with enough brain.
    slices: str = "seed"
    seed_slice: int = 120
    slice_range: tuple[int, int] = (40, 150)
    min_brain_fraction: float = 0.25
    slice_size: int = 256
    clip_low: float = 0.5
    clip_high: float = 99.5
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    # A CSV of subject,split that fixes the splits (overrides the fractions and seed).
    split_file: str = ""
    # Training T1 and T2 from different subjects.
    unpaired: bool = False
    # Leave the subjects QC flags out of every split.
    exclude_outliers: bool = False
    # Each subject's brain mask: "own" (intensity and morphology, no extra package) or
    # "deepbet" (learned; needs the deepbet package and torch; docs/REGISTRATION.md).
    brain_extractor: str = "own"
    shard_size: int = 512
    workers: int = 2

    def validated(self) -> DataConfig:
        check_choice("source", self.source, SOURCES)
        check_choice("protocol", self.protocol, PROTOCOLS)
        check_choice("phantom_kind", self.phantom_kind, PHANTOM_KINDS)
        check_choice("slices", self.slices, SLICE_MODES)
        check_choice("brain_extractor", self.brain_extractor, BRAIN_EXTRACTORS)
        if not 0 <= self.clip_low < self.clip_high <= 100:
            raise ValueError("clip_low/clip_high: expected 0 <= low < high <= 100, got "
                             f"{self.clip_low}, {self.clip_high}")
        if self.val_fraction < 0 or self.test_fraction < 0 or \
                self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction: expected non-negative and < 1, got "
                             f"{self.val_fraction} + {self.test_fraction}")
        if self.slice_size < 32 or self.slice_size % 4:
            raise ValueError(f"slice_size: expected a multiple of 4 >= 32, got "
                             f"{self.slice_size}")
        lo, hi = self.slice_range
        if not 0 <= lo < hi:
            raise ValueError(f"slice_range: expected 0 <= start < stop, got {self.slice_range}")
        for name in ("subjects", "shard_size", "workers"):
            _check_number(name, getattr(self, name), lower=1, inclusive=True)
        _check_number("phantom_lesions", self.phantom_lesions, lower=0, inclusive=True)
        if not 0 < self.min_brain_fraction <= 1:
            raise ValueError(f"min_brain_fraction: expected a value in (0, 1], got "
                             f"{self.min_brain_fraction}")
        return self


@dataclass
class TrainConfig(_Settings):
    """Every setting of a training run.

    Attributes are grouped as: what to train, the networks, the losses, the
    optimisation and schedule, the data, and the bookkeeping.
    """

    # What to train.
    model: str = "cyclegan"
    # Networks (instance normalisation and transposed convolutions, as in the paper).
    image_size: int = 256
    channels: int = 1
    # 2.5-D: the networks see each axial slice with this many neighbours below and
    # above as channels, and produce as many (colab_utils.data.context); 0 is 2-D.
    context_slices: int = 0
    gen_filters: int = 64
    n_res_blocks: int = 9
    disc_filters: int = 64
    disc_layers: int = 3
    # Spectrally normalised discriminator convolutions: a stabiliser tried against the
    # CycleGAN's collapse (docs/EXPERIMENTS.md); off in the papers' recipes.
    disc_spectral_norm: bool = False
    # ResNet generators: stem features concatenated before the head (models.resnet_generator).
    long_skip: bool = False
    # ResNet generators: a per-pixel intensity path added before the tanh
    # (models.resnet_generator).
    intensity_path: bool = False
    # Losses: LSGAN for the CycleGANs (their paper), BCE for pix2pix (its paper).
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    # Structure consistency (MIND) between each input and its translation, in the
    # CycleGANs; unpaired. 0 in the CycleGAN paper (losses.structure_loss).
    lambda_structure: float = 0.0
    # UNIT's loss weights λ0..λ4 (GAN, VAE KL, VAE L1, cycle KL, cycle L1; its paper's).
    unit_weights: tuple = UNIT_PAPER_WEIGHTS
    # UNIT's learning rate is lr times this (its paper's 1e-4 against CycleGAN's 2e-4).
    unit_lr_factor: float = 0.5
    # UNIT's latent noise in training: the standard deviation of the Gaussian added to the
    # encoders' mean code (1 in its paper: q(z|x) = N(E(x), I)).
    unit_noise: float = 1.0
    # Paired L1 weights: the supervised term of CycleGAN_s and UNIT_s; pix2pix's L1 term.
    lambda_supervised: float = 10.0
    lambda_l1: float = 100.0
    pool_size: int = 50
    # Optimisation: constant learning rate for `epochs`, then linear decay to
    # zero over `epochs_decay` more.
    lr: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    batch_size: int = 1
    epochs: int = 100
    epochs_decay: int = 100
    # Batches per epoch at most (0: every training slice once).
    steps_per_epoch: int = 0
    # Data augmentation as in CycleGAN: resize to jitter_size, random crop back
    # to image_size, random left-right flip.
    augment: bool = True
    jitter_size: int = 286
    # Reproducibility and speed.
    seed: int = 0
    deterministic: bool = False
    precision: str = "float32"
    # tf.distribute strategy (colab_utils.runtime.distribute); batch_size is the global batch.
    strategy: str = "auto"
    # XLA compilation of the training step (JIT_CHOICES): "auto" as Keras decides.
    jit_compile: str = "auto"
    # Bookkeeping: a checkpoint after every epoch, every n steps (0: off) and every n
    # minutes inside long epochs (0: off), the newest keep_checkpoints kept.
    checkpoint_every_steps: int = 0
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 2
    # A session's time budget in minutes (0: none): training stops with a checkpoint
    # before it ends; run again to continue (a Colab session, a cluster job's limit).
    max_minutes: float = 0.0
    grid_slices: int = 4
    # The losses on the validation split (val_* in history.csv) after every n-th epoch
    # and after the last; the image grid and the collapse check's figures come after
    # every epoch either way.
    validate: bool = True
    validate_every: int = 1
    # CycleGAN: after each validated epoch, check the translation against the Simple
    # baseline on validation slices (colab_utils.training.health); past collapse_grace epochs a
    # collapse restarts the run with the next seed, at most max_restarts times.
    collapse_check: bool = True
    collapse_grace: int = 10
    max_restarts: int = 2
    tensorboard: bool = True
    verbose: int = 2

    @staticmethod
    def jitter_for(image_size: int) -> int:
        """The paper's jitter ratio (286 for 256) at another size, rounded to even."""
        return int(round(image_size * 286 / 256 / 2)) * 2

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    @property
    def network_channels(self) -> int:
        """Channels of the networks' images: ``channels`` per slice of the neighbourhood."""
        return self.channels * (2 * self.context_slices + 1)

    @property
    def paired(self) -> bool:
        """Whether the model trains on paired (aligned) T1/T2 slices."""
        return self.model in PAIRED_MODELS

    @property
    def checks_collapse(self) -> bool:
        """Whether the collapse check runs (colab_utils.training.health): on CycleGAN and
        CycleGAN_s, whose failure (the source's tissue order kept) it was built for."""
        return self.collapse_check and self.model in ("cyclegan", "cyclegan_s")

    @property
    def measures_health(self) -> bool:
        """Whether the collapse check's figures are measured after every epoch (every
        learned method: its learning curve on validation slices against Simple); only
        :attr:`checks_collapse` methods are judged on them."""
        return self.collapse_check and self.model != "simple"

    @property
    def gan_mode(self) -> str:
        """BCE for pix2pix and UNIT (their papers), LSGAN otherwise (CycleGAN's)."""
        return "bce" if self.model in ("pix2pix", *UNIT_MODELS) else "lsgan"

    @property
    def model_lr(self) -> float:
        """The learning rate of this run's model (UNIT's is scaled, :attr:`unit_lr_factor`)."""
        return self.lr * (self.unit_lr_factor if self.model in UNIT_MODELS else 1.0)

    def validated(self) -> TrainConfig:
        """Return self after checking every field; raise ``ValueError`` naming the bad one."""
        check_choice("model", self.model, MODELS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("jit_compile", self.jit_compile, JIT_CHOICES)
        positive = ("image_size", "channels", "gen_filters", "disc_filters", "disc_layers",
                    "batch_size", "keep_checkpoints", "validate_every")
        non_negative = ("n_res_blocks", "pool_size", "context_slices", "epochs", "epochs_decay",
                        "steps_per_epoch", "checkpoint_every_steps", "grid_slices",
                        "collapse_grace", "max_restarts", "checkpoint_minutes", "max_minutes",
                        "lambda_cycle", "lambda_identity", "lambda_structure",
                        "lambda_supervised", "lambda_l1", "verbose")
        for name in positive:
            _check_number(name, getattr(self, name), lower=0, inclusive=False)
        for name in non_negative:
            _check_number(name, getattr(self, name), lower=0, inclusive=True)
        _check_number("lr", self.lr, lower=0, inclusive=False)
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            _check_number(name, value, lower=0, inclusive=True)
            if value >= 1:
                raise ValueError(f"config field {name!r}: expected a value in [0, 1), got {value}")
        if self.context_slices > MAX_CONTEXT:
            raise ValueError(f"config field 'context_slices': expected 0..{MAX_CONTEXT}, got "
                             f"{self.context_slices}")
        if self.image_size % 4:
            raise ValueError(f"config field 'image_size': expected a multiple of 4, "
                             f"got {self.image_size}")
        if self.augment and self.jitter_size < self.image_size:
            raise ValueError(f"config field 'jitter_size': expected >= image_size "
                             f"({self.image_size}), got {self.jitter_size}")
        if self.total_epochs < 1:
            raise ValueError("config fields 'epochs' + 'epochs_decay': expected at least 1 "
                             f"epoch in total, got {self.epochs} + {self.epochs_decay}")
        if self.model in ("cyclegan_s", "unit_s") and self.lambda_supervised <= 0:
            raise ValueError(f"config field 'lambda_supervised': model {self.model!r} needs a "
                             f"positive supervised weight, got {self.lambda_supervised}")
        _check_number("unit_lr_factor", self.unit_lr_factor, lower=0, inclusive=False)
        _check_number("unit_noise", self.unit_noise, lower=0, inclusive=True)
        if len(self.unit_weights) != 5 or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0
                for w in self.unit_weights):
            raise ValueError("config field 'unit_weights': expected five non-negative numbers "
                             f"(λ0..λ4), got {self.unit_weights}")
        return self

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> TrainConfig:
        return super().from_dict(_upgrade(values, source), source=source)

    def save(self, path) -> None:
        """Write as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(Path(path), text.encode())

    @classmethod
    def load(cls, path) -> TrainConfig:
        return cls.from_dict(read_json_object(path), source=str(path))


@dataclass
class Experiment:
    """A whole comparison: the data, the training settings every method shares, and
    which methods. Each method's run is ``train`` with its ``model`` (and CycleGAN's
    longer epochs): :func:`colab_utils.presets.method_config`."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: tuple[str, ...] = ("simple", "supervised", "pix2pix", "cyclegan", "cyclegan_s",
                                "unit", "unit_s")
    # The method the others are tested against.
    reference: str = "cyclegan"
    # CycleGAN's epochs are this many times longer (unpaired, it learns slower than the
    # methods that see pairs; steps_per_epoch 0, every slice, stays so).
    cyclegan_step_factor: float = 1.0
    # UNIT's and UNIT_s's epochs are this many times as long (a time budget: the demo's).
    unit_step_factor: float = 1.0
    # The methods whose test subjects are also translated and scored as whole volumes
    # (colab_utils.evaluation.volumes; seconds per subject and method on a CPU).
    volume_methods: tuple[str, ...] = ("simple", "supervised", "pix2pix", "cyclegan",
                                       "cyclegan_s", "unit", "unit_s")
    # Whole-volume metrics on every n-th plane of each orientation (1: all of them).
    volume_plane_step: int = 1

    def validated(self) -> Experiment:
        self.data.validated()
        self.train.validated()
        for method in self.methods:
            check_choice("methods", method, MODELS)
        for method in self.volume_methods:
            check_choice("volume_methods", method, MODELS)
        if isinstance(self.volume_plane_step, bool) or not isinstance(
                self.volume_plane_step, int) or self.volume_plane_step < 1:
            raise ValueError(f"volume_plane_step: expected an integer >= 1, got "
                             f"{self.volume_plane_step!r}")
        if len(set(self.methods)) < 2:
            raise ValueError(f"methods: expected at least two different methods, got "
                             f"{list(self.methods)}")
        check_choice("reference", self.reference, tuple(self.methods))
        for name in ("cyclegan_step_factor", "unit_step_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        return self

    @staticmethod
    def own_fields() -> tuple[str, ...]:
        return ("methods", "reference", "cyclegan_step_factor", "unit_step_factor",
                "volume_methods", "volume_plane_step")

    def to_dict(self) -> dict:
        return {"data": self.data.to_dict(), "train": self.train.to_dict(),
                "methods": list(self.methods), "reference": self.reference,
                "cyclegan_step_factor": self.cyclegan_step_factor,
                "unit_step_factor": self.unit_step_factor,
                "volume_methods": list(self.volume_methods),
                "volume_plane_step": self.volume_plane_step}

    def with_overrides(self, **values) -> Experiment:
        """A copy with settings changed by name (each name is unique in the tree);
        ``None`` values are ignored (a notebook field or flag left at the preset's)."""
        routed = {"data": {}, "train": {}, "own": {}}
        for name, value in values.items():
            if value is None:
                continue
            part = ("data" if name in DataConfig.field_names() else
                    "train" if name in TrainConfig.field_names() else
                    "own" if name in self.own_fields() else None)
            if part is None:
                raise ValueError(f"unknown setting {name!r}; expected one of "
                                 f"{sorted(all_setting_names())}")
            routed[part][name] = value
        routed["train"] = follow_image_size(routed["train"])
        data = DataConfig.from_dict({**self.data.to_dict(), **routed["data"]},
                                    source="data settings")
        train = TrainConfig.from_dict({**self.train.to_dict(), **routed["train"]},
                                      source="training settings")
        own = {**{k: getattr(self, k) for k in self.own_fields()}, **routed["own"]}
        for name in ("methods", "volume_methods"):
            if isinstance(own[name], str):
                own[name] = tuple(m.strip() for m in own[name].replace(":", ",").split(",")
                                  if m.strip())
        return Experiment(data, train, tuple(own["methods"]), str(own["reference"]),
                          float(own["cyclegan_step_factor"]), float(own["unit_step_factor"]),
                          tuple(own["volume_methods"]),
                          int(own["volume_plane_step"])).validated()


def follow_image_size(train_values: dict) -> dict:
    """Training settings where a changed ``image_size`` without its own ``jitter_size``
    takes the paper's jitter ratio (:meth:`TrainConfig.jitter_for`)."""
    if "image_size" in train_values and "jitter_size" not in train_values:
        return {**train_values,
                "jitter_size": TrainConfig.jitter_for(int(train_values["image_size"]))}
    return train_values


def all_setting_names() -> tuple[str, ...]:
    """Every setting's name (unique across the tree)."""
    return DataConfig.field_names() + TrainConfig.field_names() + Experiment.own_fields()


def read_json_object(path) -> dict:
    """A JSON file that holds an object; clear errors naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: expected a JSON object of config fields, "
                         f"got invalid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values


def _upgrade(values: dict, source: str) -> dict:
    """TrainConfig keys of earlier versions in today's form (see :data:`LEGACY`)."""
    values = dict(values)
    for old, new in LEGACY["renamed"].items():
        if old in values:
            values.setdefault(new, values.pop(old))
    for name, only in LEGACY["removed"].items():
        if name in values:
            value = values.pop(name)
            if value != only:
                raise ValueError(f"{source}: config field {name!r} is {value!r}, a setting "
                                 f"this version no longer has (only {only!r} remains); "
                                 "train a new run")
    for name in LEGACY["ignored"]:
        values.pop(name, None)
    for name, mapping in LEGACY["values"].items():
        value = values.get(name)
        if any(value is old or (value == old and type(value) is type(old)) for old in mapping):
            values[name] = mapping[value]
    return values


def _check_number(name, value, *, lower, inclusive):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config field {name!r}: expected a number, got {value!r}")
    if value < lower or (value == lower and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"config field {name!r}: expected {relation} {lower}, got {value}")


def _coerce(name, value, default, source):
    """Convert a JSON or command-line value to the type of the field's default."""
    kind = type(default)
    if kind is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(":", ",").split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and len(value) == len(default):
            return tuple(_coerce(name, v, d, source) for v, d in zip(value, default))
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{source}: config field {name!r}: expected {kind.__name__}, got {value!r}")
