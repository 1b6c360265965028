"""tf.distribute: strategy choice, and training under MirroredStrategy over 2 logical CPUs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from colab_utils.presets import smoke_config
from colab_utils.runtime.distribute import (
    auto_strategy_name,
    check_global_batch,
    resolve_strategy,
    tf_config_tasks,
)

ROOT = Path(__file__).resolve().parents[1]


def test_auto_picks_a_visible_tpu_then_cluster_then_default():
    assert auto_strategy_name({}) == "default"  # this CPU machine: one device
    # Colab's old TPU variable means nothing now (its TPU runtime has no TensorFlow).
    assert auto_strategy_name({"COLAB_TPU_ADDR": "10.0.0.2:8470"}) == "default"
    assert auto_strategy_name({"TPU_NAME": "local"}) == "tpu"
    cluster = json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                          "task": {"type": "worker", "index": 0}})
    assert tf_config_tasks({"TF_CONFIG": cluster}) == 2
    assert auto_strategy_name({"TF_CONFIG": cluster}) == "multiworker"
    single = json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})
    assert auto_strategy_name({"TF_CONFIG": single}) == "default"


def test_bad_names_and_settings_are_clear_errors():
    with pytest.raises(ValueError, match="TF_CONFIG: expected JSON"):
        tf_config_tasks({"TF_CONFIG": "{not json"})
    with pytest.raises(ValueError, match=r"strategy.*'mirorred'.*mirrored"):
        resolve_strategy("mirorred")
    with pytest.raises(ValueError, match="strategy"):
        smoke_config(strategy="gpus")

    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match="batch_size.*multiple of the 2 replicas.*got 3"):
        check_global_batch(3, TwoReplicas())
    check_global_batch(4, TwoReplicas())


def test_strategy_is_a_resumable_setting():
    a, b = smoke_config(strategy="default"), smoke_config(strategy="mirrored")
    from colab_utils.config import RESUMABLE_CHANGES

    assert set(a.differences(b)) == {"strategy"} <= RESUMABLE_CHANGES


@pytest.mark.extended  # about 2 minutes: python -m pytest -m extended
def test_mirrored_training_over_two_cpus_matches_one_device(tmp_path):
    """Runs tests/distributed_child.py: TensorFlow splits the CPU into 2 logical devices
    only before it starts, so this needs a fresh process."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_child.py"),
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Building blocks, exactly: the loss is divided by the replicas before the gradients
    # are summed (plain SGD is not scale-invariant, so a missing division would double
    # the step), and the image pool sees the global batch in order on every replica.
    assert result["sgd_update"] > 0.01 and result["sgd_difference"] < 1e-6
    assert result["pool_output_difference"] == 0 and result["pool_state_difference"] == 0
    assert result["pool_counts"] == [3, 3] and result["pool_swapped"] > 0
    # Whole runs (4 CycleGAN steps, global batch 4): the same step counters and pool
    # fill, and kernels within 5% of the size of the last 2 steps' update. The rest is
    # float32 summation order, which Adam amplifies where a gradient is near zero
    # (measured: 1% for a run mirrored from the start, 2e-4% after a switch at step 2).
    update = result["kernel_update_2_to_4"]
    assert update > 0.01
    for run in ("mirrored", "switched"):
        assert result[run]["step"] == 4 and result[run]["counters_equal"]
        assert result[run]["strategy"] == "MirroredStrategy, 2 replicas"
        assert result[run]["kernel_difference"] < 0.05 * update, (run, result)
        assert result[run]["pool_difference"] < 0.05
    # A checkpoint written on one device resumed under the mirrored strategy.
    assert result["switched_resumed_from"] == 2
