import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from colab_utils.config import TrainConfig
from colab_utils.data.toy import toy_slices
from colab_utils.evaluation.inference import load_generator
from colab_utils.models.translation import generate as translate
from colab_utils.presets import smoke_config
from colab_utils.training.checkpoints import CheckpointManager, CheckpointWarning
from colab_utils.training.fit import train
from colab_utils.viz import read_history

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "colab_utils", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True)
    if check and out.returncode:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out


def _final_state(run_dir):
    manager = CheckpointManager(Path(run_dir) / "checkpoints")
    step, arrays, meta = manager.latest()
    return step, arrays


def test_run_directory_has_every_output(tmp_path, toy_data):
    run = tmp_path / "run"
    config = smoke_config(steps_per_epoch=3, grid_slices=2, checkpoint_every_steps=2,
                               keep_checkpoints=3)
    result = train(config, run, toy_data, show_inline=False)
    assert result.global_step == result.total_steps == 6
    assert TrainConfig.load(run / "config.json") == config
    assert sorted(p.name for p in (run / "grids").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    history = read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]
    assert [row["step"] for row in history] == [3, 6]
    assert all(np.isfinite(row["gen_total"]) and row["val_supervised_t1_to_t2"] > 0
               for row in history)
    assert history[0]["lr"] == pytest.approx(2e-4) and history[1]["lr"] == 0.0
    assert (run / "loss_curves.png").stat().st_size > 1000
    assert any((run / "tensorboard").iterdir())
    # Every 2 steps (2, 4, 6) and every epoch end (3, 6); the last 3 are kept.
    assert CheckpointManager(run / "checkpoints").steps() == [3, 4, 6]
    # The exported generator computes what the trained one does.
    exported = load_generator(run / "export" / "gen_t1_to_t2.keras")
    t1, _, _ = toy_slices(2, 32, seed=9)
    x = t1[..., None]
    np.testing.assert_allclose(translate(exported, x), translate(exported, x))
    assert exported.name == "gen_t1_to_t2"
    # Running it again finds the run finished: nothing is trained or rewritten.
    before = (run / "checkpoints" / "ckpt-000000006.npz").stat().st_mtime_ns
    again = train(config, run, toy_data, show_inline=False)
    assert again.resumed_from == 6 and again.global_step == 6
    assert (run / "checkpoints" / "ckpt-000000006.npz").stat().st_mtime_ns == before
    # Other settings in the same run directory are refused, naming what changed.
    with pytest.raises(ValueError, match=r"config.json: .*lambda_cycle: 10.0 -> 3.0"):
        train(smoke_config(steps_per_epoch=3, lambda_cycle=3.0), run, toy_data)


def _kill_after_checkpoint(args, checkpoints: Path, step: int, delay: float) -> int:
    """Start ``python -m colab_utils *args``; SIGKILL it ``delay`` s after checkpoint
    ``step`` (or a later one) is committed. Returns the exit code (-9 when killed)."""
    process = subprocess.Popen([sys.executable, "-m", "colab_utils", *map(str, args)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if any(s >= step for s in CheckpointManager(checkpoints).steps()):
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return process.wait(timeout=60)


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path, toy_data):
    """8 steps in one process == a run SIGKILLed at a random moment (a checkpoint is
    written after every step, so a kill lands in or between writes) and a restart.
    Every committed checkpoint verifies after the kill."""
    common = ["--data", toy_data, "--preset", "smoke", "--steps-per-epoch", 4,
              "--deterministic", "true", "--grid-slices", 1, "--validate", "false",
              "--checkpoint-every-steps", 1, "--keep-checkpoints", 2, "--tensorboard", "false"]
    _cli("train", "--run-dir", tmp_path / "straight", *common)
    run = tmp_path / "killed"
    checkpoints = run / "checkpoints"
    moments = random.Random(7)
    kills = 0
    for after_step in (3,):
        code = _kill_after_checkpoint(["train", "--run-dir", run, *common], checkpoints,
                                      after_step, moments.uniform(0.0, 0.3))
        kills += code == -signal.SIGKILL
        manager = CheckpointManager(checkpoints)
        for step in manager.steps():  # committed means complete: each one verifies
            manager.load(step)
    assert kills >= 1, "the run finished before it could be killed"
    out = _cli("train", "--run-dir", run, *common)
    assert "resuming at step" in out.stderr
    step_a, a = _final_state(tmp_path / "straight")
    step_b, b = _final_state(run)
    assert step_a == step_b == 8
    assert a.keys() == b.keys()
    for key in a:  # weights, optimizer moments and counters, image pools, step
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert any("pool" in name for name in json.loads(
        (checkpoints / "ckpt-000000008.json").read_text())["meta"]["variables"]["model"])


def test_validates_every_nth_epoch_and_after_the_last(tmp_path, toy_data):
    config = smoke_config(steps_per_epoch=1, epochs=3, epochs_decay=2,
                               validate_every=2, grid_slices=1, tensorboard=False)
    train(config, tmp_path / "run", toy_data, show_inline=False)
    history = read_history(tmp_path / "run" / "history.csv")
    validated = [row["epoch"] for row in history
                 if isinstance(row.get("val_gen_total"), float)]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert validated == [2, 4, 5]
    assert all(row["val_gen_total"] == "" for row in history if row["epoch"] in (1, 3))
    # Every epoch still draws its grid.
    assert len(list((tmp_path / "run" / "grids").iterdir())) == 5


def test_corrupt_latest_checkpoint_resumes_from_previous(tmp_path, toy_data):
    run = tmp_path / "run"
    config = smoke_config(steps_per_epoch=2, validate=False, grid_slices=0)
    train(config, run, toy_data, show_inline=False)
    latest = run / "checkpoints" / "ckpt-000000004.npz"
    data = bytearray(latest.read_bytes())
    data[-200] ^= 0xFF
    latest.write_bytes(bytes(data))
    longer = smoke_config(steps_per_epoch=2, validate=False, grid_slices=0, epochs=2)
    with pytest.warns(CheckpointWarning, match="SHA-256 mismatch"):
        result = train(longer, run, toy_data, show_inline=False)
    assert result.resumed_from == 2 and result.global_step == 6


def test_wrong_slice_size_is_a_clear_error(tmp_path, toy_data):
    with pytest.raises(ValueError, match=r"train.npz: expected 64×64 slices .* got 32×32"):
        train(smoke_config(image_size=64, jitter_size=72), tmp_path / "run", toy_data)


def test_mixed_bfloat16_training_runs_with_float32_outputs(tmp_path, toy_data):
    result = train(smoke_config(precision="mixed_bfloat16", steps_per_epoch=2,
                                     validate=False, grid_slices=1), tmp_path / "run", toy_data,
                   show_inline=False)
    assert result.policy == "mixed_bfloat16"
    history = read_history(tmp_path / "run" / "history.csv")
    assert all(np.isfinite(row["gen_total"]) for row in history)
    gen = load_generator(tmp_path / "run" / "export" / "gen_t1_to_t2.keras")
    assert gen.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert gen(np.zeros((1, 32, 32, 1), "float32")).dtype == "float32"


def test_mixed_float16_uses_loss_scaling(toy_data):
    import keras
    import tensorflow as tf

    from colab_utils.models.factory import build_model

    model = build_model(smoke_config(precision="mixed_float16"), 4, "mixed_float16")
    assert isinstance(model.gen_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.disc_optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.gen_t1_to_t2.get_layer("stem_conv").compute_dtype == "float16"
    # Training really steps: the scaled loss must be recorded on the tape (a scaling
    # outside it once left every gradient None). The first steps overflow float16 at
    # the initial scale of 2**15 and are skipped while the scale halves; then weights move.
    before = model.gen_t1_to_t2.trainable_variables[0].numpy().copy()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    history = model.fit(tf.data.Dataset.from_tensors((x, x)).repeat(), steps_per_epoch=6,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["gen_total"][0])
    assert float(model.gen_optimizer.scale_loss(1.0)) < 2.0 ** 15
    assert np.abs(model.gen_t1_to_t2.trainable_variables[0].numpy() - before).max() > 1e-5


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, toy_data):
    import keras

    class Poison(keras.callbacks.Callback):
        """Breaks a generator's weights after step 3, so step 4's losses are NaN."""

        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.global_step.numpy()) == 3:
                w = self.model.gen_t1_to_t2.trainable_variables[0]
                w.assign(np.full(w.shape, np.nan, w.dtype))

    run = tmp_path / "run"
    config = smoke_config(steps_per_epoch=5, checkpoint_every_steps=2, grid_slices=0,
                               tensorboard=False)
    with pytest.raises(RuntimeError, match=r"step 4: .*nan.*newest checkpoint is step 2"
                       r".*smaller --lr \(now 0.0002\)"):
        train(config, run, toy_data, show_inline=False, extra_callbacks=[Poison()])
    manager = CheckpointManager(run / "checkpoints")
    assert manager.steps() == [2]  # step 4's broken state was never written
    _, arrays, _ = manager.latest()
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    assert not (run / "history.csv").exists() or "nan" not in (run / "history.csv").read_text()
    # Roll back and continue at a lower learning rate: the same run directory, a smaller
    # lr. It resumes from step 2 and finishes with finite losses at the new rate.
    lower = smoke_config(steps_per_epoch=5, checkpoint_every_steps=2, grid_slices=0,
                              tensorboard=False, lr=5e-5)
    result = train(lower, run, toy_data, show_inline=False)
    assert result.resumed_from == 2 and result.global_step == 10
    history = read_history(run / "history.csv")
    assert all(np.isfinite(row["gen_total"]) for row in history)
    assert history[0]["lr"] == pytest.approx(5e-5)
    assert TrainConfig.load(run / "config.json").lr == 5e-5


def test_loss_curves_plot_each_term_in_its_group():
    from colab_utils import viz

    history = [{"epoch": e, "step": 40 * e, "gen_total": 2.0 / e, "structure_t1_to_t2": 0.1 / e,
                "identity_t1": 0.0, "disc_t1": 0.3, "val_gen_total": 1.5 / e} for e in (1, 2)]
    unit = [{**row, "kl_t1": 0.2, "recon_t2": 0.1} for row in history]
    labels = [[line.get_label() for line in ax.get_lines()] for ax in viz.loss_curves(unit).axes]
    assert labels[0] == ["gen_total", "structure_t1_to_t2", "kl_t1", "recon_t2"]  # UNIT's terms
    fig = viz.loss_curves(history)
    labels = [[line.get_label() for line in ax.get_lines()] for ax in fig.axes]
    # Terms that stay 0 (a weight of 0) are left out.
    assert labels == [["gen_total", "structure_t1_to_t2"], ["disc_t1"], ["val_gen_total"]]

    # Validation every other epoch: its curve goes through the epochs that have it.
    history.append({"epoch": 3, "step": 120, "gen_total": 0.5, "structure_t1_to_t2": 0.03,
                    "identity_t1": 0.0, "disc_t1": 0.3, "val_gen_total": ""})
    history.append({"epoch": 4, "step": 160, "gen_total": 0.4, "structure_t1_to_t2": 0.02,
                    "identity_t1": 0.0, "disc_t1": 0.3, "val_gen_total": 0.3})
    val_line, = viz.loss_curves(history).axes[2].get_lines()
    assert list(val_line.get_xdata()) == [1, 2, 4]
    assert list(val_line.get_ydata()) == [1.5, 0.75, 0.3]


@pytest.mark.parametrize("redraw_seconds, drawn_after", [(0.0, [1, 2, 3, 4]), (1e9, [1, 4])])
def test_loss_curves_redrawn_at_most_every_redraw_seconds_and_when_training_ends(
        tmp_path, monkeypatch, redraw_seconds, drawn_after):
    from types import SimpleNamespace

    import tensorflow as tf

    from colab_utils import viz
    from colab_utils.training import callbacks

    drawn = []  # the number of epochs in each drawing
    real = viz.loss_curves
    monkeypatch.setattr(viz, "loss_curves", lambda rows: drawn.append(len(rows)) or real(rows))
    history = callbacks.HistoryCallback(tmp_path / "history.csv", tmp_path / "curves.png",
                                        redraw_seconds=redraw_seconds)
    step = tf.Variable(0, dtype=tf.int64)
    history.set_model(SimpleNamespace(global_step=step,
                                      optimizer=SimpleNamespace(learning_rate=1e-3)))
    for epoch in range(4):
        history.on_epoch_begin(epoch)
        step.assign_add(5)
        history.on_epoch_end(epoch, {"gen_total": 1.0 / (epoch + 1), "disc_t1": 0.25})
        # The CSV is current after every epoch, drawn or not.
        assert [r["step"] for r in read_history(tmp_path / "history.csv")] == [
            5 * (e + 1) for e in range(epoch + 1)]
    history.on_train_end()
    history.on_train_end()  # nothing new: not drawn again
    assert drawn == drawn_after
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_learning_rate_schedule_constant_then_linear_decay():
    import keras

    from colab_utils.models.schedules import LinearDecay

    def rates(schedule, steps=9):
        return [float(schedule(step)) for step in range(steps)]

    # The paper's: constant for 4 steps, then to zero over 4.
    schedule = LinearDecay(1.0, 4, 4)
    np.testing.assert_allclose(rates(schedule), [1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0], atol=1e-7)
    # Saved with a model's optimizer: the schedule survives the round trip.
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert rates(again) == rates(schedule)
    with pytest.raises(ValueError, match="non-negative step counts"):
        LinearDecay(1.0, -4, 4)


def test_a_step_checkpoint_never_stands_for_an_epoch_that_was_not_judged():
    from types import SimpleNamespace

    import tensorflow as tf

    from colab_utils.training import callbacks

    saved = []
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = callbacks.CheckpointCallback(saved.append, every_steps=2, steps_per_epoch=4)
    checkpoint.set_model(SimpleNamespace(global_step=step))
    for _ in range(4):
        step.assign_add(1)
        checkpoint.on_train_batch_end(0)
    # Step 2 is saved on the way; step 4 ends the epoch: only the epoch's end saves it,
    # after the callbacks before it (the collapse check) have judged the epoch.
    assert saved == [2]
    checkpoint.on_epoch_end(0)
    assert saved == [2, 4]


def test_a_session_budget_stops_with_a_checkpoint_and_the_next_session_finishes(
        tmp_path, toy_data, messages):
    import time

    from colab_utils.training.callbacks import SessionBudget
    from colab_utils.training.checkpoints import CheckpointManager

    config = smoke_config(steps_per_epoch=3, epochs=1, epochs_decay=1, tensorboard=False,
                          grid_slices=1, validate=False)
    run = tmp_path / "run"
    # A budget that ends during the first steps (the floor for a step and a checkpoint
    # is SessionBudget.SAVE_SECONDS).
    first = train(config, run, toy_data, show_inline=False,
                  deadline=time.monotonic() + SessionBudget.SAVE_SECONDS + 1)
    assert first.stopped == "time budget" and not first.finished
    assert 0 < first.global_step < 6
    assert CheckpointManager(run / "checkpoints").steps()[-1] == first.global_step
    assert not (run / "export").exists()  # not a finished model
    assert any("time budget is reached at step" in m and "run the same command" in m.lower()
               for m in messages)
    second = train(config, run, toy_data, show_inline=False)
    assert second.resumed_from == first.global_step and second.finished
    assert (run / "export" / "gen_t1_to_t2.keras").is_file()
    # A budget shorter than a step and a checkpoint: said before anything starts.
    with pytest.raises(ValueError, match=r"time budget leaves .* less than a step and a "
                                         r"checkpoint"):
        train(config.replace(max_minutes=0.1), tmp_path / "other", toy_data,
              show_inline=False)
    assert not (tmp_path / "other").exists()


def test_the_run_estimates_its_time_in_sessions():
    from colab_utils.training.callbacks import time_estimate

    # 2,500 steps per epoch for 200 epochs at 0.2 s a step (ixi-40 on a T4, roughly):
    # 500,000 steps, about 28 h; in 50-minute sessions, 34 of them.
    estimate = time_estimate(0.2, 500_000, 500_000, session_minutes=50)
    assert estimate["sessions"] == 34 and "about 27.8 h" in estimate["text"]
    assert "34 more session(s)" in estimate["text"]
