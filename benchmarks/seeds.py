"""How often the demo CycleGAN fails: seeds 0 … N−1 on the same phantom data.

Trains the demo preset's CycleGAN (or ``--method``, e.g. cyclegan_s) once per seed
(the data and split fixed, only the networks' seed varying; the collapse check and its
restarts as in the preset),
scores each on the validation subjects (never test) and prints one JSON line:

* ``collapsed``: runs that end more than 0.1 below the Simple baseline's validation
  masked SSIM in either direction, or with the tissue order inverted (rank
  correlation with the real target below 0), or without a model (the restarts did
  not rescue them): gross failures, not fine margins;
* ``restarts``: collapse restarts, in total; ``first_attempt_collapsed``: seeds whose
  first attempt collapsed (the raw failure rate, before restarts); ``per_seed``: each
  seed's validation
  masked SSIM both ways (mean of the per-subject means), tissue order, restarts and
  the seed it finished with.

    python benchmarks/seeds.py --seeds 5 [--method cyclegan] [--data STORE] [--out DIR]
                               [--set NAME=VALUE ...]

``--set`` changes a setting of the preset by name (e.g. ``--set max_restarts=0`` to
count the raw collapses, or a stabiliser under trial); ``--data`` reuses a demo slice
store (made in ``--out`` when missing, about a minute).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GROSS_MARGIN = 0.1


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _validation_scores(run: Path, store: Path) -> dict:
    """Per direction: mean of the per-subject mean masked SSIMs, and the tissue order."""
    import numpy as np

    from colab_utils.evaluation.inference import load_method
    from colab_utils.evaluation.scoring import evaluate, paired_split
    from colab_utils.training.health import contrast_order

    result = evaluate(run, store, split="val", examples=0)
    scores = {}
    for direction in ("t1_to_t2", "t2_to_t1"):
        values = [float(r["ssim_masked"]) for r in result.per_subject
                  if r["direction"] == direction]
        scores[f"ssim_{direction}"] = round(float(np.mean(values)), 4)
    method = load_method(run)
    if method.name != "simple":
        slices = paired_split(store, "val", method.image_size)
        for direction in ("t1_to_t2", "t2_to_t1"):
            target = slices.t2 if direction == "t1_to_t2" else slices.t1
            estimate = method.translate_split(slices, direction)
            scores[f"order_{direction}"] = round(
                contrast_order(target, estimate, slices.mask), 3)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--method", default="cyclegan",
                        help="the learned method to train per seed (default cyclegan)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--data", help="a demo slice store (default: made under --out)")
    parser.add_argument("--out", default="runs/seeds", help="where the runs go")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the demo preset, by name")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from colab_utils.pipeline import prepare_data, train_method
    from colab_utils.presets import method_config, preset
    from colab_utils.training.fit import train
    from colab_utils.training.health import TrainingFailed
    from colab_utils.training.rundir import RunDir, read_record

    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected NAME=VALUE")
        overrides[name] = _value(value)
    out = Path(args.out)
    base = preset("demo", **overrides)
    store = Path(args.data) if args.data else prepare_data(base.data, out / "data")
    started = time.perf_counter()
    simple = _validation_scores(train_method(base, "simple", store, out).run_dir, store)
    per_seed, restarts, collapsed = [], 0, 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        experiment = base.with_overrides(seed=seed)
        run = RunDir(out / f"{args.method}-seed{seed}")
        entry = {"seed": seed}
        try:
            train(method_config(experiment, args.method), run.path, store, show_inline=False)
            entry.update(_validation_scores(run.path, store))
        except TrainingFailed as err:
            entry["error"] = str(err)
        entry["restarts"] = int(read_record(run.restarts_file).get("attempt", 0))
        entry["final_seed"] = run.summary().get("seed") if "error" not in entry else None
        gross = "error" in entry or any(
            entry[f"ssim_{d}"] < simple[f"ssim_{d}"] - GROSS_MARGIN or entry[f"order_{d}"] < 0
            for d in ("t1_to_t2", "t2_to_t1"))
        entry["collapsed"] = bool(gross)
        restarts += entry["restarts"]
        collapsed += gross
        per_seed.append(entry)
        print(json.dumps(entry), file=sys.stderr)
    config = method_config(base, args.method)
    print(json.dumps({
        "benchmark": "seeds", "preset": "demo", "method": args.method,
        "phantom_kind": base.data.phantom_kind, "overrides": overrides, "seeds": args.seeds,
        "collapsed": collapsed, "restarts": restarts,
        "first_attempt_collapsed": sum(entry["restarts"] > 0 or "error" in entry
                                       for entry in per_seed),
        "max_restarts": config.max_restarts,
        "collapse_grace": config.collapse_grace,
        "steps_per_run": config.total_epochs * config.steps_per_epoch,
        "simple": simple, "per_seed": per_seed,
        "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
