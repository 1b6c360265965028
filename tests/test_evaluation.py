import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from colab_utils.evaluation.compare import compare
from colab_utils.evaluation.scoring import evaluate, is_current, score_predictions
from colab_utils.evaluation.tables import COLUMNS, HIGHER_IS_BETTER, per_subject_means
from colab_utils.fileio import read_csv, write_csv
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train

ROOT = Path(__file__).resolve().parents[1]


def test_scores_of_a_perfect_and_a_shifted_prediction():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
    mask = np.zeros_like(truth, bool)
    mask[:, 8:24, 8:24] = True
    perfect, = score_predictions(truth[:1], truth[:1], mask[:1])
    assert perfect["mae_masked"] == 0 and perfect["ssim_masked"] == pytest.approx(1.0)
    shifted = np.clip(truth + 0.1, 0, 1)
    row, = score_predictions(truth[1:], shifted[1:], mask[1:])
    inside = truth[1][mask[1]]
    assert row["mae_masked"] == pytest.approx(np.mean(np.clip(inside + 0.1, 0, 1) - inside),
                                              rel=1e-5)
    assert row["psnr_masked"] < 25 and set(row) == set(COLUMNS)


def test_per_subject_means_average_each_subjects_slices():
    rows = [{"direction": "t1_to_t2", "subject": s, "slice": k,
             **{c: float(v) for c in COLUMNS}}
            for s, k, v in (("a", 1, 1.0), ("a", 2, 3.0), ("b", 1, 5.0))]
    means = {r["subject"]: r for r in per_subject_means(rows)}
    assert means["a"]["mae_masked"] == 2.0 and means["a"]["n_slices"] == 2
    assert means["b"]["ssim_unmasked"] == 5.0


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A toy store, the Simple baseline and a briefly trained supervised generator."""
    from colab_utils.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("eval")
    data = write_toy_dataset(root / "toy", n_train=16, n_val=4, n_test=6, size=32, seed=5)
    runs = {}
    for model in ("simple", "supervised"):
        config = smoke_config(model=model, steps_per_epoch=4, tensorboard=False,
                                   grid_slices=0)
        train(config, root / model, data, show_inline=False)
        runs[model] = root / model
    return data, runs


def test_evaluate_writes_every_table_for_both_directions(two_runs):
    data, runs = two_runs
    result = evaluate(runs["simple"], data, split="test")
    directory = runs["simple"] / "metrics" / "test"
    assert result.directory == directory
    per_slice = read_csv(directory / "per_slice.csv")
    assert len(per_slice) == 2 * 6
    assert {r["direction"] for r in per_slice} == {"t1_to_t2", "t2_to_t1"}
    # The toy T2 is an inverted T1 inside the mask: the Simple baseline is close.
    ssim = [r["ssim_masked"] for r in per_slice if r["direction"] == "t1_to_t2"]
    assert min(ssim) > 0.5
    summary = read_csv(directory / "summary.csv")
    assert len(summary) == 2 * len(COLUMNS)
    mae = next(r for r in summary if r["direction"] == "t1_to_t2" and r["metric"] == "mae"
               and r["region"] == "masked")
    assert mae["mean"] == pytest.approx(np.mean([r["mae_masked"] for r in per_slice
                                                 if r["direction"] == "t1_to_t2"]), rel=1e-4)
    assert mae["n_slices"] == 6
    text = (directory / "summary.md").read_text()
    assert "T1 → T2" in text and "| SSIM |" in text
    assert (directory / "examples_t1_to_t2.png").stat().st_size > 5000
    assert json.loads((directory / "evaluation.json").read_text())["method"] == "simple"


def test_compare_two_runs_writes_table_tests_and_figures(two_runs, tmp_path, monkeypatch):
    from colab_utils.evaluation import compare as compare_module

    loaded = []
    load = compare_module.loaded_method
    monkeypatch.setattr(compare_module, "loaded_method",
                        lambda run, **kw: loaded.append(Path(run).name) or load(run, **kw))
    data, runs = two_runs
    result = compare([runs["simple"], runs["supervised"]], tmp_path / "cmp", data=data,
                     reference="supervised", qualitative_slices=2)
    names = {p.name for p in result.directory.iterdir()}
    assert {"table.csv", "table.md", "tests.csv", "report.md", "boxplots_t1_to_t2.png",
            "qualitative_t1_to_t2.png", "qualitative_t2_to_t1.png"} <= names
    table = read_csv(result.directory / "table.csv")
    assert {r["method"] for r in table} == {"simple", "supervised"}
    tests = read_csv(result.directory / "tests.csv")
    slice_tests = [t for t in tests if t["level"] == "slice"]
    assert slice_tests and all(t["method"] == "simple" for t in slice_tests)
    assert all(t["n"] == 6 for t in slice_tests)
    assert all(0 < t["p_value"] <= 1 for t in slice_tests if t["note"] != "identical values")
    report = result.report.read_text()
    assert "Wilcoxon" in report and "qualitative_t1_to_t2.png" in report
    # Both directions' figures are drawn with one load of each model.
    assert sorted(loaded) == sorted([runs["simple"].name, runs["supervised"].name])


def _fake_run(root: Path, model: str, offset: float, rng) -> Path:
    """A run directory with only a config and metric tables (a method 'offset' worse)."""
    run = root / model
    (run / "metrics" / "test").mkdir(parents=True)
    smoke_config(model=model).save(run / "config.json")
    rows = []
    for direction in ("t1_to_t2", "t2_to_t1"):
        for s in range(6):
            for k in range(4):
                base = {c: float(rng.uniform(0.5, 0.9)) for c in COLUMNS}
                rows.append({"direction": direction, "subject": f"s{s}", "slice": k, "row": k,
                             **{c: v - offset if HIGHER_IS_BETTER[c.split("_")[0]]
                                else v + offset for c, v in base.items()}})
    write_csv(run / "metrics" / "test" / "per_slice.csv", rows)
    write_csv(run / "metrics" / "test" / "per_subject.csv", per_subject_means(rows))
    from colab_utils.evaluation.scoring import summarise
    write_csv(run / "metrics" / "test" / "summary.csv", summarise(rows))
    return run


def test_compare_finds_a_consistently_worse_method(tmp_path):
    good = _fake_run(tmp_path, "cyclegan", 0.0, np.random.default_rng(1))
    bad = _fake_run(tmp_path, "simple", 0.3, np.random.default_rng(1))  # same draws, -0.3
    result = compare([good, bad], tmp_path / "out", qualitative_slices=0)
    ssim = [t for t in result.tests if t["metric"] == "ssim"]
    by_level = {(t["level"], t["direction"]): t for t in ssim}
    subject = by_level[("subject", "t1_to_t2")]
    assert subject["n"] == 6 and subject["median_difference"] == pytest.approx(-0.3)
    assert subject["p_value"] == pytest.approx(2 / 2 ** 6)  # exact test, all differences one way
    assert "worse" in subject["note"]
    assert by_level[("slice", "t1_to_t2")]["p_value"] < 1e-4
    md = (result.directory / "table.md").read_text()
    assert "| **" not in md.split("| simple |")[1].split("\n")[0]  # simple is never best (SSIM)


def test_compare_without_metrics_or_data_is_a_clear_error(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    smoke_config().save(run / "config.json")
    with pytest.raises(FileNotFoundError, match="has no 'test' evaluation"):
        compare([run, run], tmp_path / "o")


def test_evaluate_in_another_precision_than_trained(two_runs, tmp_path):
    data, runs = two_runs
    rows = {}
    for precision in ("float32", "mixed_bfloat16"):
        result = evaluate(runs["supervised"], data, out=tmp_path / precision, examples=0,
                          precision=precision)
        record = json.loads((result.directory / "evaluation.json").read_text())
        assert record["policy"] == precision
        rows[precision] = [r for r in result.per_slice if r["direction"] == "t1_to_t2"]
    for full, low in zip(rows["float32"], rows["mixed_bfloat16"]):
        assert abs(full["mae_masked"] - low["mae_masked"]) < 0.01
        assert abs(full["ssim_masked"] - low["ssim_masked"]) < 0.03
    assert any(full["mae_masked"] != low["mae_masked"]
               for full, low in zip(rows["float32"], rows["mixed_bfloat16"]))


def test_an_evaluation_is_current_only_for_the_same_step_store_split_and_policy(two_runs,
                                                                                tmp_path):
    import shutil

    data, runs = two_runs
    run = tmp_path / "supervised"
    shutil.copytree(runs["supervised"], run)
    shutil.rmtree(run / "metrics", ignore_errors=True)
    assert not is_current(run, data)
    evaluate(run, data, examples=0)
    assert is_current(run, data) and is_current(run, Path(data) / ".." / Path(data).name)
    other_store = shutil.copytree(data, tmp_path / "other_store")
    assert not is_current(run, other_store)
    assert not is_current(run, data, split="val")
    record_path = run / "metrics" / "test" / "evaluation.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "policy": "mixed_bfloat16"}))
    assert not is_current(run, data)  # evaluated in another precision than trained
    record_path.write_text(json.dumps(record))
    assert is_current(run, data)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary,
                                                  "global_step": 1 + summary["global_step"]}))
    assert not is_current(run, data)  # trained further since


def test_cli_evaluate_and_compare(two_runs, tmp_path):
    data, runs = two_runs
    out = subprocess.run([sys.executable, "-m", "colab_utils", "evaluate", "--run",
                          str(runs["supervised"]), "--data", str(data), "--out",
                          str(tmp_path / "m")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "metrics written to" in out.stdout and (tmp_path / "m" / "summary.csv").is_file()
    out = subprocess.run([sys.executable, "-m", "colab_utils", "compare", str(runs["simple"]),
                          "--out", str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "at least two runs" in out.stderr


def test_a_run_is_never_scored_on_subjects_it_trained_on(store, tmp_path):
    import shutil

    from colab_utils.config import DataConfig
    from colab_utils.data.preprocess import preprocess

    run = tmp_path / "simple"
    train(smoke_config(model="simple"), run, store, show_inline=False)
    assert json.loads((run / "data.json").read_text())["subjects"]["train"] == [
        "phantom-001", "phantom-003"]
    evaluate(run, store, split="test", examples=0)  # phantom-004: never seen
    # The store split again (a split file): a training subject is now a test subject.
    resplit = shutil.copytree(store, tmp_path / "resplit")
    split_file = tmp_path / "split.csv"
    split_file.write_text("subject,split\nphantom-001,test\nphantom-002,val\n"
                          "phantom-003,train\nphantom-004,train\n")
    pairs = {p.stem: (None, None) for p in (resplit / "subjects").glob("*.npz")}
    preprocess(pairs, resplit, DataConfig(split_file=str(split_file)))
    with pytest.raises(ValueError, match=r"the run trained on 1 of the test subjects "
                                         r"\(phantom-001\)"):
        evaluate(run, resplit, split="test", examples=0)
    assert not (run / "metrics" / "test" / "evaluation.json").read_text().count("resplit")
    out = subprocess.run([sys.executable, "-m", "colab_utils", "evaluate", "--run", str(run),
                          "--data", str(resplit)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "phantom-001" in out.stderr
    # The old evaluation is no longer current for the re-split store.
    assert not is_current(run, resplit)
