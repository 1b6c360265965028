"""Train-step throughput at 256×256, batch 1, float32 vs mixed precision, per method.

Prints one JSON line per method (CycleGAN by default, with UNIT's figures in
the same line; ``--models`` adds CycleGAN_s, UNIT_s, pix2pix and the supervised
generator, each at its paper architecture). Each (method, precision) runs in
its own process (the dtype policy and thread pools are process-wide). With
--torch-python, the PyTorch reference (benchmarks/torch_reference.py, CycleGAN)
runs in the same sitting for a ratio.

    python benchmarks/train_step.py [--size 256] [--steps 5] [--rounds 3] [--torch-python PATH]
    python benchmarks/train_step.py --models cyclegan,unit,cyclegan_s,unit_s,pix2pix,supervised

fp32_vs_torch > 1 means the Keras float32 step is faster than PyTorch's; bf16_vs_torch
the same for Keras' mixed_bfloat16 against PyTorch's bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(precision: str, size: int, steps: int, warmup: int, model_name: str) -> dict:
    """Time `steps` train steps after `warmup` (in this process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    import tensorflow as tf

    from colab_utils.config import TrainConfig
    from colab_utils.models.factory import build_model
    from colab_utils.runtime.precision import resolve_policy

    config = TrainConfig(model=model_name, image_size=size, precision=precision, batch_size=1)
    policy = resolve_policy(precision)
    keras.utils.set_random_seed(0)
    model = build_model(config, steps_per_epoch=1000, policy=policy)
    rng = np.random.default_rng(0)
    batch = tuple(rng.uniform(-1, 1, (1, size, size, 1)).astype("float32") for _ in range(2))
    dataset = tf.data.Dataset.from_tensors(batch).repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            # Reading a loss forces the step to finish before the clock is read.
            float(logs["gen_total"])
            self.ends.append(time.perf_counter())

    timer = Timer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0,
              shuffle=False)
    per_step = (timer.ends[-1] - timer.ends[warmup - 1]) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"policy": policy, "s_per_step": per_step, "peak_rss_mb": round(peak_mb, 1)}


def cpu_name() -> str:
    """The CPU's model name and its bf16 matrix instructions, for the record."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = re.search(r"model name\s*:\s*(.+)", text)
    flags = set((re.search(r"flags\s*:\s*(.+)", text) or re.search("(.*)", "")).group(1).split())
    kinds = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name.group(1).strip() if name else 'unknown'} ({os.cpu_count()} cores; " \
           f"{', '.join(kinds) or 'no bf16 instructions'})"


def run_child(precision: str, args, model: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", precision, "--size", str(args.size),
         "--steps", str(args.steps), "--warmup", str(args.warmup), "--model", model],
        capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"benchmark child ({model}, {precision}) failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_torch(python: str, size: int, precision: str = "fp32") -> float:
    script = ROOT / "benchmarks" / "torch_reference.py"
    out = subprocess.run([python, str(script), str(size), "5", precision], capture_output=True,
                         text=True, check=True)
    match = re.search(r"([0-9.]+) s/step", out.stdout)
    if not match:
        raise RuntimeError(f"unexpected output of {script}: {out.stdout!r}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the comparison, alternating implementations; medians")
    parser.add_argument("--mixed", default="auto",
                        help="mixed policy to compare (auto: mixed_bfloat16 on bf16 CPUs, "
                             "mixed_float16 on tensor-core GPUs)")
    parser.add_argument("--torch-python", help="python of a venv with torch, to run the "
                        "PyTorch reference in the same sitting")
    parser.add_argument("--models", default="cyclegan,unit",
                        help="comma-separated methods: cyclegan, unit, cyclegan_s, unit_s, "
                             "pix2pix, supervised (UNIT's figures join CycleGAN's line)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="cyclegan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.size, args.steps, args.warmup, args.model)))
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    joined = "cyclegan" in models and "unit" in models
    unit = compare(args, "unit") if joined else None
    for model in models:
        if joined and model == "unit":
            continue
        result = compare(args, model)
        if joined and model == "cyclegan":
            result.update({f"unit_{key}": unit[key] for key in (
                "fp32_s_per_step", "mixed_s_per_step", "mixed_speedup", "fp32_peak_rss_mb")})
            result["unit_over_cyclegan_fp32"] = round(
                unit["fp32_s_per_step"] / result["fp32_s_per_step"], 2)
        print(json.dumps(result), flush=True)


def compare(args, model: str) -> dict:
    """float32 against mixed precision (and PyTorch for CycleGAN) for one method."""
    # Rounds alternate the implementations so that drifts in machine speed
    # (these machines are noisy) hit all of them alike; medians are reported.
    runs = {"fp32": [], "mixed": [], "torch": [], "torch_bf16": []}
    for _ in range(args.rounds):
        runs["fp32"].append(run_child("float32", args, model))
        if args.torch_python and model == "cyclegan":
            runs["torch"].append(run_torch(args.torch_python, args.size))
        runs["mixed"].append(run_child(args.mixed, args, model))
        if args.torch_python and model == "cyclegan" and "bfloat16" in runs["mixed"][-1]["policy"]:
            runs["torch_bf16"].append(run_torch(args.torch_python, args.size, "bf16"))
    fp32_s = statistics.median(r["s_per_step"] for r in runs["fp32"])
    mixed_s = statistics.median(r["s_per_step"] for r in runs["mixed"])
    result = {
        "benchmark": "train_step", "model": model, "size": args.size, "batch": 1,
        "generator": {"pix2pix": "unet_256", "unit": "unit_resnet_4+4blocks",
                      "unit_s": "unit_resnet_4+4blocks"}.get(model, "resnet_9blocks"),
        "rounds": args.rounds,
        "fp32_s_per_step": round(fp32_s, 3),
        "mixed_s_per_step": round(mixed_s, 3),
        "mixed_policy": runs["mixed"][0]["policy"],
        "mixed_speedup": round(fp32_s / mixed_s, 2),
        "fp32_img_per_s": round(1 / fp32_s, 3),
        "mixed_img_per_s": round(1 / mixed_s, 3),
        "fp32_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["fp32"]),
        "mixed_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["mixed"]),
        "fp32_all_s": [round(r["s_per_step"], 3) for r in runs["fp32"]],
    }
    if runs["torch"]:
        torch_s = statistics.median(runs["torch"])
        result["torch_fp32_s_per_step"] = round(torch_s, 3)
        result["torch_all_s"] = [round(t, 3) for t in runs["torch"]]
        result["fp32_vs_torch"] = round(torch_s / fp32_s, 2)
    if runs["torch_bf16"]:
        torch_s = statistics.median(runs["torch_bf16"])
        result["torch_bf16_s_per_step"] = round(torch_s, 3)
        result["torch_bf16_all_s"] = [round(t, 3) for t in runs["torch_bf16"]]
        result["bf16_vs_torch"] = round(torch_s / mixed_s, 2)
    result["mixed_all_s"] = [round(r["s_per_step"], 3) for r in runs["mixed"]]
    result["cpu"] = cpu_name()
    return result


if __name__ == "__main__":
    main()
