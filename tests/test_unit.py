"""UNIT and UNIT_s: shared layers, the paper's loss terms, training, resume and export."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from colab_utils.config import UNIT_PAPER_WEIGHTS as PAPER_WEIGHTS
from colab_utils.data.batches import training_dataset
from colab_utils.data.slices import SliceSet
from colab_utils.data.toy import toy_slices
from colab_utils.evaluation.inference import load_generator, load_method
from colab_utils.models import losses
from colab_utils.models.factory import build_model
from colab_utils.models.translation import generate as translate
from colab_utils.models.unit import LOSS_KEYS, UNIT
from colab_utils.presets import smoke_config
from colab_utils.runtime.precision import compute_policy
from colab_utils.training.checkpoints import CheckpointManager
from colab_utils.training.fit import train

ROOT = Path(__file__).resolve().parents[1]


def _batch(seed=0, n=2, size=32):
    rng = np.random.default_rng(seed)
    return tuple(tf.constant(rng.uniform(-1, 1, (n, size, size, 1)).astype("float32"))
                 for _ in range(2))


def test_paper_weights_and_adam_settings_are_the_defaults():
    model = build_model(smoke_config(model="unit"), steps_per_epoch=4)
    assert isinstance(model, UNIT)
    assert PAPER_WEIGHTS == (10.0, 0.1, 100.0, 0.1, 100.0)
    assert (model.weights_gan, model.weights_kl, model.weights_recon, model.weights_kl_cycle,
            model.weights_cycle) == PAPER_WEIGHTS
    # Adam 1e-4, β 0.5 / 0.999 (UNIT's paper) from the default lr 2e-4 (CycleGAN's).
    config = smoke_config(model="unit")
    assert config.model_lr == pytest.approx(1e-4)
    assert float(model.gen_optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(model.disc_optimizer.learning_rate) == pytest.approx(1e-4)
    assert model.gen_optimizer.beta_1 == 0.5 and model.gen_optimizer.beta_2 == 0.999
    assert model.gen_adv_loss is losses.bce_generator_loss  # the paper's GAN objective


def test_shared_layers_are_one_set_of_variables():
    model = build_model(smoke_config(model="unit"), steps_per_epoch=4)
    forward, backward = model.gen_t1_to_t2, model.gen_t2_to_t1
    x, y = _batch()
    before = backward(y).numpy()
    # A change made through the T1 → T2 translator's copy of the shared encoder block ...
    shared = {id(v) for v in model.enc_shared.trainable_variables}
    kernel = next(v for v in forward.trainable_variables
                  if id(v) in shared and len(v.shape) == 4)
    kernel.assign(kernel * 1.5 + 0.01)
    # ... is seen by the T2 → T1 translator: it holds the same variable, not a copy.
    assert id(kernel) in {id(v) for v in backward.trainable_variables}
    assert np.abs(backward(y).numpy() - before).max() > 1e-4
    # A private part changes one direction only.
    after_shared = backward(y).numpy()
    private = model.enc_t1.trainable_variables[0]
    private.assign(private * 2.0)
    np.testing.assert_array_equal(backward(y).numpy(), after_shared)
    # The optimizer updates each variable once: shared ones are not counted twice.
    ids = [id(v) for v in model.generator_variables]
    assert len(ids) == len(set(ids))
    assert len(ids) < len(forward.trainable_variables) + len(backward.trainable_variables)
    assert len(model.variables) == len({id(v) for v in model.variables})


def test_kl_and_objective_on_hand_computed_values():
    # KL of N(μ, I) to N(0, I) as the mean of μ²: (1 + 4 + 0 + 9) / 4.
    assert float(losses.kl_loss(np.array([1.0, -2.0, 0.0, 3.0]))) == pytest.approx(3.5)
    model = build_model(smoke_config(model="unit_s", lambda_supervised=7.0), steps_per_epoch=4)
    terms = {"adv_t1_to_t2": 0.5, "adv_t2_to_t1": 0.25, "kl_t1": 2.0, "kl_t2": 1.0,
             "recon_t1": 0.01, "recon_t2": 0.02, "kl_cycle_t1": 3.0, "kl_cycle_t2": 1.0,
             "cycle_t1": 0.03, "cycle_t2": 0.01, "supervised_t1_to_t2": 0.1,
             "supervised_t2_to_t1": 0.2}
    # 10·0.75 + 0.1·3 + 100·0.03 + 0.1·4 + 100·0.04 + 7·0.3
    assert model.total(terms) == pytest.approx(7.5 + 0.3 + 3.0 + 0.4 + 4.0 + 2.1)


def test_each_loss_term_is_its_definition_on_the_parts_outputs():
    model = build_model(smoke_config(model="unit"), steps_per_epoch=4)
    x, y = _batch(1)
    out = model._generator_losses(x, y, training=False)

    def run(name, value):
        return getattr(model, name)(value, training=False).numpy()

    mean_t1 = run("enc_shared", run("enc_t1", x))
    mean_t2 = run("enc_shared", run("enc_t2", y))
    fake_t2 = run("dec_t2", run("dec_shared", mean_t1))
    fake_t1 = run("dec_t1", run("dec_shared", mean_t2))
    recon_t1 = run("dec_t1", run("dec_shared", mean_t1))
    cycle_mean_t1 = run("enc_shared", run("enc_t2", fake_t2))
    cycle_t1 = run("dec_t1", run("dec_shared", cycle_mean_t1))
    d2 = model.disc_t2(fake_t2).numpy()
    expected = {
        "kl_t1": np.mean(mean_t1 ** 2), "kl_t2": np.mean(mean_t2 ** 2),
        "recon_t1": np.mean(np.abs(x.numpy() - recon_t1)),
        "kl_cycle_t1": np.mean(cycle_mean_t1 ** 2),
        "cycle_t1": np.mean(np.abs(x.numpy() - cycle_t1)),
        "supervised_t1_to_t2": np.mean(np.abs(y.numpy() - fake_t2)),
        "supervised_t2_to_t1": np.mean(np.abs(x.numpy() - fake_t1)),
        # BCE against "real" on logits: mean(log(1 + exp(-d))).
        "adv_t1_to_t2": np.mean(np.log1p(np.exp(-d2))),
    }
    for key, value in expected.items():
        assert float(out[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), key
    # The translators are the chains of the parts (the latent mean, no noise).
    np.testing.assert_allclose(model.gen_t1_to_t2(x).numpy(), fake_t2, atol=1e-6)
    assert float(out["gen_total"]) == pytest.approx(float(model.total(out)), rel=1e-6)


@pytest.mark.parametrize("model_name", ["unit", "unit_s"])
def test_a_step_returns_finite_named_losses_and_updates_every_part(model_name):
    model = build_model(smoke_config(model=model_name), steps_per_epoch=4)
    before = {name: [v.numpy().copy() for v in getattr(model, name).trainable_variables]
              for name in ("enc_t1", "enc_shared", "dec_t2", "disc_t1")}
    out = model.train_step(_batch(2))
    assert set(out) == set(LOSS_KEYS)
    assert all(math.isfinite(float(v)) for v in out.values())
    assert float(out["kl_t1"]) > 0 and float(out["recon_t1"]) > 0
    supervised = float(out["supervised_t1_to_t2"])
    assert (supervised > 0) if model_name == "unit_s" else supervised == 0.0
    for name, values in before.items():
        after = getattr(model, name).trainable_variables
        assert any(np.abs(a.numpy() - b).max() > 0 for a, b in zip(after, values)), name
    assert int(model.global_step.numpy()) == 1


def test_latent_noise_is_a_function_of_seed_and_step():
    config = smoke_config(model="unit")
    a, b = (build_model(config, steps_per_epoch=4) for _ in range(2))
    b.set_weights(a.get_weights())
    mean = tf.zeros((1, 8, 8, 32))
    np.testing.assert_array_equal(a._sample(mean, 0, True).numpy(),
                                  b._sample(mean, 0, True).numpy())
    assert np.abs(a._sample(mean, 0, True).numpy() - a._sample(mean, 1, True).numpy()).max() > 0
    assert np.std(a._sample(mean, 0, True).numpy()) == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(a._sample(mean, 0, False).numpy(), mean.numpy())
    # A large run seed (8 x seed above 2**31) draws noise as well.
    big = build_model(smoke_config(model="unit", seed=2**30), steps_per_epoch=4)
    assert np.std(big._sample(mean, 3, True).numpy()) == pytest.approx(1.0, abs=0.05)


def test_unit_learns_a_known_translation():
    """T2 = inverted T1 (the toy task): unpaired, the translation error falls well below
    the untrained model's."""
    config = smoke_config(model="unit", gen_filters=16, n_res_blocks=2, disc_filters=16,
                          batch_size=4, lr=2e-3, augment=False)
    t1, t2, _ = toy_slices(64, 32, seed=0)
    v1, v2, _ = toy_slices(16, 32, seed=1)
    data = SliceSet(t1[..., None], t2[..., None], paired=True, source="toy")
    model = build_model(config, steps_per_epoch=1000)

    def error():
        return float(np.abs(translate(model.gen_t1_to_t2, v1[..., None])[..., 0] - v2).mean())

    untrained = error()
    batches = training_dataset(data, batch_size=4, steps_per_epoch=16, seed=0, start_step=0,
                               end_step=200, paired=False, augmentation=False)
    model.fit(batches, epochs=1, steps_per_epoch=200, verbose=0, shuffle=False)
    trained = error()
    assert trained < 0.4 * untrained, (untrained, trained)


_HALF = """
import sys
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train
from colab_utils.training.fit import train
config = smoke_config(model=sys.argv[1], steps_per_epoch=3, deterministic=True, grid_slices=1,
                      validate=False, tensorboard=False)
train(config, sys.argv[2], sys.argv[3], show_inline=False,
      stop_at_step=int(sys.argv[4]) if len(sys.argv) > 4 else None)
"""


@pytest.mark.extended  # UNIT; CycleGAN's new-process resume runs in CI (test_training.py)
@pytest.mark.parametrize("model_name", ["unit"])
def test_resume_in_a_new_process_equals_an_uninterrupted_run(tmp_path, toy_data, model_name):
    """6 steps in one run == 3 steps in a process, then a new process for the other 3: weights,
    both optimizers' moments and the step (the latent noise follows the step)."""
    def half(run, *stop):
        out = subprocess.run([sys.executable, "-c", _HALF, model_name, str(run), str(toy_data),
                              *map(str, stop)], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stderr  # the log

    config = smoke_config(model=model_name, steps_per_epoch=3, deterministic=True,
                          grid_slices=1, validate=False, tensorboard=False)
    train(config, tmp_path / "straight", toy_data, show_inline=False)
    half(tmp_path / "split", 3)
    assert CheckpointManager(tmp_path / "split" / "checkpoints").steps()[-1] == 3
    assert "resuming at step 3" in half(tmp_path / "split")
    _, a, meta = CheckpointManager(tmp_path / "straight" / "checkpoints").latest()
    _, b, _ = CheckpointManager(tmp_path / "split" / "checkpoints").latest()
    assert a.keys() == b.keys() and set(meta["variables"]) == {"model", "gen_optimizer",
                                                                "disc_optimizer"}
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("model_name", ["unit", pytest.param("unit_s", marks=pytest.mark.extended)])
def test_cli_trains_unit_with_grids_and_an_export_that_loads(tmp_path, toy_data, model_name):
    run = tmp_path / model_name
    out = subprocess.run(
        [sys.executable, "-m", "colab_utils", "train", "--model", model_name, "--data",
         str(toy_data), "--run-dir", str(run), "--preset", "smoke", "--steps-per-epoch", "2",
         "--tensorboard", "false"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "grids" / "epoch_001.png").stat().st_size > 1000
    assert json.loads((run / "config.json").read_text())["model"] == model_name
    method = load_method(run)  # what evaluate, compare and synthesize load
    assert method.name == model_name and set(method.translators) == {"t1_to_t2", "t2_to_t1"}
    x = toy_slices(2, 32, seed=5)[0][..., None]
    for direction in ("t1_to_t2", "t2_to_t1"):
        generator = load_generator(run / "export" / f"gen_{direction}.keras")
        y = translate(generator, x)
        assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() <= 1
        # Rebuilt to translate under another policy, it computes the same to bfloat16's
        # precision.
        mixed = load_generator(run / "export" / f"gen_{direction}.keras",
                               precision="mixed_bfloat16")
        assert compute_policy(mixed) == "mixed_bfloat16"
        np.testing.assert_allclose(translate(mixed, x), y, atol=0.05)
