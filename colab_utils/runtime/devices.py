"""What this runtime computes on: the accelerator, or the CPU by name."""

from __future__ import annotations

import os
from pathlib import Path


def device_name() -> str:
    """``"1 × Tesla T4 (compute 7.5)"``, ``"TPU (8 cores)"`` or ``"CPU only (AMD EPYC, 2
    cores; bfloat16 instructions)"``."""
    import tensorflow as tf

    from .precision import cpu_has_bf16

    tpus = tf.config.list_logical_devices("TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if tpus:
        return f"TPU ({len(tpus)} cores; untested by this project)"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", "GPU")
        capability = details.get("compute_capability")
        return f"{len(gpus)} × {name}" + (f" (compute {capability[0]}.{capability[1]})"
                                         if capability else "")
    return (f"CPU only ({cpu_name()}, {os.cpu_count()} cores"
            + ("; bfloat16 instructions)" if cpu_has_bf16() else ")"))


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform`` elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware() -> dict:
    """The accelerator, the dtype policy and strategy ``auto`` picks here, the versions."""
    import tensorflow as tf

    from .distribute import auto_strategy_name
    from .precision import auto_policy

    return {"device": device_name(), "policy": auto_policy(), "strategy": auto_strategy_name(),
            "tensorflow": tf.__version__, "cpu": cpu_name(), "cpus": os.cpu_count()}
