"""Input-pipeline throughput: slices/s out of the unpaired tf.data pipeline at 256×256
(CycleGAN augmentation on), against the CycleGAN training rate at the same size.

Prints one JSON line; ``ratio`` is pipeline slices/s over training images/s
(both domains count: one training step at batch 1 consumes one T1 and one T2).

    python benchmarks/input_pipeline.py [--slices 200] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pipeline_rate(n_slices: int, batches: int, batch_size: int) -> float:
    import numpy as np

    from colab_utils.data.datasets import unpaired_dataset
    from colab_utils.data.slices import SliceSet
    from colab_utils.data.toy import toy_slices

    t1, t2, _ = toy_slices(n_slices, 256, seed=0)
    slices = SliceSet(t1[..., None], t2[..., None], paired=True, source="bench")
    epochs = -(-batches * batch_size // n_slices) + 1
    dataset = unpaired_dataset(slices, batch_size=batch_size, epochs=epochs, seed=0)
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing, first prefetches
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        t1_batch, t2_batch = next(iterator)
    np.asarray(t1_batch)
    return 2 * batches * batch_size / (time.perf_counter() - started)


def training_rate(steps: int) -> tuple[float, str]:
    import numpy as np
    import tensorflow as tf

    from colab_utils.config import TrainConfig
    from colab_utils.models.factory import build_model
    from colab_utils.runtime.precision import resolve_policy

    policy = resolve_policy("auto")
    model = build_model(TrainConfig(precision="auto"), 1000, policy)
    batch = tuple(tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 1)),
                              tf.float32) for _ in range(2))
    step = tf.function(model.train_step)
    float(step(batch)["gen_total"])
    started = time.perf_counter()
    for _ in range(steps):
        float(step(batch)["gen_total"])
    return 2 * steps / (time.perf_counter() - started), policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    slices_per_s = pipeline_rate(args.slices, args.batches, args.batch_size)
    train_per_s, policy = training_rate(args.train_steps)
    print(json.dumps({
        "benchmark": "input_pipeline", "size": 256, "batch": args.batch_size,
        "augmentation": "resize 286 + random crop 256 + flip",
        "slices_per_s": round(slices_per_s, 1),
        "train_slices_per_s": round(train_per_s, 3), "train_policy": policy,
        "ratio": round(slices_per_s / train_per_s, 1),
    }))


if __name__ == "__main__":
    main()
