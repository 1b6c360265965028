"""Which ``tf.distribute`` strategy a run trains under: one device, several GPUs, a
TPU, or several machines.

Training code never splits batches or sums gradients itself. The model, its
optimizers and its image pools are built inside ``strategy.scope()``, Keras'
``fit`` hands each replica its share of every global batch, and the
optimizer all-reduces (sums) the replicas' gradients. The pieces that are
ours to get right are:

* each replica's loss is its mean over its own share of the batch, divided by
  the number of replicas (:func:`colab_utils.runtime.precision.apply_gradients`), so
  the summed gradient equals the one-device gradient of the global batch;
* the image pools see the whole global batch in order on every replica
  (:class:`colab_utils.models.cyclegan.ImagePool` gathers it), so their contents and
  random draws are the same as on one device;
* checkpoints hold plain arrays (one copy of each variable), so a checkpoint
  written under one strategy resumes under any other.

Strategies, by name (``TrainConfig.strategy``):

* ``"auto"``: a TPU when TensorFlow sees one, several machines when
  ``TF_CONFIG`` names more than one task, every GPU when there are two or
  more, else the default (one device). (Colab's TPU runtime is now a TPU VM
  without TensorFlow, so the notebooks do not offer TPUs; the old
  ``COLAB_TPU_ADDR`` is not looked at.)
* ``"default"``: TensorFlow's default strategy, the first GPU or the CPU.
* ``"mirrored"``: ``MirroredStrategy`` over every GPU (over every logical CPU
  device when there is no GPU, which is how the tests run it).
* ``"tpu"``: ``TPUStrategy`` on a TPU that TensorFlow can reach (a Cloud TPU VM with
  ``tensorflow-tpu``; untested by this project).
* ``"multiworker"``: ``MultiWorkerMirroredStrategy``, configured by the
  ``TF_CONFIG`` environment variable of each machine.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from ..config import STRATEGIES
from ..validation import check_choice


def tf_config_tasks(environ=None) -> int:
    """How many tasks (chief + workers) the ``TF_CONFIG`` environment variable describes
    (0 when it is unset); a malformed value is a ``ValueError`` that quotes it."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return 0
    try:
        cluster = json.loads(text)["cluster"]
        return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"TF_CONFIG: expected JSON like {{\"cluster\": {{\"worker\": "
                         f"[\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", "
                         f"\"index\": 0}}}}, got {text[:200]!r} ({err})") from err


def tpu_attached(environ=None) -> bool:
    """Whether TensorFlow sees a TPU here (a Cloud TPU VM names it in ``TPU_NAME``)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("TPU_NAME")) or bool(tf.config.list_logical_devices("TPU"))


def auto_strategy_name(environ=None) -> str:
    """The strategy ``"auto"`` stands for on this machine (see the module docstring)."""
    if tpu_attached(environ):
        return "tpu"
    if tf_config_tasks(environ) > 1:
        return "multiworker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get(
            "TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as err:
        raise RuntimeError(
            f"strategy 'tpu': no TPU could be reached ({err}). In Colab choose Runtime > "
            "Change runtime type > TPU, or use strategy 'auto' or 'default'") from err
    return tf.distribute.TPUStrategy(resolver)


def _mirrored_devices() -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


_CACHE: dict[str, tf.distribute.Strategy] = {}


def resolve_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` for a configured name (see :data:`STRATEGIES`).

    Strategies are created once per process and reused: TensorFlow's
    collective ops and TPU initialisation must not be set up twice.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "auto":
        name = auto_strategy_name()
    if name not in _CACHE:
        if name == "default":
            _CACHE[name] = tf.distribute.get_strategy()
        elif name == "mirrored":
            _CACHE[name] = tf.distribute.MirroredStrategy(_mirrored_devices())
        elif name == "tpu":
            _CACHE[name] = _tpu_strategy()
        else:
            if tf_config_tasks() < 1:
                raise ValueError("strategy 'multiworker': expected the TF_CONFIG environment "
                                 "variable to describe the cluster (see the README's Scaling "
                                 "section), but it is not set")
            _CACHE[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _CACHE[name]


def describe(strategy: tf.distribute.Strategy) -> str:
    """``"MirroredStrategy, 2 replicas"``: for the log line a run starts with."""
    replicas = strategy.num_replicas_in_sync
    return f"{type(strategy).__name__.lstrip('_')}, {replicas} replica{'s' * (replicas != 1)}"


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """The global batch must split evenly over the replicas (each gets ``batch / n``)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"config field 'batch_size': expected a multiple of the {replicas} replicas of "
            f"{describe(strategy)} (it is the global batch, split evenly), got {batch_size}")


def replica_count() -> int:
    """Replicas of the strategy in effect where this is called (1 outside any)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync
