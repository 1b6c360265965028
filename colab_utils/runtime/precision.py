"""Mixed-precision policy: choose it from the hardware and apply it to Keras."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from ..validation import check_choice
from .distribute import replica_count, tpu_attached

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def cpu_has_bf16() -> bool:
    """True when the CPU advertises bfloat16 instructions (AVX-512 BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_policy() -> str:
    """``mixed_float16`` on GPUs with tensor cores (compute capability >= 7.0),
    ``mixed_bfloat16`` on TPUs and bf16-capable CPUs, else ``float32``."""
    if tf.config.list_logical_devices("TPU") or tpu_attached():
        return "mixed_bfloat16"
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (7, 0):
            return "mixed_float16"
        return "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def resolve_policy(precision: str) -> str:
    """Map a config value (``auto`` or a policy name) to a Keras policy name."""
    check_choice("precision", precision, ("auto",) + POLICIES)
    if precision == "auto":
        return auto_policy()
    return precision


def inference_policy(trained: str, precision: str | None) -> str:
    """The dtype policy a trained generator translates in.

    ``precision`` ``None`` keeps the policy it was trained in, except
    ``mixed_float16`` away from a GPU (a CPU has no fast float16: a model trained on a
    T4 and used on a CPU runtime translates in :func:`auto_policy`'s choice); ``auto``
    is the fastest this hardware offers (``mixed_bfloat16`` on CPUs with bf16
    instructions, ``mixed_float16`` on tensor-core GPUs); a policy name forces it
    (``float32`` for bit-for-bit float32 results).
    """
    if precision is None:
        if trained == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
            return auto_policy()
        return trained
    return resolve_policy(precision)


def apply_policy(policy: str) -> str:
    """Set Keras' global dtype policy; models built afterwards use it."""
    check_choice("dtype policy", policy, POLICIES)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def make_optimizer(policy: str, learning_rate, beta_1: float, beta_2: float):
    """Adam, wrapped in dynamic loss scaling under ``mixed_float16``."""
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_gradients(optimizer, tape, loss, variables) -> None:
    """Differentiate ``loss`` recorded on ``tape`` and update ``variables``.

    ``loss`` is this replica's mean over its share of the batch. Under a
    ``tf.distribute`` strategy the optimizer sums the replicas' gradients, so
    the loss is divided by the number of replicas first: the update equals the
    one-device update for the global batch. ``scale_loss`` multiplies by the
    loss scale under ``LossScaleOptimizer`` (``mixed_float16``) and is the
    identity otherwise; ``apply_gradients`` unscales.
    """
    replicas = replica_count()
    with tape:  # record the scaling too, or no gradient would reach the variables
        if replicas > 1:
            loss = loss / replicas
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    optimizer.apply_gradients(zip(grads, variables))


def compute_policy(model) -> str:
    """The dtype policy a model's layers compute in (its first layer after the input,
    looked for inside a nested model)."""
    layer = next(layer for layer in model.layers
                 if not isinstance(layer, keras.layers.InputLayer))
    if isinstance(layer, keras.Model):
        return compute_policy(layer)
    return layer.dtype_policy.name


def with_policy(model, policy: str):
    """A copy of a functional ``model`` that computes under another dtype policy.

    Every layer takes ``policy`` except the model's output layers, which stay
    float32 (the convention of :mod:`colab_utils.models`). Variables stay
    float32 under every policy, so the weights are copied unchanged: a
    generator trained in float32 can translate in ``mixed_float16`` on a GPU
    or ``mixed_bfloat16`` on a TPU, and one trained in mixed precision in
    float32.
    """
    import copy

    check_choice("dtype policy", policy, POLICIES)
    config = copy.deepcopy(model.get_config())
    policy_config = keras.dtype_policies.serialize(keras.DTypePolicy(policy))
    float32_config = keras.dtype_policies.serialize(keras.DTypePolicy("float32"))

    def set_policies(config):
        # A nested model (UNIT's translators chain encoders and generators) is a layer
        # whose config holds its own layers: its outputs stay float32 too.
        entries = config["output_layers"]
        entries = [entries] if entries and isinstance(entries[0], str) else entries
        outputs = {entry[0] for entry in entries}
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                continue
            if "layers" in layer["config"]:
                set_policies(layer["config"])
                continue
            layer["config"]["dtype"] = (float32_config if layer["name"] in outputs
                                        else policy_config)

    set_policies(config)
    copy_ = model.__class__.from_config(config)
    copy_.set_weights(model.get_weights())
    return copy_
