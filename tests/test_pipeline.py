"""The whole chain (phantom → preprocess → train → evaluate → compare) at toy scale."""

import json

import pytest

from colab_utils.evaluation import read_csv
from colab_utils.pipeline import PipelineSettings, method_config, run_pipeline


def tiny(**overrides):
    values = dict(subjects=3, slice_range=(70, 74), val_fraction=0.34, test_fraction=0.34,
                  image_size=32, methods=("simple", "cyclegan"), epochs=1,
                  epochs_decay=1, steps_per_epoch=2, batch_size=2, gen_filters=8,
                  n_res_blocks=1, disc_filters=8, precision="off", workers=2)
    values.update(overrides)
    return PipelineSettings(**values)


def test_whole_chain_writes_report_and_resumes(tmp_path):
    messages = []
    record = run_pipeline(tmp_path / "runs", tmp_path / "data", tiny(), log=messages.append)
    names = [s["step"] for s in record["steps"]]
    assert names == ["phantom", "preprocess", "train simple", "train cyclegan",
                     "evaluate simple", "evaluate cyclegan", "compare"]
    assert all(s["seconds"] >= 0 for s in record["steps"])
    report = (tmp_path / "runs" / "comparison" / "report.md").read_text()
    for method in ("simple", "cyclegan"):
        assert f"| {method} |" in report
    assert "How long each step took" in report
    table = read_csv(tmp_path / "runs" / "comparison" / "table.csv")
    assert {row["method"] for row in table} == {"simple", "cyclegan"}
    assert (tmp_path / "runs" / "cyclegan" / "grids" / "epoch_002.png").is_file()
    saved = json.loads((tmp_path / "runs" / "pipeline.json").read_text())
    assert saved["settings"]["image_size"] == 32 and len(saved["steps"]) == 7

    # Re-running finds every run finished and evaluated: no retraining, no re-evaluation.
    again = run_pipeline(tmp_path / "runs", tmp_path / "data", tiny(), log=messages.append)
    assert [s["step"] for s in again["steps"]] == ["phantom", "preprocess", "train simple",
                                                  "train cyclegan", "compare"]
    assert any("already evaluated" in m for m in messages)


def test_method_config_follows_the_settings():
    config = method_config("pix2pix", tiny(image_size=64, lr=1e-3))
    assert config.model == "pix2pix" and config.image_size == 64 and config.jitter_size == 72
    assert config.lr == 1e-3 and config.total_epochs == 2 and config.max_steps_per_epoch == 2


@pytest.mark.parametrize("overrides, message", [
    ({"methods": ("simple",)}, "at least two"),
    ({"methods": ("simple", "unit")}, "methods"),
    ({"reference": "pix2pix"}, "reference"),
    ({"subjects": 2}, "subjects"),
])
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides).validated()
