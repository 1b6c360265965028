"""Run by tests/test_distribute.py in a fresh process: TensorFlow must be told to split
the CPU into 2 logical devices before anything initialises it.

    python tests/distributed_child.py OUT_DIR

Trains the same CycleGAN three ways (one device; MirroredStrategy over the 2
CPU devices; one device for 2 steps, then resumed under MirroredStrategy) and
checks two building blocks exactly. Prints one JSON object of measurements.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from colab_utils.data.toy import write_toy_dataset  # noqa: E402
from colab_utils.models.cyclegan import ImagePool  # noqa: E402
from colab_utils.presets import smoke_config
from colab_utils.runtime.distribute import resolve_strategy  # noqa: E402
from colab_utils.runtime.precision import apply_gradients  # noqa: E402
from colab_utils.training.checkpoints import CheckpointManager  # noqa: E402
from colab_utils.training.fit import train  # noqa: E402


def norm(arrays: dict, keys) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(arrays[k], np.float64) ** 2) for k in keys)))


def diff(a: dict, b: dict, keys) -> float:
    return norm({k: np.asarray(a[k], np.float64) - b[k] for k in keys}, keys)


def sgd_step(strategy, x, y, kernel):
    """One plain-SGD step of a linear model through apply_gradients; the new kernel."""
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
        model.layers[0].kernel.assign(kernel)
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
        optimizer.build(model.trainable_variables)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb) - yb) ** 2)  # this replica's mean
        apply_gradients(optimizer, tape, loss, model.trainable_variables)

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((x, y)))
    for xb, yb in dataset:
        strategy.run(tf.function(replica_step), args=(xb, yb))
    return model.layers[0].kernel.numpy()


def pool_outputs(strategy, batches):
    """What an ImagePool returns for a sequence of global batches, and its final state."""
    with strategy.scope():
        pool = ImagePool(3, (2, 2, 1), seed=5)
    outputs = []
    for step, batch in enumerate(batches):
        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
        for local in dataset:
            result = strategy.run(tf.function(lambda b, s=step: pool(b, step=s)), args=(local,))
            outputs.append(np.concatenate(
                [r.numpy() for r in strategy.experimental_local_results(result)]))
    return np.stack(outputs), pool.images.numpy(), int(pool.count.numpy())


def main(out: Path) -> None:
    one, mirrored = resolve_strategy("default"), resolve_strategy("mirrored")
    rng = np.random.default_rng(0)
    result = {"replicas": mirrored.num_replicas_in_sync}

    # The loss scaling across replicas, with an optimizer that is not scale-invariant.
    x, y = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 1)).astype("float32")
    kernel = rng.normal(size=(3, 1)).astype("float32")
    k_one, k_mirrored = sgd_step(one, x, y, kernel), sgd_step(mirrored, x, y, kernel)
    result["sgd_update"] = float(np.abs(k_one - kernel).max())
    result["sgd_difference"] = float(np.abs(k_one - k_mirrored).max())

    # The image pool: same returns and the same contents, given the same global batches.
    batches = [rng.uniform(-1, 1, (4, 2, 2, 1)).astype("float32") for _ in range(4)]
    (out_a, pool_a, count_a), (out_b, pool_b, count_b) = (pool_outputs(s, batches)
                                                          for s in (one, mirrored))
    result["pool_output_difference"] = float(np.abs(out_a - out_b).max())
    result["pool_state_difference"] = float(np.abs(pool_a - pool_b).max())
    result["pool_counts"] = [count_a, count_b]
    result["pool_swapped"] = int(np.sum(np.any(out_a != np.stack(batches), axis=(2, 3, 4))))

    # Whole training runs.
    data = write_toy_dataset(out / "toy", n_train=16, n_val=4, n_test=4, size=32, seed=3)

    def config(strategy):
        return smoke_config(batch_size=4, steps_per_epoch=2, deterministic=True,
                                 grid_slices=1, checkpoint_every_steps=1, keep_checkpoints=5,
                                 tensorboard=False, verbose=0, strategy=strategy)

    train(config("default"), out / "one", data, show_inline=False)
    train(config("mirrored"), out / "mirrored", data, show_inline=False)
    # The one-device run as it was at step 2 (its later checkpoints and export removed),
    # resumed under the mirrored strategy.
    shutil.copytree(out / "one", out / "switched")
    for path in (out / "switched" / "checkpoints").glob("ckpt-00000000[34].*"):
        path.unlink()
    shutil.rmtree(out / "switched" / "export")
    switched = train(config("mirrored"), out / "switched", data, show_inline=False)
    result["switched_resumed_from"] = switched.resumed_from

    reference = CheckpointManager(out / "one" / "checkpoints")
    final, step_2 = reference.load(4)[0], reference.load(2)[0]
    names = reference.load(4)[1]["variables"]["model"]
    kernels = [f"model/{i:05d}" for i, n in enumerate(names) if n.endswith("kernel")]
    result["kernel_update_2_to_4"] = diff(final, step_2, kernels)
    for run in ("mirrored", "switched"):
        step, arrays, meta = CheckpointManager(out / run / "checkpoints").latest()
        result[run] = {
            "step": step, "strategy": meta["strategy"],
            "kernel_difference": diff(final, arrays, kernels),
            "counters_equal": all(np.array_equal(final[f"model/{i:05d}"],
                                                 arrays[f"model/{i:05d}"])
                                  for i, n in enumerate(names)
                                  if n.endswith(("count", "global_step"))),
            "pool_difference": max(float(np.abs(final[f"model/{i:05d}"]
                                                - arrays[f"model/{i:05d}"]).max())
                                   for i, n in enumerate(names) if n.endswith("images")),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
