"""A run resumes on other hardware: a checkpoint of any dtype policy under any other.

Colab gives a T4 (``mixed_float16``, whose loss scaling adds optimizer state) and, when
the GPU quota ends, a CPU (``mixed_bfloat16`` or ``float32``). Resuming across them
keeps the weights and Adam's moments; the loss scale is dropped or started afresh.
(One replica to two, MirroredStrategy: tests/distributed_child.py.)
"""

import itertools
import shutil

import numpy as np
import pytest

from colab_utils.data.toy import write_toy_dataset
from colab_utils.models.factory import build_model
from colab_utils.presets import smoke_config
from colab_utils.training.checkpoints import CheckpointManager, restore_state
from colab_utils.training.fit import train

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _config(policy, **overrides):
    return smoke_config(precision=policy, steps_per_epoch=2, epochs=1, epochs_decay=1,
                        grid_slices=1, tensorboard=False, validate=False, **overrides)


@pytest.fixture(scope="module")
def halfway(tmp_path_factory):
    """For each policy, a CycleGAN run stopped with a checkpoint after 2 of 4 steps."""
    root = tmp_path_factory.mktemp("policies")
    data = write_toy_dataset(root / "toy", n_train=8, n_val=2, n_test=2, size=32, seed=3)
    runs = {}
    for policy in POLICIES:
        runs[policy] = root / policy
        train(_config(policy), runs[policy], data, show_inline=False, stop_at_step=2)
    return data, runs


@pytest.mark.parametrize("written, resumed", list(itertools.product(POLICIES, POLICIES)))
def test_every_policy_restores_every_other_keeping_weights_and_moments(halfway, written,
                                                                       resumed):
    _, runs = halfway
    step, arrays, meta = CheckpointManager(runs[written] / "checkpoints").latest()
    assert step == 2 and meta["policy"] == written
    model = build_model(_config(resumed), steps_per_epoch=2, policy=resumed)
    changes = restore_state(model.state_groups(), arrays, source="test")
    groups = model.state_groups()
    scaled = {written, resumed} & {"mixed_float16"}
    if written == resumed or not scaled:
        assert changes == {}
    elif written == "mixed_float16":
        assert set(changes) == {"gen_optimizer_loss_scale", "disc_optimizer_loss_scale"}
        assert all(v.startswith("dropped") for v in changes.values())
    else:
        assert all(v.startswith("started afresh") for v in changes.values())
    for group in ("model", "gen_optimizer", "disc_optimizer"):
        for i, variable in enumerate(groups[group]):
            np.testing.assert_array_equal(np.asarray(variable.numpy()),
                                          arrays[f"{group}/{i:05d}"], err_msg=f"{group}/{i}")
    # Adam moved: its moments are the run's, not a fresh optimizer's (the first steps of
    # mixed_float16 may all be skipped while its dynamic loss scale comes down).
    moments = [v for v in groups["gen_optimizer"] if "momentum" in v.path]
    if written != "mixed_float16":
        assert moments and max(float(np.abs(v.numpy()).max()) for v in moments) > 0


@pytest.mark.parametrize("written, resumed", [("mixed_float16", "mixed_bfloat16"),
                                              ("mixed_float16", "float32"),
                                              ("float32", "mixed_float16")])
def test_a_t4_run_finishes_on_a_cpu_runtime_and_back(halfway, tmp_path, messages, written,
                                                     resumed):
    data, runs = halfway
    run = shutil.copytree(runs[written], tmp_path / "run")
    result = train(_config(resumed), run, data, show_inline=False)
    assert result.resumed_from == 2 and result.global_step == 4
    assert result.policy == resumed
    said = [m for m in messages if m.startswith("resuming step 2")]
    assert said and f"written under {written}" in said[0] and f"now under {resumed}" in said[0]
    assert "optimizer moments carry over" in said[0]
    assert (run / "export" / "gen_t1_to_t2.keras").is_file()


def test_a_checkpoint_of_an_earlier_version_under_mixed_float16_still_resumes(halfway):
    # Earlier versions kept the loss scale's four variables at the front of the
    # optimizer's group (the error users saw: expected 81 variables, got 85).
    _, runs = halfway
    _, arrays, _ = CheckpointManager(runs["mixed_float16"] / "checkpoints").latest()
    legacy = {k: v for k, v in arrays.items() if "_loss_scale" not in k.split("/")[0]}
    for name in ("gen_optimizer", "disc_optimizer"):
        scale = [arrays[k] for k in sorted(arrays) if k.startswith(f"{name}_loss_scale/")]
        inner = [arrays[k] for k in sorted(arrays) if k.startswith(f"{name}/")]
        for k in [k for k in legacy if k.startswith(f"{name}/")]:
            del legacy[k]
        legacy.update({f"{name}/{i:05d}": a for i, a in enumerate(scale + inner)})
    model = build_model(_config("mixed_bfloat16"), steps_per_epoch=2, policy="mixed_bfloat16")
    changes = restore_state(model.state_groups(), legacy, source="legacy")
    assert set(changes) == {"gen_optimizer_loss_scale", "disc_optimizer_loss_scale"}
    inner = model.state_groups()["gen_optimizer"]
    np.testing.assert_array_equal(inner[-1].numpy(), arrays[f"gen_optimizer/{len(inner) - 1:05d}"])


SLOW = pytest.mark.extended  # about 45 s each: python -m pytest -m extended


@pytest.mark.parametrize("model_name", ["cyclegan", pytest.param("unit", marks=SLOW),
                                        pytest.param("pix2pix", marks=SLOW)])
def test_the_gpu_configuration_trains_and_resumes_without_xla(model_name, tmp_path):
    # What Keras does on a T4: mixed_float16 and the train step compiled with XLA (which
    # also runs on a CPU). Two steps so, then the run resumes without XLA, as on a CPU
    # runtime: the setting is recorded, the steps go on, the losses stay finite.
    data = write_toy_dataset(tmp_path / "toy", n_train=8, n_val=2, n_test=2, size=32, seed=3)
    config = _config("mixed_float16", model=model_name, jit_compile="true")
    first = train(config, tmp_path / "run", data, show_inline=False, stop_at_step=2)
    assert first.global_step == 2 and first.xla  # compiled with XLA, not quietly without
    step, _, meta = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    assert step == 2 and meta["policy"] == "mixed_float16"
    import json

    assert json.loads((tmp_path / "run" / "config.json").read_text())["jit_compile"] == "true"
    second = train(_config("mixed_float16", model=model_name, jit_compile="false"),
                   tmp_path / "run", data, show_inline=False)
    assert second.resumed_from == 2 and second.global_step == 4 and not second.xla
    from colab_utils.viz import read_history

    losses = [v for row in read_history(tmp_path / "run" / "history.csv")
              for v in row.values() if isinstance(v, float)]
    assert losses and np.isfinite(losses).all()


def test_a_deterministic_run_says_it_trains_without_xla(tmp_path, messages):
    data = write_toy_dataset(tmp_path / "toy", n_train=8, n_val=2, n_test=2, size=32, seed=3)
    config = _config("float32", jit_compile="true", deterministic=True)
    result = train(config, tmp_path / "run", data, show_inline=False, stop_at_step=1)
    assert not result.xla
    assert any("jit_compile true, but Keras trains this run without XLA" in m
               for m in messages)
