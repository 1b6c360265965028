"""The collapse check (colab_utils.training.health) and the restarts it triggers in training."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from colab_utils.data.slices import SliceSet
from colab_utils.data.store import load_split
from colab_utils.data.toy import toy_slices
from colab_utils.presets import smoke_config
from colab_utils.training.attempts import Attempts
from colab_utils.training.checkpoints import CheckpointManager
from colab_utils.training.fit import train
from colab_utils.training.health import (
    CollapseCheck,
    TrainingCollapsed,
    TrainingFailed,
    contrast_order,
)
from colab_utils.training.rundir import RunDir, read_record
from colab_utils.viz import read_history

ROOT = Path(__file__).resolve().parents[1]


def _toy_split(n, seed):
    t1, t2, mask = toy_slices(n, 32, seed=seed)
    return SliceSet(t1[..., None], t2[..., None], True, f"toy{seed}",
                    mask=mask[..., None] > 0, t2_mask=mask[..., None] > 0)


def _generators(t1_to_t2, t2_to_t1):
    return {"t1_to_t2": t1_to_t2, "t2_to_t1": t2_to_t1}


def _toy_check(grace=0):
    return CollapseCheck(_toy_split(12, 1), _toy_split(24, 2), grace_epochs=grace)


def test_check_passes_the_true_toy_translation_and_flags_one_that_keeps_the_source():
    check = _toy_check()
    masks = check.masks

    def inverse(x):  # the toy's exact translation (T2 = 1.2 - T1 inside the disc)
        return np.where(masks, 1.2 - x, 0.0)

    healthy = check.measure(_generators(inverse, inverse))
    assert healthy["health_ssim_t1_to_t2"] > 0.99 and healthy["health_ssim_t2_to_t1"] > 0.99
    assert healthy["health_order_t1_to_t2"] == pytest.approx(1.0, abs=1e-6)
    assert CollapseCheck.verdict(healthy) == []

    def identity(x):  # what a collapsed CycleGAN does: the source's tissue order
        return x

    collapsed = check.measure(_generators(identity, inverse))
    reasons = CollapseCheck.verdict(collapsed)
    assert collapsed["health_order_t1_to_t2"] < -0.9
    assert any("t1_to_t2 keeps the source's tissue order" in r for r in reasons)
    assert not any(r.startswith("t2_to_t1") for r in reasons)
    # The Simple floor is measured on the same slices and does not depend on the model.
    assert collapsed["health_simple_t1_to_t2"] == healthy["health_simple_t1_to_t2"] > 0.5


def test_check_on_phantom_slices_tells_a_good_translation_from_collapsed_ones(store):
    val, train_split = load_split(store, "val"), load_split(store, "train")
    check = CollapseCheck(val, train_split, grace_epochs=0)
    rng = np.random.default_rng(0)
    targets = {"t1_to_t2": check.slices.t2, "t2_to_t1": check.slices.t1}
    near = {d: np.clip(t + rng.normal(0, 0.02, t.shape), 0, 1).astype(np.float32)
            for d, t in targets.items()}
    good = check.measure(_generators(lambda x: near["t1_to_t2"], lambda x: near["t2_to_t1"]))
    assert CollapseCheck.verdict(good) == []
    assert good["health_ssim_t1_to_t2"] > good["health_simple_t1_to_t2"]
    assert good["health_order_t1_to_t2"] > 0.9 and good["health_order_t2_to_t1"] > 0.9
    # Real phantom contrasts order the tissues oppositely: the source as its own
    # translation is flagged on order both ways.
    kept = check.measure(_generators(lambda x: x, lambda x: x))
    assert kept["health_order_t1_to_t2"] < -0.3 and kept["health_order_t2_to_t1"] < -0.3
    assert sum("tissue order" in r for r in CollapseCheck.verdict(kept)) == 2
    # A flat grey output: no SSIM to speak of, and no order.
    flat = check.measure(_generators(lambda x: np.full_like(x, 0.5),
                                     lambda x: np.full_like(x, 0.5)))
    assert any("below the Simple baseline" in r for r in CollapseCheck.verdict(flat))
    assert contrast_order(check.slices.t2, np.full_like(check.slices.t2, 0.5), check.masks) == 0


def test_guard_waits_for_the_grace_epochs_and_judges_only_whole_epochs():
    check = _toy_check(grace=1)
    measure, guard = check.callbacks(steps_per_epoch=10)
    # A model whose generators keep their input (the source's tissue order).
    image = keras.Input((32, 32, 1))
    keep = keras.Model(image, keras.layers.Activation("linear")(image))
    identity = SimpleNamespace(gen_t1_to_t2=keep, gen_t2_to_t1=keep,
                               global_step=tf.Variable(10, dtype="int64"))
    measure.set_model(identity)
    guard.set_model(identity)
    check.start([])
    logs = {}
    measure.on_epoch_end(0, logs)  # epoch 1: measured, within the grace period
    assert logs["health_order_t1_to_t2"] < 0
    guard.on_epoch_end(0, logs)
    # Epoch 2 cut short at step 15 (a stop inside it): measured, not judged.
    identity.global_step.assign(15)
    measure.on_epoch_end(1, logs := {})
    assert logs["health_order_t1_to_t2"] < 0
    guard.on_epoch_end(1, logs)
    identity.global_step.assign(20)  # epoch 2 complete, past the grace period
    measure.on_epoch_end(1, logs := {})
    with pytest.raises(TrainingCollapsed, match="collapsed at epoch 2: t1_to_t2"):
        guard.on_epoch_end(1, logs)
    assert sorted(check.measured) == [1, 2]


def _figures(ssim, order=0.5, simple=0.85):
    return {f"health_{k}_{d}": v for d in ("t1_to_t2", "t2_to_t1")
            for k, v in (("ssim", ssim), ("simple", simple), ("order", order))}


def test_a_run_far_below_simple_is_left_to_learn_while_it_improves():
    # Real contrast: a learning run can trail Simple by far for a few hundred steps (the
    # clinical pairs: 0.29 against Simple's 0.59 with the right tissue order).
    learning = CollapseCheck.verdict(_figures(0.29), before=_figures(0.20))
    assert learning == []
    stalled = CollapseCheck.verdict(_figures(0.29), before=_figures(0.28))
    assert len(stalled) == 2 and "and not improving (+0.010 since the epoch before)" in stalled[0]
    # Without an epoch before it (a verdict right after the start), the margin decides.
    assert len(CollapseCheck.verdict(_figures(0.29))) == 2
    # Far below and improving, but the discriminators have won (LSGAN loss 0.05, against
    # 0.25 at balance; two collapsed demo seeds on real contrast): a collapse.
    won = CollapseCheck.verdict(_figures(0.19), before=_figures(0.01),
                                losses={"disc_t1": 0.05, "disc_t2": 0.19})
    assert len(won) == 2 and "discriminators have won (loss T1 0.050)" in won[0]
    assert CollapseCheck.verdict(_figures(0.19), before=_figures(0.01),
                                 losses={"disc_t1": 0.25, "disc_t2": 0.27}) == []
    # At the last epoch far below Simple is a failure whatever the trend.
    assert len(CollapseCheck.verdict(_figures(0.5), before=_figures(0.3), final=True)) == 2
    # Close to Simple: fine whatever the trend; the source's order kept: never fine.
    assert CollapseCheck.verdict(_figures(0.80), before=_figures(0.81)) == []
    kept = CollapseCheck.verdict(_figures(0.60, order=-0.3), before=_figures(0.40))
    assert len(kept) == 2 and all("tissue order" in r for r in kept)
    # CycleGAN and CycleGAN_s are watched (the supervised term does not keep CycleGAN_s
    # from keeping the source's order on real contrast); the other methods are not.
    assert [smoke_config(model=m).checks_collapse for m in
            ("cyclegan", "cyclegan_s", "unit", "supervised")] == [True, True, False, False]


def _short(**overrides):
    values = dict(validate_every=1, collapse_grace=0, epochs=2, epochs_decay=0,
                  steps_per_epoch=2, grid_slices=1, tensorboard=False, deterministic=True,
                  checkpoint_every_steps=2)
    values.update(overrides)
    return smoke_config(**values)


def test_restart_limit_ends_the_run_with_a_clear_error_and_a_record(tmp_path, store):
    # Four steps of the smoke CycleGAN are far below Simple: every attempt collapses.
    run = RunDir(tmp_path / "run")
    with pytest.raises(TrainingFailed, match=r"did not learn the translation in 2 attempt\(s\) "
                                             r"\(seeds 0 to 1\); the last collapsed at epoch 1"):
        train(_short(max_restarts=1), run.path, store, show_inline=False)
    record = read_record(run.restarts_file)
    assert record["attempt"] == 1 and record["collapsed"] is True
    assert [(r["attempt"], r["seed"], r["epoch"]) for r in record["restarts"]] == [(0, 0, 1),
                                                                                 (1, 1, 1)]
    # The first attempt's outputs are set aside; the second's stay where they were. The
    # collapsed epoch was recorded (grid, history) but not checkpointed.
    assert (run.attempts / "attempt-0" / "grids" / "epoch_001.png").is_file()
    assert not (run.attempts / "attempt-0" / "checkpoints").exists()
    assert read_history(run.attempts / "attempt-0" / "history.csv")[0]["health_order_t1_to_t2"]
    assert [r["epoch"] for r in read_history(run.history)] == [1]
    # Running it again answers at once with the same error; a larger limit goes on.
    with pytest.raises(TrainingFailed, match=r"in 2 attempt\(s\)"):
        train(_short(max_restarts=1), run.path, store, show_inline=False)
    with pytest.raises(TrainingFailed, match=r"in 3 attempt\(s\) \(seeds 0 to 2\)"):
        train(_short(max_restarts=2), run.path, store, show_inline=False)
    assert sorted(p.name for p in run.attempts.iterdir()) == ["attempt-0", "attempt-1"]


def _collapse_first_attempt(monkeypatch):
    """The check flags the first verdict only (the seed-0 attempt's), whatever it sees."""
    calls = []

    def verdict(figures, before=None, **_):
        calls.append(figures)
        return ["forced for the test"] if len(calls) == 1 else []

    monkeypatch.setattr(CollapseCheck, "verdict", staticmethod(verdict))
    return calls


def _weights(run):
    step, arrays, meta = CheckpointManager(Path(run) / "checkpoints").latest()
    return step, arrays, meta


@pytest.mark.extended  # 1-1.5 minutes; restarts are also recorded in the tests below
def test_restart_is_recorded_and_a_run_killed_during_it_resumes_like_an_uninterrupted_one(
        tmp_path, store, monkeypatch):
    config = _short(collapse_grace=0, max_restarts=2)
    # Reference: what the second attempt must equal, a run with seed 1 and no restart.
    train(config.replace(seed=1, collapse_check=False), tmp_path / "seed1", store,
          show_inline=False)
    _collapse_first_attempt(monkeypatch)
    # Interrupt the restart while it sets the old attempt aside: grids moved, history not.
    original = Attempts.set_aside

    def interrupted(self, attempt):
        target = self.run.attempts / f"attempt-{attempt}"
        target.mkdir(parents=True)
        os.replace(self.run.grids, target / "grids")
        raise KeyboardInterrupt

    monkeypatch.setattr(Attempts, "set_aside", interrupted)
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, run.path, store, show_inline=False)
    record = read_record(run.restarts_file)
    assert record["attempt"] == 0 and record["collapsed"] is True
    assert run.history.is_file() and not run.grids.exists()
    monkeypatch.setattr(Attempts, "set_aside", original)
    result = train(config, run.path, store, show_inline=False)
    assert result.resumed_from is None and result.global_step == result.total_steps == 2
    summary = run.summary()
    assert summary["seed"] == 1 and summary["attempt"] == 1
    assert [(r["attempt"], r["seed"], r["reasons"]) for r in summary["restarts"]] == [
        (0, 0, ["forced for the test"])]
    for name in ("grids", "history.csv"):  # attempt 0's, all set aside
        assert (run.attempts / "attempt-0" / name).exists(), name
    step_a, a, _ = _weights(tmp_path / "seed1")
    step_b, b, meta = _weights(run.path)
    assert step_a == step_b == 2 and meta["attempt"] == 1 and meta["seed"] == 1
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # The history is the second attempt's only, with the check's figures each epoch.
    history = read_history(run.history)
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(isinstance(r["health_ssim_t1_to_t2"], float) for r in history)


@pytest.mark.extended  # about 2 minutes: CI within 20 minutes (README)
def test_a_collapsed_attempt_takes_its_export_and_summary_with_it(tmp_path, store,
                                                                 monkeypatch):
    # Attempt 0 stops after epoch 1 (exported: a session split), then collapses in epoch 2.
    _collapse_first_attempt(monkeypatch)
    config = _short(collapse_grace=1, max_restarts=1)
    run = RunDir(tmp_path / "run")
    first = train(config, run.path, store, show_inline=False, stop_at_step=1)
    assert first.global_step < first.total_steps  # stopped after epoch 1 of 2
    assert run.generator("t1_to_t2").is_file() and run.summary()["attempt"] == 0
    final = train(config, run.path, store, show_inline=False)  # collapses, restarts
    assert run.summary()["attempt"] == 1 and final.global_step == final.total_steps
    assert (run.attempts / "attempt-0" / "export" / "gen_t1_to_t2.keras").is_file()
    assert (read_record(run.attempts / "attempt-0" / "summary.json")["global_step"]
            == first.global_step)


def test_cli_exits_3_with_the_reason_when_no_attempt_learns(tmp_path, store):
    args = ["train", "--preset", "smoke", "--data", store, "--run-dir", tmp_path / "run",
            "--steps-per-epoch", 2, "--epochs", 1, "--epochs-decay", 0, "--collapse-grace", 0,
            "--max-restarts", 0, "--tensorboard", "false"]
    out = subprocess.run([sys.executable, "-m", "colab_utils", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 3, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "did not learn the translation in 1 attempt(s)" in last
    assert "Traceback" not in out.stderr


def test_report_lists_each_restart_and_the_seed_that_finished(tmp_path):
    from colab_utils.evaluation.report import restarts_markdown, restarts_record

    run = RunDir(tmp_path / "cyclegan")
    run.path.mkdir()
    (run.summary_file).write_text(json.dumps({"seed": 1, "attempt": 1, "restarts": [
        {"attempt": 0, "seed": 0, "epoch": 4, "reasons": ["t1_to_t2 keeps the source's "
                                                          "tissue order"]}]}))
    quiet = RunDir(tmp_path / "pix2pix")
    quiet.path.mkdir()
    quiet.summary_file.write_text(json.dumps({"seed": 0, "restarts": []}))
    record = restarts_record([run.path, quiet.path])
    assert list(record) == ["cyclegan"]
    text = restarts_markdown(record)
    assert "cyclegan: attempt 1 (seed 0) collapsed at epoch 4: t1_to_t2 keeps" in text
    assert "cyclegan: trained to the end with seed 1" in text


def test_a_store_without_masks_trains_without_the_check(tmp_path, toy_data, capsys):
    train(_short(epochs=1), tmp_path / "run", toy_data, show_inline=False)
    assert "training without the collapse check" in capsys.readouterr().err
    first = read_history(tmp_path / "run" / "history.csv")[0]
    assert not any(k.startswith("health_") for k in first) and "val_gen_total" in first


def test_the_pipeline_goes_on_without_a_method_that_failed_and_says_so(tmp_path, store,
                                                                       monkeypatch):
    from colab_utils import pipeline
    from colab_utils.presets import preset

    monkeypatch.setattr(pipeline, "prepare_data", lambda *args, **kwargs: store)
    experiment = preset("smoke", methods=("simple", "cyclegan", "supervised"),
                        steps_per_epoch=2, epochs=1, epochs_decay=0, collapse_grace=0,
                        max_restarts=0, tensorboard=False)
    record = pipeline.run_pipeline(experiment, tmp_path / "runs", tmp_path / "data")
    assert [f["method"] for f in record["failed"]] == ["cyclegan"]
    assert "did not learn the translation" in record["failed"][0]["error"]
    assert "the methods are tested against supervised: cyclegan has no model" in (
        record["warnings"])
    assert sorted({row["method"] for row in record["table"]}) == ["simple", "supervised"]
    report = Path(record["report"]).read_text()
    assert "cyclegan has no model" in report and "supervised vs" not in report
    assert "simple vs supervised" in report


def test_comparison_reference_falls_back_to_a_learned_method_with_a_model(tmp_path):
    from colab_utils.pipeline import comparison_reference

    runs = [tmp_path / name for name in ("simple", "pix2pix", "cyclegan_s")]
    assert comparison_reference(runs, "cyclegan_s") == "cyclegan_s"
    assert comparison_reference(runs, "cyclegan") == "pix2pix"
    assert comparison_reference(runs[:1], "cyclegan") is None
    assert comparison_reference([runs[0], tmp_path / "simple-2"], "cyclegan") == "simple-2"
