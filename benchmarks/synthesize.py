"""Whole-volume synthesis time: a full-head phantom T1 to a synthetic T2 in the input's space.

Registration to MNI152, normalisation, every brain slice through a paper-size
ResNet-9 generator at 256×256 (untrained weights: the time is the same), and
resampling back, in one sitting: in float32 and in the mixed policy this
hardware offers (``mixed_bfloat16`` on CPUs with bf16 instructions; the same
weights), with the bf16 output's accuracy against float32 (masked SSIM per
axial plane of the written volume, mean and minimum). ``--context`` adds a 2.5-D
generator (K = 1: three input channels). With ``--torch-python`` the same
generator in PyTorch translates as many slices, float32 and bf16 autocast, in
the same sitting (``benchmarks/torch_reference.py infer``), for the ratio of the
translation times. Prints one JSON line:

    python benchmarks/synthesize.py [--batch-size 16] [--torch-python PATH] [--context]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_volume(path: Path) -> tuple:
    """A full-head phantom T1 (256 × 256 × 193 sagittal, 1 mm), written to ``path``."""
    import numpy as np

    from colab_utils.data.nifti import save_volume
    from colab_utils.data.phantom import make_subject

    subject = make_subject(0, seed=0)
    save_volume(path, subject.t1, subject.t1_affine, dtype=np.int16)
    return subject.t1.shape


def run_torch(python: str, size: int, slices: int, batch: int, precision: str) -> float:
    script = Path(__file__).resolve().parent / "torch_reference.py"
    out = subprocess.run([python, str(script), "infer", str(size), str(slices), str(batch),
                          precision], capture_output=True, text=True, check=True)
    return float(re.search(r": ([0-9.]+) s", out.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed", default="auto",
                        help="the mixed policy beside float32 (auto: this hardware's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--context", action="store_true", help="also a 2.5-D generator (K = 1)")
    parser.add_argument("--torch-python", help="python of a venv with torch==2.13.0")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import nibabel as nib
    import numpy as np
    from _memory import PeakTreeMemory
    from train_step import cpu_name

    from colab_utils.evaluation.inference import Method, keras_translator
    from colab_utils.evaluation.synthesis import synthesize_volume
    from colab_utils.metrics import plane_scores
    from colab_utils.models.networks import resnet_generator
    from colab_utils.runtime.precision import resolve_policy, with_policy

    mixed = resolve_policy(args.mixed)
    keras.utils.set_random_seed(0)
    record = {"benchmark": "synthesize", "image_size": args.image_size,
              "generator": "resnet_9blocks", "batch_size": args.batch_size, "cpu": cpu_name()}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "t1.nii.gz"
        record["volume_shape"] = list(test_volume(source))

        def translate(generator, name, k=0):
            method = Method("resnet_9blocks", args.image_size,
                            {"t1_to_t2": keras_translator(generator, args.batch_size)},
                            context=k)
            out = Path(tmp) / f"{name}.nii.gz"
            with PeakTreeMemory() as memory:
                started = time.perf_counter()
                info = synthesize_volume(method, source, out, direction="t1_to_t2",
                                         batch_size=args.batch_size)
                seconds = time.perf_counter() - started
            return seconds, info, memory.peak_mb, np.asarray(nib.load(str(out)).dataobj,
                                                              np.float32)

        full = resnet_generator(image_size=args.image_size, n_blocks=9)
        runs = {"fp32": translate(full, "fp32"), "mixed": translate(with_policy(full, mixed),
                                                                      "mixed")}
        if args.context:
            runs["k1"] = translate(resnet_generator(image_size=args.image_size, n_blocks=9,
                                                    channels=3), "k1", k=1)
    for key, (seconds, info, peak, _) in runs.items():
        record.update({f"{key}_s_per_volume": round(seconds, 2),
                       f"{key}_translate_s": info["translate_s"],
                       f"{key}_peak_rss_mb": round(peak, 1)})
    info = runs["fp32"][1]
    record.update({"mixed_policy": mixed, "n_slices": info["n_slices"],
                   **{k: info[k] for k in ("load_s", "register_s", "resample_s", "save_s")},
                   "mixed_speedup": round(runs["fp32"][0] / runs["mixed"][0], 2)})
    if args.context:
        record["k1_over_k0_fp32"] = round(runs["k1"][0] / runs["fp32"][0], 3)
    reference, estimate = runs["fp32"][3], runs["mixed"][3]
    inside = reference > 0
    scale = float(reference[inside].max())
    ssim = plane_scores(reference / scale, estimate / scale, inside, axis=2)["ssim"]
    record.update({"mixed_vs_fp32_ssim_mean": round(float(np.nanmean(ssim)), 5),
                   "mixed_vs_fp32_ssim_min": round(float(np.nanmin(ssim)), 5)})
    if args.torch_python:
        for key, name in (("fp32", "fp32"), ("mixed", "bf16")):
            if key == "mixed" and "bfloat16" not in mixed:
                continue
            torch_s = run_torch(args.torch_python, args.image_size, info["n_slices"],
                                args.batch_size, name)
            record[f"torch_{name}_translate_s"] = round(torch_s, 2)
            record[f"{name}_translate_vs_torch"] = round(
                torch_s / runs[key][1]["translate_s"], 2)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
