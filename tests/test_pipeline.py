"""The pipeline's settings, its report and its handling of stale runs. The whole chain
runs in tests/test_notebooks.py (notebook 04 is the pipeline, after notebooks 01-03
made part of it)."""

import json
import os
from pathlib import Path

import pytest

from colab_utils import cli
from colab_utils.evaluation.report import failed_methods, machine_markdown, machine_record
from colab_utils.presets import preset
from colab_utils.training.rundir import RunDir


def test_pipeline_command_starts_from_the_preset_and_applies_only_given_options():
    parser = cli.build_parser()
    seen = cli.pipeline_settings(parser.parse_args([
        "pipeline", "--preset", "paper", "--epochs", "3", "--strategy", "mirrored",
        "--methods", "simple,cyclegan", "--split-seed", "4", "--slice-range", "60:70"]))
    train = seen.train
    # The paper's networks and schedule, except what was given.
    assert train.image_size == 256 and train.gen_filters == 64 and train.lr == 2e-4
    assert train.lambda_identity == 5.0 and train.lambda_structure == 0.0
    assert not train.long_skip and not train.intensity_path
    assert train.epochs == 3 and train.epochs_decay == 100 and train.validate_every == 1
    assert seen.cyclegan_step_factor == 1.0
    assert train.strategy == "mirrored" and seen.methods == ("simple", "cyclegan")
    assert seen.data.split_seed == 4 and seen.data.slice_range == (60, 70)
    assert cli.pipeline_settings(parser.parse_args(["pipeline"])) == preset("demo")
    # Every setting of the tree is a flag of the pipeline command, under its own name.
    from colab_utils.config import all_setting_names

    flags = {a.dest[len(cli.PREFIX):] for a in parser._subparsers._group_actions[0]
             .choices["pipeline"]._actions if a.dest.startswith(cli.PREFIX)}
    assert flags == set(all_setting_names())


def test_failed_methods_flags_a_method_far_below_simple_in_either_direction():
    def rows(method, t1_to_t2, t2_to_t1):
        return [{"method": method, "direction": d, "metric": m, "region": region,
                 "mean": v if (m, region) == ("ssim", "masked") else 0.5}
                for d, v in (("t1_to_t2", t1_to_t2), ("t2_to_t1", t2_to_t1))
                for m in ("ssim", "mae") for region in ("masked", "unmasked")]

    # Measured (docs/EXPERIMENTS.md): Simple 0.884 / 0.929; CycleGAN seed 0 0.886 / 0.904,
    # seed 1 0.036 / 0.189; pix2pix 0.751 / 0.787.
    table = rows("simple", 0.884, 0.929) + rows("cyclegan", 0.886, 0.904)
    assert failed_methods(table) == []
    table += rows("cyclegan_seed1", 0.036, 0.189) + rows("pix2pix", 0.751, 0.787)
    warnings = failed_methods(table)
    # The collapsed run both ways; not pix2pix, which is poor (0.13 below) but learnt.
    assert [w.split(":")[0] for w in warnings] == [
        "cyclegan_seed1 t1_to_t2", "cyclegan_seed1 t2_to_t1"]
    # One direction is enough.
    one_way = failed_methods(table + rows("one_way", 0.60, 0.93))
    assert [w.split(":")[0] for w in one_way[2:]] == ["one_way t1_to_t2"]
    assert "0.036 against simple's 0.884 on the validation subjects" in warnings[0]
    assert "--seed" in warnings[0]
    # Without the baseline in the table there is nothing to compare with.
    assert failed_methods([r for r in table if r["method"] != "simple"]) == []


def test_machine_record_names_each_runs_policy(tmp_path):
    (tmp_path / "cyclegan").mkdir()
    (tmp_path / "cyclegan" / "summary.json").write_text(json.dumps(
        {"global_step": 480, "policy": "mixed_bfloat16"}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    machine = machine_record([tmp_path / "cyclegan", tmp_path / "broken", tmp_path / "missing"])
    assert machine["policies"] == {"cyclegan": "mixed_bfloat16", "broken": None,
                                   "missing": None}
    assert machine["cpus"] == os.cpu_count() and machine["cpu"]
    assert machine["device"].startswith("CPU only")  # no accelerator in tests
    text = machine_markdown(machine)
    assert "cyclegan mixed_bfloat16, broken unknown, missing unknown" in text
    assert f"{os.cpu_count()} CPUs ({machine['cpu']})" in text
    assert f"TensorFlow {machine['tensorflow']}" in text


def test_a_run_on_other_subjects_lives_on_under_its_own_name(tmp_path, store, messages):
    import shutil

    from colab_utils.pipeline import method_run, train_method

    experiment = preset("smoke", steps_per_epoch=1, epochs=1, epochs_decay=0)
    first = train_method(experiment, "simple", store, tmp_path)
    run = RunDir(first.run_dir)
    assert run.subjects("train") == ["phantom-001", "phantom-003"]  # the store's train split
    # The same store again: the finished run is found, nothing is trained or moved.
    again = train_method(experiment, "simple", store, tmp_path)
    assert again.run_dir == first.run_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.path.name]
    # A store split otherwise (as after a re-split): another run folder; the first is kept.
    other = Path(shutil.copytree(store, tmp_path / "other" / Path(store).name))
    record = json.loads((other / "preprocess.json").read_text())
    record["splits"]["train"], record["splits"]["val"] = (record["splits"]["val"],
                                                          record["splits"]["train"])
    (other / "preprocess.json").write_text(json.dumps(record))
    assert method_run(experiment, "simple", other, tmp_path) != run.path
    # A run folder whose record names other subjects (edited by hand) is refused, named.
    data = run.data_record()
    data["subjects"]["train"] = ["phantom-001", "phantom-002"]
    run.data_file.write_text(json.dumps(data))
    run.summary_file.unlink()  # not finished: it would train
    with pytest.raises(ValueError, match=r"data.json: this run trained on other subjects "
                                         r"\(train: .*new: phantom-003.*gone: phantom-002"):
        train_method(experiment, "simple", store, tmp_path)


def test_journey_a_folder_of_three_scans_grows_to_five_and_runs_end_to_end(tmp_path, phantom_dir,
                                                                          capsys):
    """A user with three pairs of their own runs the whole chain from the command line,
    then adds a fourth (the command's data step) and a fifth to the same folder and runs
    it again as typed: every time every split has a subject, the report is written, and
    no subject once split moves."""
    import shutil
    import subprocess
    import sys

    from colab_utils.data.phantom import write_phantom
    from colab_utils.data.store import SliceStore

    extra = write_phantom(tmp_path / "more", n_subjects=5, seed=21)
    scans = {f"case{i}": (phantom_dir / f"phantom-00{i}-T1.nii.gz",
                          phantom_dir / f"phantom-00{i}-T2.nii.gz") for i in (1, 2, 3)}
    scans.update({f"case{i}": (extra / f"phantom-00{i}-T1.nii.gz",
                               extra / f"phantom-00{i}-T2.nii.gz") for i in (4, 5)})
    folder, out, data = tmp_path / "my_scans", tmp_path / "runs", tmp_path / "data"
    folder.mkdir()
    seen = {}
    for count in (3, 4, 5):
        for name in list(scans)[:count]:
            for scan, contrast in zip(scans[name], ("T1w", "T2w")):
                if not (folder / f"{name}_{contrast}.nii.gz").exists():
                    shutil.copy(scan, folder / f"{name}_{contrast}.nii.gz")
        command = ["pipeline", "--preset", "smoke", "--source", "folder", "--folder",
                   str(folder), "--out", str(out), "--data", str(data), "--steps-per-epoch",
                   "2", "--volume-methods", "", "--methods", "simple,supervised",
                   "--reference", "supervised"]
        if count == 4:  # the command's data step alone (preprocess, split), in this process
            from colab_utils.pipeline import prepare_data

            prepare_data(cli.pipeline_settings(cli.build_parser().parse_args(command)).data,
                         data)
        elif count == 3:  # the same command in this process (a new one costs TF's import)
            assert cli.main(command) == 0
            assert "report:" in capsys.readouterr().out
        else:  # as typed
            done = subprocess.run([sys.executable, "-m", "colab_utils", *command],
                                  capture_output=True, text=True, cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "report:" in done.stdout and "Traceback" not in done.stderr
        store = SliceStore(next(data.glob("folder-my_scans-*_store")))
        splits = {s: store.subjects(s) for s in ("train", "val", "test")}
        assert sorted(sum(splits.values(), [])) == sorted(list(scans)[:count])
        assert all(splits.values()), splits
        for subject, split in seen.items():
            assert subject in splits[split], f"{subject} moved from {split} at {count}"
        seen = {subject: split for split, names in splits.items() for subject in names}
        if count == 4:
            continue
        # The report says how few subjects each split has and what that means.
        report = max(out.rglob("report.md"), key=lambda p: p.stat().st_mtime).read_text()
        assert "## Few subjects" in report and "1 test subject(s)" in report
