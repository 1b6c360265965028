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
NAMES = ["01_download_and_register", "02_train_cyclegan", "03_evaluate", "04_compare_methods"]
# Fields of the settings cell that are no setting of the tree (the preset's name, and
# where the notebook keeps its files).
NOTEBOOK_ONLY = {"PRESET", "WORKDIR", "USE_DRIVE"}
# Standard-library modules the install cell may use before colab_utils exists.
BOOTSTRAP_MODULES = {"importlib", "importlib.util", "subprocess", "sys"}


def load(name):
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_four_notebooks_exist_in_order():
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
    assert all(cell == cells[0] for cell in cells)
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


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """All four notebooks run in order by papermill with the smoke preset."""
    import papermill
    work = tmp_path_factory.mktemp("notebooks")
    parameters = dict(PRESET="smoke", SOURCE="phantom", SUBJECTS=3,
                      WORKDIR=str(work / "workdir"), USE_DRIVE=False, EPOCHS=1,
                      EPOCHS_DECAY=1, STEPS_PER_EPOCH=2, METHODS="simple,cyclegan")
    outputs = {}
    for name in NAMES:
        out = work / f"{name}.out.ipynb"
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
                                   parameters=parameters, cwd=str(work), kernel_name="python3",
                                   progress_bar=False, execution_timeout=900)
        outputs[name] = json.loads(out.read_text())
    return work / "workdir", outputs


def _images(nb):
    return sum("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c["outputs"])


def test_notebooks_run_top_to_bottom_and_produce_their_results(executed):
    workdir, outputs = executed
    store = workdir / "data" / "phantom-head_store"
    assert (store / "index.csv").is_file() and len(list((store / "qc").glob("*.png"))) == 3
    assert _images(outputs["01_download_and_register"]) >= 1
    # 02: a grid per epoch on disk and inline, then the loss curves.
    run = workdir / "runs" / "cyclegan"
    grids = sorted(p.name for p in (run / "grids").glob("epoch_*.png"))
    assert grids == ["epoch_001.png", "epoch_002.png"]
    assert _images(outputs["02_train_cyclegan"]) >= 3
    assert (run / "export" / "gen_t1_to_t2.keras").is_file()
    # 03: metrics of both directions, on the validation subject, then the test subject.
    for split in ("val", "test"):
        rows = read_csv(run / "metrics" / split / "per_slice.csv")
        assert {r["direction"] for r in rows} == {"t1_to_t2", "t2_to_t1"}
        assert all(0 <= r["mae_masked"] <= 1 for r in rows)
    assert _images(outputs["03_evaluate"]) == 2
    volumes = read_csv(run / "metrics" / "test" / "volumes.csv")  # whole test volumes
    assert [r["direction"] for r in volumes] == ["t1_to_t2", "t2_to_t1"]
    assert "| coronal |" in json.dumps(outputs["03_evaluate"])  # volumes.md, shown
    # 04: the comparison of every method, reusing notebook 02's CycleGAN run.
    table = read_csv(workdir / "runs" / "comparison" / "table.csv")
    assert {r["method"] for r in table} == {"simple", "cyclegan"}
    assert (workdir / "runs" / "comparison" / "tests.csv").is_file()
    assert _images(outputs["04_compare_methods"]) >= 4
    # Notebook 04 found notebook 03's evaluations of the same CycleGAN state and kept them.
    assert "cyclegan: already evaluated on test" in json.dumps(outputs["04_compare_methods"])
    assert "cyclegan: already evaluated on val" in json.dumps(outputs["04_compare_methods"])
    # 04 runs the pipeline: it trained and evaluated only what was missing, timed each
    # step, and the report holds every method and the timings.
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
    assert record["machine"]["policies"] == {"simple": "float32", "cyclegan": policy}
    # The run records the subjects it trained on: the store's train split.
    splits = json.loads((store / "preprocess.json").read_text())["splits"]
    assert json.loads((run / "data.json").read_text())["subjects"]["train"] == splits["train"]
    assert f"Dtype policy of each run: simple float32, cyclegan {policy}." in report


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
