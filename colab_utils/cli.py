"""Command line: ``python -m colab_utils <command> --help``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .config import TrainConfig


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override the preset and --config)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        kind = type(default).__name__
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", default=None,
                           metavar=kind.upper(), help=f"default {default!r}")


def _config_from_args(args) -> TrainConfig:
    values = TrainConfig.smoke().to_dict() if args.preset == "smoke" else TrainConfig().to_dict()
    if args.config:
        values.update(TrainConfig.load(args.config).to_dict())
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    values.update(overrides)
    return TrainConfig.from_dict(values, source="command line")


def _cmd_train(args) -> int:
    from .training import train

    config = _config_from_args(args)
    result = train(config, args.run_dir, args.data, show_inline=False,
                   stop_at_step=args.stop_at_step)
    print(f"trained to step {result.global_step}/{result.total_steps}; "
          f"outputs written to {result.run_dir}")
    return 0


def _cmd_toy(args) -> int:
    from .data.toy import write_toy_dataset

    out = write_toy_dataset(args.out, n_train=args.train, n_val=args.val, n_test=args.test,
                            size=args.size, seed=args.seed)
    print(f"toy slices (T2 = inverted T1; not anatomy) written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m colab_utils",
        description="T1w <-> T2w MRI synthesis with CycleGAN: data, training, evaluation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train or resume a CycleGAN run",
        description="Train a CycleGAN (or CycleGAN_s) on 2-D slices; re-running the same "
                    "command on the same --run-dir resumes from the last checkpoint.")
    train.add_argument("--data", required=True,
                       help="directory with train.npz/val.npz (or train/t1, train/t2 folders "
                            "of .npy slices), or one .npz file")
    train.add_argument("--run-dir", required=True, help="run directory (created or resumed)")
    train.add_argument("--preset", choices=("paper", "smoke"), default="paper",
                       help="starting settings: the CycleGAN paper's or a tiny smoke test")
    train.add_argument("--config", help="JSON file of settings (e.g. a run's config.json)")
    train.add_argument("--stop-at-step", type=int, default=None,
                       help="stop with a checkpoint at this global step (resume later)")
    _add_config_flags(train)
    train.set_defaults(func=_cmd_train)

    toy = commands.add_parser("toy", help="write a synthetic slice dataset with a known answer")
    toy.add_argument("--out", required=True, help="output directory")
    toy.add_argument("--size", type=int, default=32)
    toy.add_argument("--train", type=int, default=64)
    toy.add_argument("--val", type=int, default=8)
    toy.add_argument("--test", type=int, default=8)
    toy.add_argument("--seed", type=int, default=0)
    toy.set_defaults(func=_cmd_toy)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
