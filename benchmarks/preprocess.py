"""Preprocessing speed and memory: seconds per subject (registration included) and the
peak memory of the whole process tree, for 1 and for 8 full-head phantom subjects.

Prints one JSON line. Each measurement runs in a fresh process.

    python benchmarks/preprocess.py [--workers 2] [--phantom DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(phantom: Path, n: int, workers: int) -> dict:
    from _memory import PeakTreeMemory

    from colab_utils.config import DataConfig
    from colab_utils.data.nifti import find_pairs
    from colab_utils.data.preprocess import preprocess

    pairs = dict(sorted(find_pairs(phantom).pairs.items())[:n])
    with tempfile.TemporaryDirectory() as store, PeakTreeMemory() as memory:
        # The first three subjects make one of each split; the others train.
        split = Path(store) / "split.csv"
        split.write_text("subject,split\n" + "".join(
            f"{s},{('test', 'val')[i] if i < 2 else 'train'}\n" for i, s in enumerate(pairs)))
        config = DataConfig(split_file=str(split))
        started = time.perf_counter()
        preprocess(pairs, Path(store) / "store", config, workers=workers)
        seconds = time.perf_counter() - started
    return {"subjects": n, "seconds": seconds, "peak_rss_mb": memory.peak_mb}


def run_child(phantom: Path, n: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--phantom", str(phantom),
                          "--workers", str(workers)], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"preprocess benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phantom", help="folder of 8+ phantom subjects (made if missing)")
    parser.add_argument("--kind", default="head", help="phantom kind: head, brain or thick")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        print(json.dumps(measure(Path(args.phantom), args.child, args.workers)))
        return
    from colab_utils.data.phantom import write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        phantom = Path(args.phantom or Path(tmp) / "phantom")
        write_phantom(phantom, 8, seed=0, kind=args.kind)  # keeps existing subjects
        # Memory: 3 vs 8 subjects through one worker (same process count, so
        # any growth would come from the subjects); speed: 8 subjects, all workers.
        three = run_child(phantom, 3, 1)
        eight_serial = run_child(phantom, 8, 1)
        eight = run_child(phantom, 8, args.workers)
    print(json.dumps({
        "benchmark": "preprocess", "workers": args.workers,
        "kind": args.kind,
        "volume": {"head": "full-head phantom: T1 256x256x193 sagittal + T2 axial slab "
                           "256x256x121 (1.3 mm, LAS), to MNI152 1 mm",
                   "brain": "brain-only phantom: T1 256x256x161 + T2 256x256x124 (1.3 mm, LAS)",
                   "thick": "full-head phantom in 5 mm axial slices, T1 and T2 256x256x30"
                   }[args.kind],
        "s_per_subject": round(eight["seconds"] / 8, 2),
        "s_per_subject_1_worker": round(eight_serial["seconds"] / 8, 2),
        "s_three_subjects_incl_startup": round(three["seconds"], 2),
        "peak_rss_mb_3": round(three["peak_rss_mb"], 1),
        "peak_rss_mb_8": round(eight_serial["peak_rss_mb"], 1),
        "peak_rss_mb_8_all_workers": round(eight["peak_rss_mb"], 1),
    }))


if __name__ == "__main__":
    main()
