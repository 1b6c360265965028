"""Command line: ``python -m colab_utils <command> --help``.

The settings flags are made from the settings themselves (:mod:`colab_utils.config`):
``--image-size`` is ``TrainConfig.image_size``, ``--split-seed`` is
``DataConfig.split_seed``; a flag left out keeps the preset's (or default) value.

Exit status: 0 done; 2 bad input (the message names the file or setting); 3 a
training failed (a collapse the restarts did not rescue, a non-finite loss; the
pipeline still trains, evaluates and compares the other methods first); 130
interrupted (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import DataConfig, Experiment, TrainConfig, follow_image_size
from .presets import PRESETS, preset

PREFIX = "setting_"
# DataConfig fields of each command that works on data.
PHANTOM_FIELDS = ("subjects", "phantom_kind", "phantom_seed", "phantom_lesions", "workers")
PREPROCESS_FIELDS = ("pair_pattern", "slices", "seed_slice", "slice_range", "min_brain_fraction",
                     "slice_size",
                     "clip_low", "clip_high", "val_fraction", "test_fraction", "split_seed",
                     "split_file", "unpaired", "exclude_outliers", "brain_extractor",
                     "shard_size", "workers")


def _add_setting_flags(parser, defaults, names, title: str) -> None:
    """``--name`` for each setting ``name`` of the dataclass instance ``defaults``."""
    group = parser.add_argument_group(title)
    for name in names:
        default = getattr(defaults, name)
        value = ":".join(map(str, default)) if isinstance(default, tuple) else default
        kind = "A:B" if isinstance(default, tuple) else type(default).__name__.upper()
        group.add_argument(f"--{name.replace('_', '-')}", dest=PREFIX + name, default=None,
                           metavar=kind, help=f"default {value!r}")


def _given(args) -> dict:
    """The settings given on the command line, by name."""
    return {k[len(PREFIX):]: v for k, v in vars(args).items()
            if k.startswith(PREFIX) and v is not None}


def training_config(args) -> TrainConfig:
    """The train command's settings: the preset's training part, then ``--config``, then
    the flags given."""
    values = preset(args.preset).train.to_dict()
    if args.config:
        values.update(TrainConfig.load(args.config).to_dict())
    values.update(follow_image_size(_given(args)))
    return TrainConfig.from_dict(values, source="command line")


def pipeline_settings(args) -> Experiment:
    """The pipeline command's settings: its preset, then the flags given."""
    return preset(args.preset, **_given(args))


def _data_config(args) -> DataConfig:
    return DataConfig.from_dict({**DataConfig().to_dict(), **_given(args)},
                                source="command line")


def _cmd_train(args) -> int:
    from .training.fit import train

    result = train(training_config(args), args.run_dir, args.data, show_inline=False,
                   stop_at_step=args.stop_at_step)
    if result.stopped:
        print(f"stopped by the {result.stopped} at step {result.global_step}/"
              f"{result.total_steps} with a checkpoint in {result.run_dir}; run the same "
              "command again to continue")
        return 0
    print(f"trained to step {result.global_step}/{result.total_steps}; "
          f"outputs written to {result.run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation.scoring import evaluate

    result = evaluate(args.run, args.data, split=args.split, out=args.out,
                      batch_size=args.batch_size, precision=args.precision,
                      volumes=args.volumes, plane_step=args.plane_step)
    print(f"metrics written to {result.directory} (per_slice.csv, per_subject.csv, "
          f"summary.csv, summary.md, examples_*.png{', volumes.csv' if args.volumes else ''})")
    return 0


def _cmd_compare(args) -> int:
    from .evaluation.compare import compare

    result = compare(args.runs, args.out, split=args.split, data=args.data,
                     reference=args.reference, qualitative_slices=args.slices)
    print(f"comparison written to {result.directory} (report.md, table.csv, tests.csv, PNGs)")
    return 0


def _cmd_synthesize(args) -> int:
    from .evaluation.export import load_model
    from .evaluation.synthesis import synthesize_volume

    method, settings = load_model(args.model, sha256_digest=args.sha256,
                                  direction=args.direction, precision=args.precision)
    if args.direction not in method.translators:
        raise ValueError(f"{args.model}: translates {sorted(method.translators)}, "
                         f"not {args.direction}")
    info = synthesize_volume(method, args.input, args.output, direction=args.direction,
                             slice_size=settings["slice_size"], clip_low=settings["clip_low"],
                             clip_high=settings["clip_high"], batch_size=args.batch_size,
                             check_contrast=not args.skip_contrast_check)
    computed = f" in {method.policy}" if method.policy else ""
    print(f"synthetic volume ({method.name}{computed}, {args.direction}) written to {args.output} "
          f"in {info['total_s']:.1f} s")
    return 0


def _cmd_pipeline(args) -> int:
    from .pipeline import run_pipeline

    record = run_pipeline(pipeline_settings(args), args.out, args.data)
    if record["unfinished"]:
        print(f"{record['warnings'][0]}; what is trained is kept in {args.out}")
        return 0
    print(f"whole chain done in {record['total_seconds']:.0f} s; report: {record['report']}")
    for failure in record["failed"]:
        print(f"error: {failure['method']} has no model: {failure['error']}", file=sys.stderr)
    return 3 if record["failed"] else 0


def _cmd_export(args) -> int:
    from .evaluation.export import export_model, sha256

    path = export_model(args.run, args.out)
    print(f"model archive written to {path} (sha256 {sha256(path)})")
    return 0


def _cmd_list(args) -> int:
    from .workspace import markdown

    print(markdown(args.workdir), end="")
    return 0


def _cmd_toy(args) -> int:
    from .data.toy import write_toy_dataset

    out = write_toy_dataset(args.out, n_train=args.train, n_val=args.val, n_test=args.test,
                            size=args.size, seed=args.seed)
    print(f"toy slices (T2 = inverted T1; not anatomy) written to {out}")
    return 0


def _cmd_phantom(args) -> int:
    from .data.phantom import write_phantom

    data = _data_config(args)
    icbm = None
    if data.phantom_kind == "icbm":
        from .data.icbm import fetch_icbm

        icbm = fetch_icbm(args.icbm)  # Unavailable (an OSError): exit 2, with the reasons
    out = write_phantom(args.out, data.subjects, data.phantom_seed, kind=data.phantom_kind,
                        workers=data.workers, icbm_dir=icbm, lesions=data.phantom_lesions)
    print(f"{data.subjects} phantom subjects of kind {data.phantom_kind} (T1 + T2 NIfTI; a "
          f"PHANTOM, not real data) written to {out}")
    return 0


def _cmd_preprocess(args) -> int:
    from .data.nifti import find_pairs
    from .data.preprocess import preprocess
    from .data.store import SliceStore

    data = _data_config(args)
    pairing = find_pairs(args.input, data.pair_pattern)
    print(f"[preprocess] {pairing.report()}")
    pairs = dict(sorted(pairing.pairs.items())[: args.limit] if args.limit else pairing.pairs)
    store = preprocess(pairs, args.out, data)
    print(f"slice store written to {store} (its QC montages in {SliceStore(store).qc_images})")
    return 0


def _cmd_download(args) -> int:
    from .data.download import download, download_gdrive
    from .data.ixi import fetch_ixi
    from .data.manifest import get_source

    if args.name == "icbm152":
        from .data.icbm import fetch_icbm

        folder = fetch_icbm(args.dest)
        print(f"the MNI ICBM 2009c T1/T2 pair (verified) is in {folder}")
        return 0
    if args.name == "ixi":
        pairs = fetch_ixi(args.dest, subjects=args.subjects or None)
        print(f"IXI: {len(pairs)} T1/T2 subjects in {args.dest}")
        return 0
    if args.name == "gdrive":
        if not args.id:
            raise ValueError("download gdrive: expected --id FILE_OR_FOLDER_ID (or a share URL)")
        path = download_gdrive(args.id, args.dest, checksum=args.checksum, folder=args.folder)
    elif args.name == "url":
        if not args.url:
            raise ValueError("download url: expected --url URL")
        path = download(args.url, args.dest, checksum=args.checksum)
    else:
        path = download(get_source(args.name), args.dest)
    print(f"downloaded and verified: {path}")
    return 0


_INFERENCE_PRECISION = ("dtype policy to translate in: as trained (default; a mixed_float16 "
                        "model away from a GPU as auto), auto (mixed precision where the "
                        "hardware supports it) or a policy name")
_SYNTHESIS_PRECISION = ("dtype policy to translate in: auto (default: mixed_bfloat16 on CPUs "
                        "with bf16 instructions, mixed_float16 on tensor-core GPUs, else "
                        "float32; masked SSIM against float32 >= 0.995, docs/BENCHMARKS.md), "
                        "float32 to force full precision, or another policy name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m colab_utils",
        description="T1w <-> T2w MRI synthesis with CycleGAN: data, training, evaluation.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train or resume a run (CycleGAN or a comparison method)",
        description="Train --model cyclegan or unit (unpaired), cyclegan_s, unit_s, pix2pix "
                    "or supervised (paired), or fit the non-learned 'simple' baseline, on 2-D "
                    "slices; re-running the same command on the same --run-dir resumes from "
                    "the last checkpoint.")
    train.add_argument("--data", required=True,
                       help="slice store, or a directory with train.npz/val.npz (or train/t1, "
                            "train/t2 folders of .npy slices), or one .npz file")
    train.add_argument("--run-dir", required=True, help="run directory (created or resumed)")
    train.add_argument("--preset", choices=PRESETS, default="paper",
                       help="starting settings (their training part); default: the paper's")
    train.add_argument("--config", help="JSON file of settings (e.g. a run's config.json)")
    train.add_argument("--stop-at-step", type=int, default=None,
                       help="stop with a checkpoint at this global step (resume later)")
    _add_setting_flags(train, TrainConfig(), TrainConfig.field_names(),
                       "training settings (override the preset and --config)")
    train.set_defaults(func=_cmd_train)

    down = commands.add_parser(
        "download", help="download a data source (verified, resumable)",
        description="NAME: 'ixi' (T1 + T2, optionally only --subjects N, streamed), "
                    "'icbm152' (the MNI ICBM 2009c T1/T2 pair of the real-contrast phantom), a "
                    "row of data_manifest.csv (e.g. ixi-demographics), 'gdrive' (--id) or "
                    "'url' (--url).")
    down.add_argument("name", metavar="NAME")
    down.add_argument("--dest", required=True, help="output directory")
    down.add_argument("--subjects", type=int, default=0,
                      help="ixi: only the first N paired subjects, streamed")
    down.add_argument("--id", help="gdrive: file or folder ID, or a share URL")
    down.add_argument("--folder", action="store_true", help="gdrive: the ID is a folder")
    down.add_argument("--url", help="url: what to download")
    down.add_argument("--checksum", help="md5:HEX or sha256:HEX to verify against")
    down.set_defaults(func=_cmd_download)

    phantom = commands.add_parser(
        "phantom", help="generate offline T1/T2 NIfTI phantoms from the MNI152 template",
        description="Kinds: head (a full head like IXI's, the default), brain (skull-stripped, "
                    "like BraTS), thick (a full head in 5 mm slices, like a clinical scan), "
                    "icbm (real T1/T2 contrast: the MNI ICBM 2009c pair, fetched into "
                    "--icbm once).")
    phantom.add_argument("--out", required=True, help="output directory")
    phantom.add_argument("--icbm", default="data/icbm152",
                         help="kind icbm: where the ICBM 2009c pair is (fetched when missing)")
    _add_setting_flags(phantom, DataConfig(), PHANTOM_FIELDS, "phantom settings")
    phantom.set_defaults(func=_cmd_phantom)

    prep = commands.add_parser(
        "preprocess", help="pair, register to MNI152, mask, normalise and slice into a store",
        description="Re-running on the same --out skips subjects already done; changing only "
                    "the split settings re-splits without registering again.")
    prep.add_argument("--input", required=True, help="folder of T1/T2 NIfTI files")
    prep.add_argument("--out", required=True, help="slice store directory")
    prep.add_argument("--limit", type=int, default=0, help="only the first N subjects")
    _add_setting_flags(prep, DataConfig(), PREPROCESS_FIELDS, "data settings")
    prep.set_defaults(func=_cmd_preprocess)

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a trained run on a paired split, both directions",
        description="MAE, MSE, PSNR, SSIM and mutual information per slice, per subject and "
                    "summarised, inside the brain mask and over the whole image. Refuses to "
                    "score a run on subjects it trained on.")
    evaluate.add_argument("--run", required=True,
                          help="run directory (any method) or an exported model file")
    evaluate.add_argument("--data", required=True, help="slice store")
    evaluate.add_argument("--split", default="test",
                          help="val while choosing settings; test once, at the end")
    evaluate.add_argument("--out", help="output directory (default RUN/metrics/SPLIT)")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--precision", help=_INFERENCE_PRECISION)
    evaluate.add_argument("--volumes", action="store_true",
                          help="also translate each subject's whole brain, plane by plane at "
                               "the store's resolution, and score it on axial, coronal and "
                               "sagittal planes, for flicker, and on the scan's own grid "
                               "(needs the scans the store was made from)")
    evaluate.add_argument("--plane-step", type=int, default=1,
                          help="with --volumes: score every n-th plane (default 1, all)")
    evaluate.set_defaults(func=_cmd_evaluate)

    comp = commands.add_parser(
        "compare", help="compare evaluated runs: table, Wilcoxon tests, figures",
        description="Runs without metrics are evaluated first (needs --data or the store "
                    "recorded by an earlier evaluation).")
    comp.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    comp.add_argument("--out", required=True, help="output directory")
    comp.add_argument("--data", help="slice store (evaluate missing runs; qualitative figure)")
    comp.add_argument("--split", default="test")
    comp.add_argument("--reference", default="cyclegan",
                      help="method the others are tested against")
    comp.add_argument("--slices", type=int, default=3,
                      help="test slices in the qualitative figure (0: none)")
    comp.set_defaults(func=_cmd_compare)

    synth = commands.add_parser(
        "synthesize", help="translate a whole NIfTI volume (T1 -> T2 or back)",
        description="Registers the input to the MNI152 template, finds its brain, "
                    "normalises it like the training data, translates every axial slice, and "
                    "writes the result in the input's own grid and affine.")
    synth.add_argument("--model", required=True,
                       help="a model archive (path or https:// URL, see export), a run "
                            "directory, an exported generator .keras / Simple .json, or "
                            "hf://owner/name (one direction, Keras' own form)")
    synth.add_argument("--sha256", help="the archive's SHA-256 (required for a URL)")
    synth.add_argument("--input", required=True, help="input NIfTI (.nii or .nii.gz)")
    synth.add_argument("--output", required=True, help="output NIfTI")
    synth.add_argument("--direction", choices=("t1_to_t2", "t2_to_t1"), default="t1_to_t2")
    synth.add_argument("--batch-size", type=int, default=16)
    synth.add_argument("--precision", default="auto", help=_SYNTHESIS_PRECISION)
    synth.add_argument("--skip-contrast-check", action="store_true",
                       help="translate even an input whose intensities inside the brain are "
                            "ordered like the other contrast's")
    synth.set_defaults(func=_cmd_synthesize)

    pipe = commands.add_parser(
        "pipeline", help="the whole chain: data, preprocess, train every method, evaluate, "
                         "compare",
        description="The README's main job. The demo preset is sized for minutes on a CPU; "
                    "re-running continues where an interrupted run stopped. Every setting "
                    "below overrides the preset's.")
    pipe.add_argument("--out", default="runs/phantom", help="runs and comparison directory")
    pipe.add_argument("--data", default="data", help="data and slice store directory")
    pipe.add_argument("--preset", choices=PRESETS, default="demo",
                      help="demo (minutes on a CPU), paper (the CycleGAN paper's networks and "
                           "schedule; hours on a GPU), ixi-40 (paper on the IXI protocol), "
                           "smoke (seconds)")
    demo = preset("demo")
    _add_setting_flags(pipe, demo.data, DataConfig.field_names(), "data settings")
    _add_setting_flags(pipe, demo.train, TrainConfig.field_names(), "training settings")
    _add_setting_flags(pipe, demo, Experiment.own_fields(), "comparison settings")
    pipe.set_defaults(func=_cmd_pipeline)

    exporter = commands.add_parser(
        "export", help="a finished run as one archive that travels (model card included)",
        description="Writes RUN.model.zip: the generators (Keras' .keras), the settings, "
                    "the preprocessing they expect, and a model card (data, split, metrics "
                    "on validation and test with n, the training data's licence).")
    exporter.add_argument("--run", required=True, help="a finished run directory")
    exporter.add_argument("--out", default=".", help="archive path or folder (default .)")
    exporter.set_defaults(func=_cmd_export)

    listing = commands.add_parser(
        "list", help="what a workspace holds: its slice stores and runs",
        description="One table of the slice stores in WORKDIR/data (source, subjects per "
                    "split, slices) and one of the runs in WORKDIR/runs (method, steps, "
                    "finished, evaluated).")
    listing.add_argument("workdir", metavar="WORKDIR", help="a workspace (a notebook's WORKDIR)")
    listing.set_defaults(func=_cmd_list)

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
    except (ValueError, OSError) as err:  # bad input, missing files, failed downloads
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from .training.health import TrainingFailed  # not at the top: it loads the plotting stack

        if not isinstance(err, TrainingFailed):  # a collapse not rescued, a non-finite loss
            raise
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last checkpoint",
              file=sys.stderr)
        return 130
