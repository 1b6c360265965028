"""Deterministic training batches: the order of an epoch is a function of (seed, epoch).

That makes resuming exact: a run restarted at step k of epoch e rebuilds the
epoch's order and skips its first k batches. Augmentation (resize jitter,
random crop, left-right flip, as in CycleGAN) uses stateless random ops
seeded by the slice's position in the epoch, so it replays identically too.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .slices import SliceSet, to_network


def steps_per_epoch(slices: SliceSet, batch_size: int, max_steps: int = 0) -> int:
    """Batches per epoch: the larger domain once through, capped by ``max_steps`` if > 0."""
    steps = len(slices) // batch_size
    if steps < 1:
        raise ValueError(f"{slices.source}: expected at least batch_size={batch_size} slices, "
                         f"got {len(slices)}")
    return min(steps, max_steps) if max_steps > 0 else steps


def _cycled_permutation(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    reps = -(-length // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:length]


def epoch_indices(n_t1: int, n_t2: int, *, paired: bool, length: int, seed: int,
                  epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices of one epoch for each domain (independent shuffles unless paired)."""
    rng = np.random.default_rng([seed, epoch])
    idx_t1 = _cycled_permutation(rng, n_t1, length)
    idx_t2 = idx_t1.copy() if paired else _cycled_permutation(rng, n_t2, length)
    return idx_t1, idx_t2


def augment(image, seed, *, image_size: int, jitter_size: int):
    """Resize to ``jitter_size``, crop a random ``image_size`` square, flip left-right at random."""
    channels = image.shape[-1]
    if jitter_size > image_size:
        image = tf.image.resize(image, [jitter_size, jitter_size], method="bilinear")
        image = tf.image.stateless_random_crop(image, [image_size, image_size, channels],
                                               seed=seed)
    flip_seed = seed + tf.constant([0, 1], seed.dtype)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def training_dataset(slices: SliceSet, *, batch_size: int, steps_per_epoch: int, seed: int,
                     start_step: int, end_step: int, paired: bool | None = None,
                     augmentation: bool = True, jitter_size: int | None = None,
                     context: int = 0) -> tf.data.Dataset:
    """Batches ``(t1, t2)`` for global steps ``[start_step, end_step)``.

    Each batch is (batch, H, W, C) float32 in [-1, 1]. Step ``s`` is batch
    ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``; an epoch's order
    and augmentation depend only on ``(seed, epoch)``, so any range of steps
    can be rebuilt exactly (this is what makes resuming exact).

    Args:
        slices: The training split.
        batch_size, steps_per_epoch: Batch size and batches per epoch.
        seed: Seeds the order and the augmentation.
        start_step, end_step: The global steps to produce.
        paired: Keep T1 and T2 aligned (same slices, same augmentation);
            defaults to ``slices.paired``.
        augmentation: Apply jitter, crop and flip.
        jitter_size: Size before the random crop (``None``: no resize).
        context: Each image is its slice with this many neighbours below and above
            as channels (:mod:`colab_utils.data.context`), gathered batch by batch.
    """
    paired = slices.paired if paired is None else paired
    if paired and not slices.paired:
        raise ValueError(f"{slices.source}: paired batches requested but the split is unpaired")
    if not 0 <= start_step <= end_step:
        raise ValueError(f"expected 0 <= start_step <= end_step, got {start_step}, {end_step}")
    length = steps_per_epoch * batch_size
    parts = {"t1": [], "t2": [], "epoch": [], "position": []}
    for epoch in range(start_step // steps_per_epoch, -(-end_step // steps_per_epoch)):
        idx_t1, idx_t2 = epoch_indices(len(slices.t1), len(slices.t2), paired=paired,
                                       length=length, seed=seed, epoch=epoch)
        first = max(start_step - epoch * steps_per_epoch, 0) * batch_size
        last = min(end_step - epoch * steps_per_epoch, steps_per_epoch) * batch_size
        parts["t1"].append(idx_t1[first:last])
        parts["t2"].append(idx_t2[first:last])
        parts["epoch"].append(np.full(last - first, epoch, np.int64))
        parts["position"].append(np.arange(first, last, dtype=np.int64))
    columns = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in parts.items()}
    t1_store, t2_store = slices.t1, slices.t2
    height, width, channels = slices.image_shape
    shape = (height, width, channels * (2 * context + 1))
    size = height
    if context:
        from .context import rows_of

        rows = {"t1": rows_of(slices, context, "t1"), "t2": rows_of(slices, context, "t2")}

        def neighbourhood(store, at):  # (2k + 1, H, W, C) -> (H, W, (2k + 1)·C)
            return np.moveaxis(store[at], 0, 2).reshape(shape)

        def gather(i1, i2):
            return (neighbourhood(t1_store, rows["t1"][i1]),
                    neighbourhood(t2_store, rows["t2"][i2]))
    else:
        def gather(i1, i2):
            return t1_store[i1], t2_store[i2]

    def load(i1, i2, epoch, position):
        t1, t2 = tf.numpy_function(gather, [i1, i2], [tf.float32, tf.float32], stateful=False)
        t1.set_shape(shape)
        t2.set_shape(shape)
        if augmentation:
            base = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + epoch, position])
            t1 = augment(t1, base, image_size=size, jitter_size=jitter_size or size)
            other = base if paired else base + tf.constant([0, 1 << 40], tf.int64)
            t2 = augment(t2, other, image_size=size, jitter_size=jitter_size or size)
        return to_network(t1), to_network(t2)

    dataset = tf.data.Dataset.from_tensor_slices(
        (columns["t1"], columns["t2"], columns["epoch"], columns["position"]))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_distribution_options())


def _distribution_options() -> tf.data.Options:
    """Under several workers, each takes its share of every global batch (the batches are
    built the same way on every worker; there are no files to shard)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def eval_batches(slices: SliceSet, batch_size: int, *,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of a split in order, without augmentation, for validation (paired if it is)."""
    n = min(len(slices.t1), len(slices.t2))
    t1 = tf.data.Dataset.from_tensor_slices(to_network(slices.t1[:n]))
    t2 = tf.data.Dataset.from_tensor_slices(to_network(slices.t2[:n]))
    dataset = tf.data.Dataset.zip((t1, t2)).batch(batch_size, drop_remainder=drop_remainder)
    return dataset.with_options(_distribution_options())
