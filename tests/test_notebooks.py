"""The notebook suite: structure (badges, parameters, no outputs, thin cells) and execution.

The execution test runs all four notebooks top to bottom in a real Jupyter
kernel (papermill) with smoke parameters on the phantom, in one shared work
folder, and checks what they produced.
"""

import ast
import json
import os
from pathlib import Path

import pytest

from colab_utils.colab import REPOSITORY, colab_url
from colab_utils.evaluation import read_csv
from colab_utils.notebooks import NOTEBOOKS, render

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(NOTEBOOKS)
# Standard-library modules the install cell may use before colab_utils exists.
BOOTSTRAP_MODULES = {"importlib", "importlib.util", "subprocess", "sys"}


def load(name):
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_four_notebooks_exist_in_order():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == NAMES == [
        "01_download_and_register", "02_train_cyclegan", "03_evaluate", "04_compare_methods"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_its_definition(name):
    # Regenerate with `python -m colab_utils notebooks` after editing colab_utils/notebooks.py.
    assert (ROOT / "notebooks" / f"{name}.ipynb").read_text() == render(name)


@pytest.mark.parametrize("name", NAMES)
def test_badge_points_to_its_own_path(name):
    first = "".join(load(name)["cells"][0]["source"])
    url = colab_url(f"notebooks/{name}.ipynb")
    assert url in first and "colab-badge.svg" in first
    assert f"github/{REPOSITORY}/blob/main/notebooks/{name}.ipynb" in url
    readme = (ROOT / "README.md").read_text()
    assert url in readme, f"README lacks the badge of {name}"


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


def test_every_notebook_uses_the_same_parameter_names():
    names = [_parameters(load(n)) for n in NAMES]
    assert all(n == names[0] for n in names)
    assert {"DATA_SOURCE", "USE_DRIVE", "WORKDIR", "PRESET", "IMAGE_SIZE"} <= set(names[0])


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
    """All four notebooks run in order by papermill with smoke parameters."""
    import papermill
    work = tmp_path_factory.mktemp("notebooks")
    parameters = dict(DATA_SOURCE="phantom", SUBJECTS=3, WORKDIR=str(work / "workdir"),
                      USE_DRIVE=False, PRESET="demo", IMAGE_SIZE=32, EPOCHS=1,
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
    store = workdir / "data" / "phantom_store"
    assert (store / "index.csv").is_file() and len(list((store / "qc").glob("*.png"))) == 3
    assert _images(outputs["01_download_and_register"]) >= 1
    # 02: a grid per epoch on disk and inline, then the loss curves.
    run = workdir / "runs" / "cyclegan"
    grids = sorted(p.name for p in (run / "grids").glob("epoch_*.png"))
    assert grids == ["epoch_001.png", "epoch_002.png"]
    assert _images(outputs["02_train_cyclegan"]) >= 3
    assert (run / "export" / "gen_t1_to_t2.keras").is_file()
    # 03: metrics of both directions, on the test subject.
    rows = read_csv(run / "metrics" / "test" / "per_slice.csv")
    assert {r["direction"] for r in rows} == {"t1_to_t2", "t2_to_t1"}
    assert all(0 <= r["mae_masked"] <= 1 for r in rows)
    assert _images(outputs["03_evaluate"]) == 2
    # 04: the comparison of every method, reusing notebook 02's CycleGAN run.
    table = read_csv(workdir / "runs" / "comparison" / "table.csv")
    assert {r["method"] for r in table} == {"simple", "cyclegan"}
    assert (workdir / "runs" / "comparison" / "tests.csv").is_file()
    assert _images(outputs["04_compare_methods"]) >= 4
    # Notebook 04 found notebook 03's evaluation of the same CycleGAN state and kept it.
    assert "cyclegan: already evaluated" in json.dumps(outputs["04_compare_methods"])
    # 04 runs the pipeline: it trained and evaluated only what was missing, timed each
    # step, and the report holds every method and the timings.
    record = json.loads((workdir / "runs" / "pipeline.json").read_text())
    steps = [s["step"] for s in record["steps"]]
    assert "evaluate simple" in steps and "evaluate cyclegan" not in steps
    assert steps[-1] == "compare" and all(s["seconds"] >= 0 for s in record["steps"])
    assert record["settings"]["image_size"] == 32
    report = (workdir / "runs" / "comparison" / "report.md").read_text()
    assert "| simple |" in report and "| cyclegan |" in report
    assert "How long each step took" in report
    # A method far below Simple is flagged in the record and the report.
    assert all(w in report for w in record["warnings"])
    assert ("## Warnings" in report) == bool(record["warnings"])
    # The machine and the dtype policy each run trained in (PRECISION "auto"; the Simple
    # baseline computes in float32).
    from colab_utils.precision import auto_policy

    policy = auto_policy()
    assert record["machine"]["policies"] == {"simple": "float32", "cyclegan": policy}
    assert f"Dtype policy of each run: simple float32, cyclegan {policy}." in report


def test_a_fork_slug_reaches_badges_install_cell_and_readme(tmp_path):
    from colab_utils.notebooks import update_readme_badges, write_notebooks

    paths = write_notebooks(tmp_path, repository="someone/my-fork")
    text = paths[1].read_text()
    assert "github/someone/my-fork/blob/main/notebooks/02_train_cyclegan.ipynb" in text
    assert "git+https://github.com/someone/my-fork@main" in text
    assert REPOSITORY not in text
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    update_readme_badges(readme, "someone/my-fork")
    assert REPOSITORY not in readme.read_text()
    assert colab_url("notebooks/03_evaluate.ipynb", "someone/my-fork") in readme.read_text()
    with pytest.raises(ValueError, match="OWNER/NAME"):
        write_notebooks(tmp_path, repository="not a slug")


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
    assert info["device"] in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="missing.png"):
        colab.show_image(tmp_path / "missing.png")
    colab.show_markdown("| a |\n|---|\n| 1 |")
    assert "| 1 |" in capsys.readouterr().out
