"""Instance normalisation, forward + backward: Keras' ``GroupNormalization(groups=-1)``
against :class:`colab_utils.models.InstanceNormalization` (the fused kernel on
TensorFlow's CPU), at the shapes of the 256-px paper step and the 64-px demo.

Prints one JSON line per shape: milliseconds per forward + backward pass of each
layer, their ratio, and the largest difference of output and input gradient.

    python benchmarks/instance_norm.py [--repeats 20] [--shapes 1x256x256x64 4x64x64x16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SHAPES = ("1x256x256x64", "1x128x128x128", "1x64x64x256", "4x64x64x16")


def forward_backward(layer, x, upstream):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [x, *layer.trainable_variables])

    return step


def measure(shape: tuple[int, ...], repeats: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from colab_utils.models import InstanceNormalization

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 2.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    layers = {"keras_ms": keras.layers.GroupNormalization(groups=-1, epsilon=1e-5),
              "fused_ms": InstanceNormalization(epsilon=1e-5)}
    gamma = rng.normal(1.0, 0.3, shape[-1]).astype("float32")
    results, outputs = {}, {}
    for key, layer in layers.items():
        layer.build(shape)
        layer.set_weights([gamma, gamma / 2])
        step = forward_backward(layer, x, upstream)
        for _ in range(3):  # tracing and warm-up
            out = step(x)
        started = time.perf_counter()
        for _ in range(repeats):
            out = step(x)
        float(out[0][0, 0, 0, 0])
        results[key] = round(1000 * (time.perf_counter() - started) / repeats, 2)
        outputs[key] = out
    (y_ref, g_ref), (y, g) = outputs["keras_ms"], outputs["fused_ms"]
    return {"benchmark": "instance_norm", "shape": "x".join(map(str, shape)), **results,
            "speedup": round(results["keras_ms"] / results["fused_ms"], 2),
            "max_abs_diff_y": float(np.abs(y - y_ref).max()),
            "max_abs_diff_dx": float(np.abs(g[0] - g_ref[0]).max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES),
                        help="NxHxWxC of each input (default: %(default)s)")
    args = parser.parse_args(argv)
    for text in args.shapes:
        try:
            shape = tuple(int(part) for part in text.split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 4 or min(shape) < 1:
            parser.error(f"--shapes: expected NxHxWxC with positive integers, got {text!r}")
        print(json.dumps(measure(shape, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
