"""Run every benchmark in one sitting and print their JSON lines and one table.

    python benchmarks/run_all.py                  # full sizes (256 px; tens of minutes on a CPU)
    python benchmarks/run_all.py --quick          # small sizes, a few minutes: checks they run
    python benchmarks/run_all.py --torch-python ../torch-venv/bin/python --out bench.jsonl

Each benchmark runs in its own process, one after another (never side by side:
they would compete for the same cores). The JSON lines are printed as they
come (and appended to ``--out``); the table follows at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plan(args) -> list[tuple[str, list[str]]]:
    """(script, arguments) of every benchmark at the chosen scale."""
    size = "64" if args.quick else "256"
    steps = ["--steps", "2", "--warmup", "1"] if args.quick else ["--steps", "5", "--warmup", "2"]
    torch = ["--torch-python", args.torch_python] if args.torch_python else []
    return [
        ("train_step.py", ["--size", size, *steps, "--mixed", args.mixed,
                           "--models", args.models, *torch]),
        ("input_pipeline.py", (["--slices", "40", "--batches", "60", "--train-steps", "1"]
                               if args.quick else [])),
        ("preprocess.py", []),
        ("synthesize.py", (["--image-size", "64", "--precision", "float32"]
                           if args.quick else ["--precision", "float32"])),
    ]


def run(script: str, arguments: list[str]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE / script), *arguments], capture_output=True,
                         text=True, check=False)
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"benchmarks/{script} failed (exit {out.returncode}):\n"
                           f"{out.stderr[-3000:]}")
    return lines, seconds


def summary(record: dict) -> tuple[str, str, str]:
    """(what, result, peak memory) of one JSON line, for the table."""
    name = record.get("benchmark", "?")
    if name == "train_step":
        result = (f"float32 {record['fp32_s_per_step']} s/step; {record['mixed_policy']} "
                  f"{record['mixed_s_per_step']} s/step ({record['mixed_speedup']}×)")
        if "fp32_vs_torch" in record:
            result += (f"; PyTorch {record['torch_fp32_s_per_step']} s/step "
                       f"(Keras/PyTorch speed {record['fp32_vs_torch']}×)")
        memory = f"{record['fp32_peak_rss_mb']:.0f} / {record['mixed_peak_rss_mb']:.0f} MB"
        return f"train step, {record['model']}, {record['size']} px", result, memory
    peak = next((record[k] for k in record if k.startswith("peak")), None)
    memory = f"{peak:.0f} MB" if isinstance(peak, (int, float)) else "-"
    shown = {k: v for k, v in record.items() if k != "benchmark" and not k.startswith("peak")
             and not isinstance(v, (list, dict))}
    return name.replace("_", " "), ", ".join(f"{k} {v}" for k, v in shown.items()), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not a measure")
    parser.add_argument("--models", default="cyclegan,unit,cyclegan_s,unit_s,pix2pix,supervised")
    parser.add_argument("--mixed", default="auto", help="mixed policy for the train step")
    parser.add_argument("--torch-python", help="python of a venv with torch==2.13.0")
    parser.add_argument("--only", help="comma-separated script names to run (default: all)")
    parser.add_argument("--out", help="append the JSON lines to this file")
    args = parser.parse_args()
    rows = []
    for script, arguments in plan(args):
        if args.only and script.removesuffix(".py") not in args.only.split(","):
            continue
        records, seconds = run(script, arguments)
        for record in records:
            print(json.dumps(record), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            rows.append(summary(record))
        print(f"# {script}: {seconds:.0f} s", file=sys.stderr, flush=True)
    print("\n| benchmark | result | peak memory |\n|---|---|---|")
    for what, result, memory in rows:
        print(f"| {what} | {result} | {memory} |")


if __name__ == "__main__":
    main()
