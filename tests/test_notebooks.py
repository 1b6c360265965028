"""The notebook suite: structure (badges, parameters, no outputs, thin cells) and execution.

The notebooks are the source (edited in Jupyter or Colab; tools/notebooks.py strips
outputs and sets the repository). The execution test runs all four top to bottom in a
real Jupyter kernel (papermill) with the smoke preset on the phantom, in one shared work
folder, and checks what they produced.
"""

import ast
import json
import os
from pathlib import Path

import pytest

from colab_utils.colab import REPOSITORY, colab_url
from colab_utils.config import all_setting_names
from colab_utils.fileio import read_csv

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["01_download_and_register", "02_train_cyclegan", "03_evaluate", "04_compare_methods",
         "05_translate_your_scan"]
# Fields of the settings cell that are no setting of the tree (the preset's name, where
# the notebook keeps its files, notebook 05's scan and model).
NOTEBOOK_ONLY = {"PRESET", "WORKDIR", "USE_DRIVE", "FINAL_EVALUATION", "SCAN", "DIRECTION",
                 "MODEL", "MODEL_SHA256"}
# Standard-library modules the install cell may use before colab_utils exists.
BOOTSTRAP_MODULES = {"importlib", "importlib.util", "subprocess", "sys"}


def load(name):
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_five_notebooks_exist_in_order():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_badge_points_to_its_own_path(name):
    first = "".join(load(name)["cells"][0]["source"])
    url = colab_url(f"notebooks/{name}.ipynb")
    assert url in first and "colab-badge.svg" in first
    assert f"github/{REPOSITORY}/blob/main/notebooks/{name}.ipynb" in url
    readme = (ROOT / "README.md").read_text()
    assert url in readme, f"README lacks the badge of {name}"
    install = "".join(code_cells(load(name))[0]["source"])
    assert f"git+https://github.com/{REPOSITORY}@main" in install


@pytest.mark.parametrize("name", NAMES)
def test_no_outputs_and_one_parameters_cell(name):
    nb = load(name)
    for cell in code_cells(nb):
        assert cell["outputs"] == [] and cell["execution_count"] is None
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    assert "# @param" in "".join(tagged[0]["source"])


def _parameters(nb):
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]


def _settings_cell(nb):
    return "".join(next(c for c in nb["cells"]
                        if "parameters" in c["metadata"].get("tags", []))["source"])


def test_every_notebook_has_the_same_settings_cell_and_each_field_is_a_setting():
    cells = [_settings_cell(load(n)) for n in NAMES]
    assert all(cell == cells[0] for cell in cells[:4])
    # Notebook 05 has the same fields, then its own (the scan and the model).
    assert cells[4].startswith(cells[0].rstrip("\n")) and 'SCAN = ""' in cells[4]
    names = _parameters(load(NAMES[0]))
    assert {"SOURCE", "USE_DRIVE", "WORKDIR", "PRESET", "IMAGE_SIZE"} <= set(names)
    settings = set(all_setting_names())
    for name in set(names) - NOTEBOOK_ONLY:
        assert name.lower() in settings, f"{name} is no setting's name in capitals"
    # Every field reaches the settings: the workspace cell passes each one by name.
    for notebook in NAMES:
        source = "\n".join("".join(c["source"]) for c in code_cells(load(notebook)))
        for name in set(names) - NOTEBOOK_ONLY:
            assert f"{name}={name}" in source, f"{notebook}: {name} is not used"


@pytest.mark.parametrize("name", NAMES)
def test_cells_import_only_colab_utils_for_logic(name):
    for cell in code_cells(load(name)):
        tree = ast.parse("".join(cell["source"]))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {node.module}
            else:
                continue
            for module in modules:
                assert module.split(".")[0] == "colab_utils" or module in BOOTSTRAP_MODULES, \
                    f"{name}: imports {module}"
            if modules & BOOTSTRAP_MODULES:
                assert "pip" in "".join(cell["source"]), "stdlib only for the install cell"
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not functions, f"{name}: defines {functions[0].name}; put logic in colab_utils"


SMOKE = dict(PRESET="smoke", SOURCE="phantom", SUBJECTS="3", USE_DRIVE=False, EPOCHS="1",
             EPOCHS_DECAY="1", STEPS_PER_EPOCH="2", METHODS="simple,cyclegan")


def execute(name, work, **parameters):
    """Run one notebook top to bottom in a real kernel, as "Run all" does; returns the
    executed notebook (a cell that raised leaves its error output there) and whether it
    ran to the end."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = work / f"{name}.{len(list(work.glob(name + '.*')))}.out.ipynb"
    try:
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
                                   parameters=parameters, cwd=str(work),
                                   kernel_name="python3", progress_bar=False,
                                   execution_timeout=900)
        completed = True
    except PapermillExecutionError:
        completed = False
    return json.loads(out.read_text()), completed


def _text(nb) -> str:
    """Everything a notebook showed: streams, results, errors."""
    return json.dumps([o for c in code_cells(nb) for o in c["outputs"]], ensure_ascii=False)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Journey (a): the five notebooks run in order with the smoke preset on the phantom,
    in one workspace, notebook 03 as the final evaluation, notebook 05 on a test subject's
    T1 (the phantom's, stored sagittally)."""
    work = tmp_path_factory.mktemp("notebooks")
    outputs = {}
    for name in NAMES:
        outputs[name], completed = execute(name, work, WORKDIR=str(work / "workdir"),
                                           FINAL_EVALUATION=name == "03_evaluate",
                                           SCAN="example", **SMOKE)
        assert completed, f"{name} stopped: {_text(outputs[name])[-3000:]}"
    return work / "workdir", outputs


def _images(nb):
    return sum("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c["outputs"])


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"{folder}: expected one {pattern}, found {found}"
    return found[0]


def test_notebooks_run_top_to_bottom_and_produce_their_results(executed):
    workdir, outputs = executed
    store = _only(workdir / "data", "phantom-head-*_store")
    assert (store / "index.csv").is_file() and len(list((store / "qc").glob("*.png"))) == 3
    assert _images(outputs["01_download_and_register"]) >= 1
    assert "| slice store |" in _text(outputs["02_train_cyclegan"])  # the workspace table
    # 02: a grid per epoch on disk and inline, then the loss curves.
    run = _only(workdir / "runs", "cyclegan-32px-*")
    grids = sorted(p.name for p in (run / "grids").glob("epoch_*.png"))
    assert grids == ["epoch_001.png", "epoch_002.png"]
    assert _images(outputs["02_train_cyclegan"]) >= 3
    assert (run / "export" / "gen_t1_to_t2.keras").is_file()
    # 03 (the final evaluation): both directions on the validation subject, then the test.
    for split in ("val", "test"):
        rows = read_csv(run / "metrics" / split / "per_slice.csv")
        assert {r["direction"] for r in rows} == {"t1_to_t2", "t2_to_t1"}
        assert all(0 <= r["mae_masked"] <= 1 for r in rows)
    assert _images(outputs["03_evaluate"]) == 2
    volumes = read_csv(run / "metrics" / "test" / "volumes.csv")  # whole test volumes
    assert [r["direction"] for r in volumes] == ["t1_to_t2", "t2_to_t1"]
    assert "| coronal |" in _text(outputs["03_evaluate"])  # volumes.md, shown
    # 04: the comparison of every method, reusing notebook 02's CycleGAN run and notebook
    # 03's evaluations of it (the same volume settings: the pipeline's).
    table = read_csv(workdir / "runs" / "comparison" / "table.csv")
    assert {r["method"] for r in table} == {"simple", "cyclegan"}
    assert (workdir / "runs" / "comparison" / "tests.csv").is_file()
    shown = _text(outputs["04_compare_methods"])
    assert f"{run.name}: already evaluated on test" in shown
    assert f"{run.name}: already evaluated on val" in shown
    # The report shown inline: its figures as images, no broken links, the table once.
    assert _images(outputs["04_compare_methods"]) >= 4
    assert "](boxplots_" not in shown and "](../comparison_val" not in shown
    assert shown.count("### T1 → T2, inside the brain mask") == 1
    record = json.loads((workdir / "runs" / "pipeline.json").read_text())
    steps = [s["step"] for s in record["steps"]]
    assert "evaluate simple (test)" in steps and "evaluate cyclegan (test)" not in steps
    assert steps[-1] == "compare (test)" and all(s["seconds"] >= 0 for s in record["steps"])
    assert record["settings"]["train"]["image_size"] == 32
    report = (workdir / "runs" / "comparison" / "report.md").read_text()
    assert "| simple |" in report and "| cyclegan |" in report
    assert "How long each step took" in report
    # The smoke preset scores CycleGAN's whole volumes (notebook 03 already did).
    assert "## Whole volumes" in report and "| cyclegan |" in report.split("## Whole volumes")[1]
    # Honest statistics: subjects are the unit, n is said, and what n cannot show.
    assert "mean ± std over n = 1 subjects' means" in report
    assert "no difference can reach p < 0.05 here" in report
    assert "Slices of one subject are not independent" in report
    assert "chosen on the validation subjects" in report
    assert (workdir / "runs" / "comparison_val" / "table.csv").is_file()
    # A method far below Simple is flagged in the record and the report.
    assert all(w in report for w in record["warnings"])
    assert ("## Warnings" in report) == bool(record["warnings"])
    # The machine and the dtype policy each run trained in (PRECISION "auto"; the Simple
    # baseline computes in float32).
    from colab_utils.runtime.precision import auto_policy

    policy = auto_policy()
    simple = _only(workdir / "runs", "simple-*")
    assert record["machine"]["policies"] == {simple.name: "float32", run.name: policy}
    # The run records the subjects it trained on: the store's train split.
    splits = json.loads((store / "preprocess.json").read_text())["splits"]
    assert json.loads((run / "data.json").read_text())["subjects"]["train"] == splits["train"]
    assert f"Dtype policy of each run: {simple.name} float32, {run.name} {policy}." in report


def test_notebook_05_translates_a_scan_in_its_own_grid_shows_it_and_ships_the_model(executed):
    import nibabel as nib
    import numpy as np

    from colab_utils.data.store import SliceStore
    from colab_utils.evaluation.export import load_model

    workdir, outputs = executed
    store = SliceStore(_only(workdir / "data", "phantom-head-*_store"))
    t1, t2 = store.subject_scans(store.subjects("test")[0])
    synthetic = _only(workdir / "synthetic", "*_synthetic-T2.nii.gz")
    assert synthetic.name == t1.name.replace(".nii.gz", "_synthetic-T2.nii.gz")
    scan, made = nib.load(t1), nib.load(synthetic)
    assert made.shape == scan.shape and np.allclose(made.affine, scan.affine, atol=1e-4)
    data = made.get_fdata()
    assert np.isfinite(data).all() and data.std() > 0
    # Shown (input | synthetic | real T2, three planes each) and saved beside the scan.
    assert _images(outputs["05_translate_your_scan"]) == 1
    assert synthetic.with_name(synthetic.name.replace(".nii.gz", ".png")).is_file()
    # The model as one archive, which loads again and translates T1 -> T2.
    archive = _only(workdir / "runs" / "models", "cyclegan-32px-*.model.zip")
    method, settings = load_model(archive)
    assert "t1_to_t2" in method.translators and settings["slice_size"] > 0
    assert str(synthetic) in _text(outputs["05_translate_your_scan"])


def test_journey_05_with_a_model_archive_and_a_bad_scan_says_what_is_wrong(executed, tmp_path):
    # Journey (f): a user with someone's model archive and no data of their own gives a
    # T2 as the T1. (A path that is not there: test_notebook_05_names_a_missing_scan.)
    workdir, _ = executed
    archive = _only(workdir / "runs" / "models", "cyclegan-32px-*.model.zip")
    store = _only(workdir / "data", "phantom-head-*_store")
    from colab_utils.data.store import SliceStore

    _, t2 = SliceStore(store).subject_scans(SliceStore(store).subjects("test")[0])
    for scan, expected in ((t2, "is it a T2? Then translate it with direction t2_to_t1"),):
        nb, completed = execute("05_translate_your_scan", tmp_path,
                                WORKDIR=str(tmp_path / "mine"), MODEL=str(archive),
                                SCAN=str(scan), **SMOKE)
        assert not completed
        errors = [o for c in code_cells(nb) for o in c["outputs"] if o["output_type"] == "error"]
        assert len(errors) == 1
        shown = "\n".join(errors[0]["traceback"])
        assert shown.startswith("STOPPED: ") and expected in shown, shown
        assert "Traceback" not in shown
    assert not any((tmp_path / "mine" / "data").glob("*"))  # no data was needed


@pytest.fixture
def copied(executed, tmp_path):
    """A copy of journey (a)'s workspace, for a journey that changes it."""
    import shutil

    workdir, _ = executed
    return shutil.copytree(workdir, tmp_path / "workdir", symlinks=True)


def _files(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_journey_02_again_on_a_current_store_fetches_and_rewrites_nothing(copied, tmp_path):
    # Journey (e): the same settings again, as after a disconnect once training finished.
    data = _files(copied / "data")
    nb, completed = execute("02_train_cyclegan", tmp_path, WORKDIR=str(copied), **SMOKE)
    assert completed, _text(nb)[-3000:]
    assert _files(copied / "data") == data  # no phantom written, no shard rewritten
    shown = _text(nb)
    assert "nothing rewritten" in shown and "was already complete" in shown


def test_journey_a_setting_changed_keeps_what_was_done(copied, tmp_path):
    # Journey (c): another image size (a new run beside the old one) and another preset
    # of slices (a new store beside the old one); nothing is refused, nothing deleted.
    before = sorted(p.name for p in (copied / "runs").iterdir())
    changed = {**SMOKE, "IMAGE_SIZE": "16"}
    nb, completed = execute("02_train_cyclegan", tmp_path, WORKDIR=str(copied), **changed)
    assert completed, _text(nb)[-3000:]
    runs = sorted(p.name for p in (copied / "runs").iterdir())
    assert set(before) < set(runs) and any(r.startswith("cyclegan-16px-") for r in runs)
    assert (_only(copied / "runs", "cyclegan-32px-*") / "export").is_dir()  # kept
    nb, completed = execute("01_download_and_register", tmp_path, WORKDIR=str(copied),
                            **{**SMOKE, "SUBJECTS": "4"})
    assert completed, _text(nb)[-3000:]
    # The same store, grown by a subject: the three it held keep their splits.
    store = _only(copied / "data", "phantom-head-*_store")
    splits = json.loads((store / "preprocess.json").read_text())["splits"]
    assert sum(len(v) for v in splits.values()) == 4


def test_journey_03_opened_alone_says_what_to_run(copied, tmp_path):
    # Journey (d): notebook 03 opened before notebook 02 ran with its settings (here an
    # image size no run has): a message, not a traceback.
    nb, completed = execute("03_evaluate", tmp_path, WORKDIR=str(copied),
                            **{**SMOKE, "IMAGE_SIZE": "16"})
    assert not completed
    errors = [o for c in code_cells(nb) for o in c["outputs"] if o["output_type"] == "error"]
    assert len(errors) == 1
    shown = "\n".join(errors[0]["traceback"])
    assert "STOPPED: no trained CycleGAN for these settings" in shown
    assert "run notebook 02 with the same settings first" in shown
    assert "Traceback" not in shown and "File " not in shown


def test_a_fork_slug_reaches_badges_install_cells_readme_and_colab_py(tmp_path):
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "repo"
    for part in ("notebooks", "colab_utils", "tools"):
        shutil.copytree(ROOT / part, copy / part)
    shutil.copy(ROOT / "README.md", copy / "README.md")
    result = subprocess.run([sys.executable, str(copy / "tools" / "notebooks.py"), "--repo",
                             "someone/my-fork"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (copy / "notebooks" / "02_train_cyclegan.ipynb").read_text()
    assert "github/someone/my-fork/blob/main/notebooks/02_train_cyclegan.ipynb" in text
    assert "git+https://github.com/someone/my-fork@main" in text
    for path in [*(copy / "notebooks").glob("*.ipynb"), copy / "README.md",
                 copy / "colab_utils" / "colab.py"]:
        assert REPOSITORY not in path.read_text(), path
    assert 'REPOSITORY = "someone/my-fork"' in (copy / "colab_utils" / "colab.py").read_text()
    bad = subprocess.run([sys.executable, str(copy / "tools" / "notebooks.py"), "--repo",
                          "not a slug"], capture_output=True, text=True)
    assert bad.returncode != 0 and "OWNER/NAME" in bad.stderr


def test_notebook_form_fields_are_settings(capsys):
    from colab_utils import colab

    assert colab.form_settings(SOURCE="", SUBJECTS=None, IMAGE_SIZE=64,
                               METHODS="simple,cyclegan") == {
        "image_size": 64, "methods": "simple,cyclegan"}
    # Every field is a string a user can empty: "" keeps the preset, text is converted.
    experiment = colab.experiment("demo", SUBJECTS="5", IMAGE_SIZE="", MAX_MINUTES="50",
                                  EPOCHS="")
    assert experiment.data.subjects == 5 and experiment.train.max_minutes == 50.0
    assert experiment.train.image_size == 64 and experiment.train.epochs == 3
    with pytest.raises(ValueError, match="IMAGESIZE: expected a setting's name in capitals"):
        colab.form_settings(IMAGESIZE=64)


def test_workspace_and_hardware_outside_colab(tmp_path, monkeypatch, capsys):
    from colab_utils import colab

    monkeypatch.chdir(tmp_path)
    space = colab.workspace("work", use_drive=True)  # no Colab: Drive is not used
    assert space.root == tmp_path / "work" and not space.on_drive
    assert space.data.is_dir() and space.runs.is_dir()
    info = colab.report_hardware()
    assert info["policy"] in ("float32", "mixed_bfloat16", "mixed_float16")
    assert info["strategy"] == "default"  # one CPU device
    assert info["cpus"] == os.cpu_count() and info["cpu"] not in ("", "unknown")
    assert info["device"] in capsys.readouterr().err  # logged
    with pytest.raises(FileNotFoundError, match="missing.png"):
        colab.show_image(tmp_path / "missing.png")
    colab.show_markdown("| a |\n|---|\n| 1 |")
    assert "| 1 |" in capsys.readouterr().out


def test_notebook_05_names_a_missing_scan_and_an_empty_field_outside_colab(tmp_path):
    from colab_utils import colab

    space = colab.workspace(str(tmp_path / "work"), use_drive=False)
    with pytest.raises(colab.StopNotebook, match=r"missing.nii.gz: no such file. Give the "
                                                 r"path of a NIfTI file"):
        colab.your_scan(str(tmp_path / "missing.nii.gz"), space)
    with pytest.raises(colab.StopNotebook, match="SCAN is empty: give the path of a NIfTI"):
        colab.your_scan("  ", space)
    with pytest.raises(colab.StopNotebook, match="SCAN = example needs a store"):
        colab.your_scan("example", space, store=None)
