"""``tf.data`` pipelines over a slice store (or any layout :func:`load_split` reads).

* :func:`unpaired_dataset`: independent shuffles of T1 and T2 (CycleGAN);
* :func:`paired_dataset`: aligned T1/T2 batches (CycleGAN_s, supervised
  baselines), augmented identically;
* :func:`evaluation_dataset`: a split in order, unaugmented.

The split is read once into memory (the cache) and batches are produced by
:func:`colab_utils.data.batches.training_dataset`: seeded, with CycleGAN's
resize-and-random-crop jitter and left-right flip, prefetched.
"""

from __future__ import annotations

import tensorflow as tf

from ..config import TrainConfig
from .batches import eval_batches, steps_per_epoch, training_dataset
from .slices import SliceSet, fit_to_size
from .store import load_split


def _load(data, split: str, image_size: int | None) -> SliceSet:
    if isinstance(data, SliceSet):
        return fit_to_size(data, image_size) if image_size else data
    return load_split(data, split, size=image_size)


def _dataset(data, split, *, paired, batch_size, epochs, seed, augment, image_size,
             jitter_size) -> tf.data.Dataset:
    slices = _load(data, split, image_size)
    steps = steps_per_epoch(slices, batch_size)
    jitter = jitter_size or TrainConfig.jitter_for(slices.image_shape[0])
    return training_dataset(slices, batch_size=batch_size, steps_per_epoch=steps, seed=seed,
                            start_step=0, end_step=steps * epochs, paired=paired,
                            augmentation=augment, jitter_size=jitter if augment else None)


def unpaired_dataset(data, split: str = "train", *, batch_size: int = 1, epochs: int = 1,
                     seed: int = 0, augment: bool = True, image_size: int | None = None,
                     jitter_size: int | None = None) -> tf.data.Dataset:
    """Batches ``(t1, t2)`` in [-1, 1] with T1 and T2 shuffled independently.

    Args:
        data: A slice store / data directory, or a loaded :class:`SliceSet`.
        split: Which split.
        batch_size, epochs: Batch size and how many epochs of batches.
        seed: Seeds order and augmentation (the same seed gives the same batches).
        augment: Jitter, random crop and flip.
        image_size: Average the slices down to this size first (``None``: as stored).
        jitter_size: Size before the random crop (default: 286/256 of the size).
    """
    return _dataset(data, split, paired=False, batch_size=batch_size, epochs=epochs, seed=seed,
                    augment=augment, image_size=image_size, jitter_size=jitter_size)


def paired_dataset(data, split: str = "train", *, batch_size: int = 1, epochs: int = 1,
                   seed: int = 0, augment: bool = True, image_size: int | None = None,
                   jitter_size: int | None = None) -> tf.data.Dataset:
    """Aligned batches ``(t1, t2)`` of the same slices with the same augmentation.

    Raises:
        ValueError: The split is not paired (e.g. a strictly unpaired store's train split).
    """
    return _dataset(data, split, paired=True, batch_size=batch_size, epochs=epochs, seed=seed,
                    augment=augment, image_size=image_size, jitter_size=jitter_size)


def evaluation_dataset(data, split: str = "test", *, batch_size: int = 8,
                       image_size: int | None = None) -> tf.data.Dataset:
    """A split in order, unaugmented, as aligned ``(t1, t2)`` batches in [-1, 1]."""
    return eval_batches(_load(data, split, image_size), batch_size)
