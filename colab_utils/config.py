"""Training configuration: a dataclass with the CycleGAN paper's defaults.

``TrainConfig()`` is the paper (Zhu et al. 2017, 256 px, ResNet-9, Adam 2e-4,
β1 0.5, λ_cycle 10, λ_identity 0.5·λ_cycle, pool 50, LSGAN, 100 + 100 epochs);
the same fields train the other methods (``model``): CycleGAN_s (plus a
paired L1, λ 10), pix2pix (Isola et al. 2017: U-Net, conditional PatchGAN,
BCE GAN, λ_L1 100), the supervised ResNet generator (L1 only), and the
non-learned Simple baseline (histogram matching, fitted in a second).
``TrainConfig.smoke()`` is a tiny preset that trains in seconds on a CPU.
Each run directory stores its config as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import atomic_write_bytes
from .validation import check_choice

NORMS = ("instance", "batch", "none")
UPSAMPLINGS = ("transpose", "resize_conv")
GAN_MODES = ("auto", "lsgan", "bce")

MODELS = ("cyclegan", "cyclegan_s", "pix2pix", "supervised", "simple")
PAIRED_MODELS = ("cyclegan_s", "pix2pix", "supervised")
PRECISIONS = ("off", "auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multiworker")

# Fields that may differ when resuming a run: they change how long it trains
# or how it reports, not what a step computes.
RESUMABLE_CHANGES = frozenset({
    "epochs", "epochs_decay", "checkpoint_every_steps", "keep_checkpoints",
    "grid_slices", "validate", "validate_every", "verbose", "tensorboard",
    # Checkpoints hold one copy of each variable: a run may resume on other hardware.
    "strategy",
    # The schedule is a function of (lr, step), not a saved state: resuming with a
    # smaller lr continues from the newest good checkpoint at the lower rate (the
    # way back from a non-finite loss).
    "lr",
})


@dataclass
class TrainConfig:
    """Every setting of a training run.

    Attributes are grouped as: what to train, the networks, the losses, the
    optimisation and schedule, the data, and the bookkeeping.
    """

    # What to train.
    model: str = "cyclegan"
    # Networks.
    image_size: int = 256
    channels: int = 1
    gen_filters: int = 64
    n_res_blocks: int = 9
    disc_filters: int = 64
    disc_layers: int = 3
    norm: str = "instance"
    # The discriminators' normalisation; "auto": the same as the generators'.
    disc_norm: str = "auto"
    upsampling: str = "transpose"
    # ResNet generators: stem features concatenated before the head (models.resnet_generator).
    long_skip: bool = False
    # ResNet generators: a per-pixel intensity path added before the tanh
    # (models.resnet_generator).
    intensity_path: bool = False
    # Losses.
    # "auto": LSGAN for the CycleGANs (their paper), BCE for pix2pix (its paper).
    gan_mode: str = "auto"
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    # Structure consistency (MIND) between each input and its translation, in the
    # CycleGANs; unpaired. 0 in the CycleGAN paper (losses.structure_loss).
    lambda_structure: float = 0.0
    # Paired L1 weights: CycleGAN_s's supervised term; pix2pix's L1 term.
    lambda_supervised: float = 10.0
    lambda_l1: float = 100.0
    pool_size: int = 50
    # Optimisation: constant learning rate for `epochs`, then linear decay to
    # zero over `epochs_decay` more.
    lr: float = 2e-4
    # The discriminators' learning rate as a multiple of lr (1 in the papers; two
    # time-scale updates, Heusel et al. 2017, use a faster discriminator).
    disc_lr_scale: float = 1.0
    beta_1: float = 0.5
    beta_2: float = 0.999
    # Both learning rates ramp linearly up over the first warmup_steps optimizer steps
    # (0: none, as in the papers; schedules.LinearDecay).
    warmup_steps: int = 0
    batch_size: int = 1
    epochs: int = 100
    epochs_decay: int = 100
    max_steps_per_epoch: int = 0
    # Data augmentation as in CycleGAN: resize to jitter_size, random crop back
    # to image_size, random left-right flip.
    augment: bool = True
    jitter_size: int = 286
    # Reproducibility and speed.
    seed: int = 0
    deterministic: bool = False
    precision: str = "off"
    jit_compile: bool = False
    # tf.distribute strategy (colab_utils.distribute); batch_size is the global batch.
    strategy: str = "auto"
    # Bookkeeping.
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 3
    grid_slices: int = 4
    validate: bool = True
    # Validate after every n-th epoch and after the last (the image grid is drawn
    # after every epoch either way).
    validate_every: int = 1
    tensorboard: bool = True
    verbose: int = 2
    notes: str = field(default="")

    @classmethod
    def smoke(cls, **overrides) -> "TrainConfig":
        """A tiny configuration (32 px, narrow networks, 2 epochs) for tests and demos."""
        values = dict(
            image_size=32, gen_filters=8, n_res_blocks=2, disc_filters=8, disc_layers=2,
            pool_size=4, batch_size=2, epochs=1, epochs_decay=1, max_steps_per_epoch=8,
            jitter_size=36, grid_slices=2, precision="off",
        )
        values.update(overrides)
        return cls(**values).validated()

    @staticmethod
    def jitter_for(image_size: int) -> int:
        """The paper's jitter ratio (286 for 256) at another size, rounded to even."""
        return int(round(image_size * 286 / 256 / 2)) * 2

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    @property
    def paired(self) -> bool:
        """Whether the model trains on paired (aligned) T1/T2 slices."""
        return self.model in PAIRED_MODELS

    @property
    def resolved_disc_norm(self) -> str:
        return self.norm if self.disc_norm == "auto" else self.disc_norm

    @property
    def resolved_gan_mode(self) -> str:
        if self.gan_mode != "auto":
            return self.gan_mode
        return "bce" if self.model == "pix2pix" else "lsgan"

    def validated(self) -> "TrainConfig":
        """Return self after checking every field; raise ``ValueError`` naming the bad one."""
        check_choice("model", self.model, MODELS)
        check_choice("norm", self.norm, NORMS)
        check_choice("disc_norm", self.disc_norm, ("auto", *NORMS))
        check_choice("upsampling", self.upsampling, UPSAMPLINGS)
        check_choice("gan_mode", self.gan_mode, GAN_MODES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
        positive = ("image_size", "channels", "gen_filters", "disc_filters", "disc_layers",
                    "batch_size", "keep_checkpoints", "validate_every")
        non_negative = ("n_res_blocks", "pool_size", "epochs", "epochs_decay",
                        "max_steps_per_epoch", "checkpoint_every_steps", "grid_slices",
                        "warmup_steps", "lambda_cycle", "lambda_identity", "lambda_structure",
                        "lambda_supervised", "lambda_l1",
                        "verbose")
        for name in positive:
            _check_number(name, getattr(self, name), lower=0, inclusive=False)
        for name in non_negative:
            _check_number(name, getattr(self, name), lower=0, inclusive=True)
        _check_number("lr", self.lr, lower=0, inclusive=False)
        _check_number("disc_lr_scale", self.disc_lr_scale, lower=0, inclusive=False)
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            _check_number(name, value, lower=0, inclusive=True)
            if value >= 1:
                raise ValueError(f"config field {name!r}: expected a value in [0, 1), got {value}")
        if self.image_size % 4:
            raise ValueError(f"config field 'image_size': expected a multiple of 4, "
                             f"got {self.image_size}")
        if self.augment and self.jitter_size < self.image_size:
            raise ValueError(f"config field 'jitter_size': expected >= image_size "
                             f"({self.image_size}), got {self.jitter_size}")
        if self.total_epochs < 1:
            raise ValueError("config fields 'epochs' + 'epochs_decay': expected at least 1 "
                             f"epoch in total, got {self.epochs} + {self.epochs_decay}")
        if self.model == "cyclegan_s" and self.lambda_supervised <= 0:
            raise ValueError("config field 'lambda_supervised': model 'cyclegan_s' needs a "
                             f"positive supervised weight, got {self.lambda_supervised}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> "TrainConfig":
        """Build from a mapping; unknown keys and wrong types are errors naming ``source``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown config field(s) {unknown}; "
                             f"expected some of {sorted(known)}")
        converted = {}
        for name, value in values.items():
            converted[name] = _coerce(name, value, type(getattr(cls(), name)), source)
        try:
            return cls(**converted).validated()
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, path) -> None:
        """Write as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(Path(path), text.encode())

    @classmethod
    def load(cls, path) -> "TrainConfig":
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
        return cls.from_dict(values, source=str(path))

    def differences(self, other: "TrainConfig") -> dict:
        """Fields whose values differ: ``{name: (self_value, other_value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


def _check_number(name, value, *, lower, inclusive):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config field {name!r}: expected a number, got {value!r}")
    if value < lower or (value == lower and not inclusive):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"config field {name!r}: expected {relation} {lower}, got {value}")


def _coerce(name, value, kind, source):
    """Convert a JSON or command-line value to the field's type."""
    if kind is bool:
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
