"""Whole-volume synthesis time: a full-head phantom T1 to a synthetic T2 in the input's space.

Registration to MNI152, normalisation, every brain slice through a paper-size
ResNet-9 generator at 256×256 (untrained weights: the time is the same), and
resampling back, in 2-D (K = 0) and 2.5-D with one neighbour below and above
(K = 1: three input channels, the same network otherwise), in one sitting.
Prints one JSON line:

    python benchmarks/synthesize.py [--precision float32|mixed_bfloat16] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    from _memory import PeakTreeMemory

    from colab_utils.evaluation.inference import Method, keras_translator
    from colab_utils.evaluation.synthesis import synthesize_volume
    from colab_utils.models.networks import resnet_generator

    keras.mixed_precision.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "t1.nii.gz"
        shape = test_volume(source)
        for k in (0, 1):
            generator = resnet_generator(image_size=args.image_size, n_blocks=9,
                                         channels=2 * k + 1)
            method = Method("resnet_9blocks", args.image_size,
                            {"t1_to_t2": keras_translator(generator, args.batch_size)},
                            context=k)
            with PeakTreeMemory() as memory:
                started = time.perf_counter()
                info = synthesize_volume(method, source, Path(tmp) / "t2_synth.nii.gz",
                                         direction="t1_to_t2", batch_size=args.batch_size)
                runs[k] = (time.perf_counter() - started, info, memory.peak_mb)
    seconds, info, peak = runs[0]
    print(json.dumps({
        "benchmark": "synthesize", "volume_shape": list(shape), "image_size": args.image_size,
        "generator": "resnet_9blocks", "precision": args.precision,
        "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
        "s_per_volume": round(seconds, 2), "n_slices": info["n_slices"],
        "s_per_slice": round(info["translate_s"] / info["n_slices"], 4),
        **{k: info[k] for k in ("load_s", "register_s", "translate_s", "resample_s", "save_s")},
        "peak_rss_mb": round(peak, 1),
        "s_per_volume_k1": round(runs[1][0], 2),
        "translate_s_k1": runs[1][1]["translate_s"],
        "k1_over_k0": round(runs[1][0] / seconds, 3),
        "peak_rss_mb_k1": round(runs[1][2], 1)}))


if __name__ == "__main__":
    main()
