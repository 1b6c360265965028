"""The notebook suite, generated from one definition so the four stay consistent.

``python -m colab_utils notebooks`` writes ``notebooks/*.ipynb`` (without
outputs) from the cells below and the repository slug in
:data:`colab_utils.colab.REPOSITORY`; ``--repo OWNER/NAME`` uses another slug
(for a fork) and also rewrites the README's badges. A test checks that the
committed notebooks equal what this module generates.

Every notebook has the same shape: a badge and overview, a Setup cell that
installs the package when it is missing (Colab), one settings cell of Colab
form fields tagged ``parameters`` (the same names in every notebook, so CI can
run them small with papermill), then only calls into ``colab_utils`` and plots.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .colab import BRANCH, REPOSITORY, colab_url

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "colab-utils-mri-cyclegan"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

SETTINGS = '''\
# Settings: the same names in every notebook (CI runs them with small values).
DATA_SOURCE = "phantom"  # @param ["phantom", "ixi", "folder", "gdrive"]
SUBJECTS = 10  # @param {type:"integer"}
FOLDER = ""  # @param {type:"string"}
GDRIVE_ID = ""  # @param {type:"string"}
WORKDIR = "mri-cyclegan"  # @param {type:"string"}
USE_DRIVE = True  # @param {type:"boolean"}
PRESET = "demo"  # @param ["demo", "paper"]
IMAGE_SIZE = 64  # @param [32, 64, 128, 256] {type:"raw"}
EPOCHS = 6  # @param {type:"integer"}
EPOCHS_DECAY = 2  # @param {type:"integer"}
STEPS_PER_EPOCH = 40  # @param {type:"integer"}
METHODS = "simple,supervised,pix2pix,cyclegan,cyclegan_s"  # @param {type:"string"}
PRECISION = "auto"  # @param ["auto", "float32", "mixed_float16", "mixed_bfloat16"]
STRATEGY = "auto"  # @param ["auto", "default", "mirrored", "tpu", "multiworker"]'''

SETTINGS_HELP = """\
## Settings

`DATA_SOURCE`: `phantom` (generated offline from the MNI152 template; not real
subjects), `ixi` (downloaded and verified, `SUBJECTS` of them), `folder`
(your own T1/T2 NIfTI pairs in `FOLDER`, e.g. BraTS or OASIS uploaded to
Drive) or `gdrive` (a shared Drive folder, `GDRIVE_ID`). `WORKDIR` holds data
and runs; with `USE_DRIVE` it is on your Google Drive, so a disconnect loses
nothing. `PRESET`: `demo` (narrow networks, minutes) or `paper` (the CycleGAN
paper's networks, batch 1, learning rate and identity loss, every brain
slice). The size and length fields apply to both: for the paper's schedule
set `IMAGE_SIZE = 256`, `EPOCHS = 100`, `EPOCHS_DECAY = 100` and
`STEPS_PER_EPOCH = 0` (whole epochs; hours on a GPU). `PRECISION`: `auto`
picks `mixed_float16` on tensor-core GPUs, `mixed_bfloat16` on TPUs and bf16
CPUs, float32 otherwise. `STRATEGY`: `auto` uses a TPU when the runtime has
one, all GPUs when there are several, otherwise one device (see the README's
Scaling section)."""

INSTALL = f'''\
# Install colab_utils and its pinned requirements when missing (e.g. on a fresh Colab runtime).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("colab_utils") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "{PACKAGE} @ git+https://github.com/{{repository}}@{BRANCH}"], check=True)'''

WORKSPACE = '''\
from colab_utils import colab
from colab_utils.pipeline import PipelineSettings, prepare_data

space = colab.workspace(WORKDIR, use_drive=USE_DRIVE)
hardware = colab.report_hardware()
settings = PipelineSettings.preset(PRESET, subjects=SUBJECTS, image_size=IMAGE_SIZE,
                                   epochs=EPOCHS, epochs_decay=EPOCHS_DECAY,
                                   steps_per_epoch=STEPS_PER_EPOCH,
                                   methods=tuple(METHODS.split(",")),
                                   precision=PRECISION, strategy=STRATEGY)'''

PREPARE = '''\
store = prepare_data(DATA_SOURCE, space.data, settings, folder=FOLDER, gdrive_id=GDRIVE_ID)'''

NOTEBOOKS = {
    "01_download_and_register": {
        "title": "Download and register T1/T2 brain MRI",
        "overview": """\
Gets a data source and turns it into a **slice store** the other notebooks
train and evaluate on: pairs each subject's T1 and T2, registers T2 → T1
(rigid) and T1 → MNI152 (affine) with SimpleITK, clips intensities to
percentiles inside the brain, scales to [0, 1] and cuts axial slices, split by
subject into train/val/test. Finished subjects are skipped on a re-run.""",
        "cells": [
            ("md", "## Get and preprocess the data\n\nThe default, the phantom, needs "
                   "no download. Registration takes a few seconds per subject."),
            ("code", PREPARE),
            ("md", "## What the store holds\n\nSubjects and slices per split, and the "
                   "registration quality of each subject (correlation with the template; "
                   "outliers are flagged)."),
            ("code", "from colab_utils.pipeline import store_report\n\n"
                     "colab.show_markdown(store_report(store))"),
            ("md", "Registration check of the first subject: T1 and T2 in template space "
                   "with the brain-mask outline."),
            ("code", "colab.show_image(sorted((store / \"qc\").glob(\"*.png\"))[0])"),
        ],
    },
    "02_train_cyclegan": {
        "title": "Train a CycleGAN: T1 ↔ T2",
        "overview": """\
Trains the unpaired CycleGAN (two ResNet generators, two PatchGAN
discriminators, LSGAN, cycle loss) on the slice store, showing a grid of
fixed validation slices after **every epoch** and the loss curves at the end.
Checkpoints go to the run directory (on Drive when mounted): **after a
disconnect, run the notebook again and training resumes from the last
checkpoint** (it prints `resuming at step N`).""",
        "cells": [
            ("code", PREPARE + "  # quick when notebook 01 has run"),
            ("md", "## Train\n\nEach epoch ends with a grid: input | translated | "
                   "translated back | real other contrast."),
            ("code", "from colab_utils.pipeline import method_config\n"
                     "from colab_utils.training import train\n\n"
                     "config = method_config(\"cyclegan\", settings)\n"
                     "run_dir = space.runs / \"cyclegan\"\n"
                     "result = train(config, run_dir, store, show_inline=True)"),
            ("md", "## Loss curves"),
            ("code", "colab.show_image(run_dir / \"loss_curves.png\")"),
        ],
    },
    "03_evaluate": {
        "title": "Evaluate a trained model",
        "overview": """\
Evaluates the CycleGAN of notebook 02 on the test subjects in both directions:
MAE, MSE, PSNR, SSIM and mutual information per slice and per subject, inside
the brain mask and over the whole image, on the [0, 1] scale with
`data_range = 1`. Shows the summary and the best and worst slices.""",
        "cells": [
            ("code", PREPARE),
            ("md", "## Metrics on the test split"),
            ("code", "from colab_utils.evaluation import evaluate\n\n"
                     "run_dir = space.runs / \"cyclegan\"  # trained by notebook 02\n"
                     "evaluation = evaluate(run_dir, store, split=\"test\")\n"
                     "colab.show_markdown(evaluation.directory / \"summary.md\")"),
            ("md", "## Best and worst slices (by SSIM in the brain mask)"),
            ("code", "colab.show_image(evaluation.directory / \"examples_t1_to_t2.png\")\n"
                     "colab.show_image(evaluation.directory / \"examples_t2_to_t1.png\")"),
        ],
    },
    "04_compare_methods": {
        "title": "Compare CycleGAN with other methods",
        "overview": """\
Trains (or loads, when already trained) every method on the same data:
the non-learned **Simple** baseline, the **supervised** generator, **pix2pix**,
**CycleGAN** and **CycleGAN_s**; evaluates each and compares them: one table,
paired Wilcoxon signed-rank tests against CycleGAN, box plots and a
qualitative figure.""",
        "cells": [
            ("md", "## Train, evaluate and compare every method"),
            ("code", "from colab_utils.pipeline import run_pipeline\n\n"
                     "record = run_pipeline(space.runs, space.data, settings, "
                     "source=DATA_SOURCE,\n"
                     "                      folder=FOLDER, gdrive_id=GDRIVE_ID)\n"
                     "comparison = space.runs / \"comparison\""),
            ("md", "## The comparison table (mean ± std over test slices; best in bold)"),
            ("code", "colab.show_markdown(comparison / \"table.md\")"),
            ("md", "## Statistics, figures and timings"),
            ("code", "colab.show_markdown(comparison / \"report.md\")\n"
                     "for figure in sorted(comparison.glob(\"*.png\")):\n"
                     "    colab.show_image(figure)"),
        ],
    },
}


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _cell(kind: str, text: str, tags=()) -> dict:
    cell = {"cell_type": "markdown" if kind == "md" else "code", "metadata": {},
            "source": _lines(text)}
    if tags:
        cell["metadata"]["tags"] = list(tags)
    if kind == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
    return cell


def badge(name: str, repository: str = REPOSITORY) -> str:
    """Markdown of the "Open in Colab" badge of ``notebooks/NAME.ipynb``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(f'notebooks/{name}.ipynb', repository)})"


def notebook(name: str, repository: str = REPOSITORY) -> dict:
    """The notebook ``name`` as a JSON-ready dict (nbformat 4, no outputs)."""
    spec = NOTEBOOKS[name]
    cells = [
        _cell("md", f"{badge(name, repository)}\n\n# {spec['title']}\n\n"
                    f"## Overview\n\n{spec['overview']}\n\nPart of the T1w ↔ T2w CycleGAN "
                    f"notebook suite ([repository](https://github.com/{repository})); the "
                    "code lives in the tested `colab_utils` package."),
        _cell("md", "## Setup"),
        _cell("code", INSTALL.format(repository=repository)),
        _cell("md", SETTINGS_HELP),
        _cell("code", SETTINGS, tags=("parameters",)),
        _cell("md", "Working folders (Google Drive when mounted), the accelerator and the "
                    "mixed-precision policy chosen for it."),
        _cell("code", WORKSPACE),
    ]
    cells += [_cell(kind, text) for kind, text in spec["cells"]]
    for i, cell in enumerate(cells):  # stable ids (nbformat 4.5), so diffs stay small
        cell["id"] = f"cell-{i:02d}"
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"},
                         "language_info": {"name": "python"},
                         "accelerator": "GPU", "colab": {"provenance": []}}}


def render(name: str, repository: str = REPOSITORY) -> str:
    return json.dumps(notebook(name, repository), indent=1, ensure_ascii=False) + "\n"


def write_notebooks(directory=None, repository: str = REPOSITORY) -> list[Path]:
    """Write every notebook into ``directory`` (default: the checkout's ``notebooks/``)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise ValueError(f"repository: expected OWNER/NAME, got {repository!r}")
    directory = Path(directory) if directory else ROOT / "notebooks"
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NOTEBOOKS:
        path = directory / f"{name}.ipynb"
        path.write_text(render(name, repository))
        paths.append(path)
    return paths


def update_readme_badges(readme: Path, repository: str) -> None:
    """Point every notebook badge of the README at ``repository``."""
    text = readme.read_text()
    text = re.sub(r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/",
                  f"colab.research.google.com/github/{repository}/blob/", text)
    text = re.sub(r"https://github\.com/[\w.-]+/[\w.-]+(?=[)\s@])",
                  f"https://github.com/{repository}", text)
    readme.write_text(text)


def set_repository(repository: str) -> list[Path]:
    """Use ``repository`` (``OWNER/NAME``) everywhere: the constant in ``colab.py``, the
    notebooks and the README's badges. Returns the files written."""
    paths = write_notebooks(repository=repository)
    colab_file = Path(__file__).with_name("colab.py")
    text = re.sub(r'^REPOSITORY = ".*"$', f'REPOSITORY = "{repository}"',
                  colab_file.read_text(), count=1, flags=re.M)
    colab_file.write_text(text)
    readme = ROOT / "README.md"
    if readme.is_file():
        update_readme_badges(readme, repository)
        paths.append(readme)
    return paths + [colab_file]
