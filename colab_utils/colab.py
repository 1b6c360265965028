"""Colab integration: where the project lives, Drive, hardware, form fields, display.

``REPOSITORY`` is the project's GitHub slug; the notebooks' "Open in Colab"
badges and install cells name it too (for a fork, ``python tools/notebooks.py
--repo OWNER/NAME`` rewrites all of them; a test checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .log import get_logger
from .runtime.devices import hardware
from .viewer import in_colab, show_image  # noqa: F401 (the notebooks' colab.show_image)

logger = get_logger(__name__)

REPOSITORY = "mri-synthesis/t1t2-cyclegan-colab"
BRANCH = "main"
DRIVE_MOUNT = Path("/content/drive")
DRIVE_FOLDER = "MyDrive"


def colab_url(notebook_path: str, repository: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The "Open in Colab" address of a notebook of the repository."""
    return f"https://colab.research.google.com/github/{repository}/blob/{branch}/{notebook_path}"


@dataclass
class Workspace:
    """Where a notebook keeps data and runs (on Google Drive when mounted)."""

    root: Path
    data: Path
    runs: Path
    on_drive: bool

    def describe(self) -> str:
        place = "Google Drive (survives a disconnect)" if self.on_drive else \
            "the local disk" + (" of the runtime (lost when it disconnects)" if in_colab() else "")
        return f"data in {self.data}, runs in {self.runs}, on {place}"


def workspace(workdir: str = "mri-cyclegan", *, use_drive: bool = True) -> Workspace:
    """Create the working folders; in Colab with ``use_drive``, mount Drive and use it.

    Args:
        workdir: Folder name (relative: under ``MyDrive`` on Drive, else under the
            current directory) or an absolute path.
        use_drive: Mount Google Drive in Colab (ignored outside Colab).
    """
    on_drive = bool(use_drive and in_colab())
    if on_drive:
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(DRIVE_MOUNT))
        base = DRIVE_MOUNT / DRIVE_FOLDER
    else:
        base = Path.cwd()
    root = Path(workdir) if Path(workdir).is_absolute() else base / workdir
    space = Workspace(root, root / "data", root / "runs", on_drive)
    space.data.mkdir(parents=True, exist_ok=True)
    space.runs.mkdir(parents=True, exist_ok=True)
    logger.info("%s", space.describe())
    return space


def form_settings(**fields) -> dict:
    """A notebook's settings fields (``IMAGE_SIZE=...``) as setting names and values,
    leaving out the fields kept at ``None`` or ``""`` (the preset's value stays).

    Raises:
        ValueError: A field that is no setting's name in capitals.
    """
    from .config import all_setting_names

    known = set(all_setting_names())
    settings = {}
    for field, value in fields.items():
        name = field.lower()
        if field != name.upper() or name not in known:
            raise ValueError(f"notebook field {field}: expected a setting's name in capitals, "
                             f"one of {sorted(n.upper() for n in known)}")
        if value is not None and value != "":
            settings[name] = value
    return settings


def experiment(preset_name: str, **fields):
    """The settings tree of a notebook's form: the preset, with each field that is not
    empty (:func:`form_settings`) as an override."""
    from .presets import preset

    return preset(preset_name, **form_settings(**fields))


class StopNotebook(Exception):
    """Stops "Run all" with a message that says what to do, not a traceback (IPython
    shows what :meth:`_render_traceback_` returns)."""

    def _render_traceback_(self):
        return [f"STOPPED: {self}"]


def stop(message: str):
    """Stop the notebook here with ``message`` (:class:`StopNotebook`)."""
    raise StopNotebook(message)


def tensorboard(logdir) -> None:
    """TensorBoard on ``logdir`` in the notebook (Colab's ``%tensorboard``); elsewhere the
    command to run it."""
    logdir = Path(logdir)
    if in_colab():
        from IPython import get_ipython

        shell = get_ipython()
        shell.run_line_magic("load_ext", "tensorboard")
        shell.run_line_magic("tensorboard", f"--logdir {logdir}")
    else:
        logger.info("TensorBoard: tensorboard --logdir %s", logdir)


def show_report(directory) -> None:
    """A comparison's ``report.md`` in the notebook: its text (the links that only work
    next to the file made plain text), then its figures, each shown inline."""
    import re

    directory = Path(directory)
    report = directory / "report.md"
    if not report.is_file():
        raise FileNotFoundError(f"no report at {report}")
    text = report.read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    text = re.sub(r"^## Figures\n(\n?!\[[^\]]*\]\([^)]+\)\n?)*", "", text, flags=re.M)
    text = re.sub(r"\[([^\]]+)\]\((\.\./[^)]+)\)", r"\1 (`\2`)", text)
    show_markdown(text)
    for name in figures:
        show_image(directory / name)


def report_hardware() -> dict:
    """Log and return :func:`hardware`, with advice when there is no accelerator."""
    info = hardware()
    logger.info("%s; TensorFlow %s; mixed precision: %s; tf.distribute strategy: %s",
                info["device"], info["tensorflow"], info["policy"], info["strategy"])
    if info["device"].startswith("CPU") and in_colab():
        logger.warning("no GPU: Runtime > Change runtime type > T4 GPU makes training "
                       "about 20x faster")
    return info


def show_markdown(path_or_text) -> None:
    """Display Markdown (a file or a string) in the notebook, or print it."""
    text = path_or_text
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str)
                                          and path_or_text.endswith(".md")):
        text = Path(path_or_text).read_text()
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:
        pass
    print(text)


# -- a user's own scan (notebook 05) -------------------------------------------------------
def trained_model(model: str, sha256_digest: str, direction: str, run_dir):
    """The translator notebook 05 uses, and what it says of itself.

    Args:
        model: Empty for the workspace's run ``run_dir``, else anything
            :func:`~colab_utils.evaluation.export.load_model` takes (a ``.model.zip`` on
            Drive, an ``https://`` link with ``sha256_digest``, ``hf://owner/name``).
        sha256_digest: The archive's SHA-256 (required for a link).
        direction: ``"t1_to_t2"`` or ``"t2_to_t1"``.
        run_dir: The run of these settings in the workspace.

    Returns:
        ``(method, preprocessing settings, archive or None)``: for the workspace's run,
        its archive (``RUN.model.zip`` beside the run) to keep or share.

    Stops the notebook (:func:`stop`) with what to do when there is no such model.
    """
    from .evaluation.export import load_model

    source = model.strip() or run_dir
    archive = None
    if not model.strip():
        if not (Path(run_dir) / "export").is_dir():
            stop(f"no trained CycleGAN for these settings ({Path(run_dir).name}): run "
                 "notebook 02 with the same settings first, or give MODEL (a .model.zip, "
                 "an https link with MODEL_SHA256, or hf://owner/name)")
        archive = model_archive(run_dir)
    try:
        # Translating a scan is inference on this runtime: its fastest policy (bf16 on
        # CPUs with bf16 instructions), as the synthesize command does.
        method, settings = load_model(source, sha256_digest=sha256_digest.strip() or None,
                                      direction=direction, precision="auto")
    except (OSError, ValueError) as err:
        stop(f"MODEL {source}: {err}")
    if direction not in method.translators:
        stop(f"MODEL {source} translates {sorted(method.translators)}, not {direction}: "
             "change DIRECTION")
    return method, settings, archive


def model_archive(run_dir) -> Path:
    """The run's model archive, ``RUN.model.zip`` in ``models/`` beside the runs; written
    again only when the run has changed since (trained further, evaluated again)."""
    from .evaluation.export import SUFFIX, export_model
    from .training.rundir import RunDir

    run = RunDir(run_dir)
    archive = run.path.parent / "models" / f"{run.name}{SUFFIX}"
    records = [f.stat().st_mtime for f in run.path.rglob("*.json")]
    if archive.is_file() and records and archive.stat().st_mtime >= max(records):
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    return export_model(run.path, archive)


def keep_model(run_dir, hf_repo: str = "") -> Path:
    """Notebook 02's last step: the run's archive (:func:`model_archive`) offered for
    download, and with ``hf_repo`` (``owner/name``) each generator pushed to the Hugging
    Face Hub with Keras' own saving, as ``hf://owner/name-t1-to-t2`` and ``-t2-to-t1``
    (needs a Hub token: Colab's ``HF_TOKEN`` secret or ``huggingface_hub.login()``).
    Notebook 05 and ``synthesize --model`` load either form. A failed push stops the
    notebook with the reason; the archive is kept."""
    import keras

    from .config import DIRECTIONS
    from .training.rundir import RunDir

    archive = model_archive(run_dir)
    offer_download(archive)
    repo = hf_repo.strip().removeprefix("hf://").strip("/")
    if not repo:
        return archive
    if repo.count("/") != 1:
        stop(f"HF_REPO {hf_repo!r}: expected owner/name (a Hugging Face model repository)")
    for direction in DIRECTIONS:
        address = f"hf://{repo}-{direction.replace('_', '-')}"
        try:
            generator = keras.saving.load_model(RunDir(run_dir).generator(direction),
                                                compile=False)
            keras.saving.save_model(generator, address)
        except Exception as err:  # noqa: BLE001 (the Hub's and the network's errors vary)
            stop(f"pushing {direction} to {address} failed ({type(err).__name__}: {err}); "
                 f"the archive {archive} is kept: download it, or log in to the Hub and "
                 "run this cell again")
        logger.info("%s pushed to %s (load it with MODEL=%r, DIRECTION=%r in notebook 05)",
                    direction, address, address, direction)
    return archive


def your_scan(scan: str, space: Workspace, store=None, direction: str = "t1_to_t2"):
    """The scan notebook 05 translates: ``(path, the real other contrast or None)``.

    Args:
        scan: A NIfTI file's path (e.g. on Drive: ``/content/drive/MyDrive/...``);
            ``"example"`` for a test subject of the workspace's store (its real other
            contrast is then shown beside the synthetic one); empty to upload a file
            (in Colab).
        space: The workspace (uploads go to ``WORKDIR/scans``).
        store: The slice store (for ``"example"``).
        direction: Which contrast the scan is.
    """
    text = scan.strip()
    if text.lower() == "example":
        from .data.store import SliceStore

        subjects = SliceStore(store).subjects("test") if store is not None else None
        if not subjects:
            stop("SCAN = example needs a store with test subjects: run notebook 01 first, "
                 "or give a NIfTI file's path")
        t1, t2 = SliceStore(store).subject_scans(subjects[0])
        return (t1, t2) if direction == "t1_to_t2" else (t2, t1)
    if text:
        path = Path(text).expanduser()
        if not path.is_file():
            stop(f"SCAN {path}: no such file. Give the path of a NIfTI file (.nii or "
                 ".nii.gz; on Drive it starts with /content/drive/MyDrive/), or leave SCAN "
                 "empty to upload one")
        return path, None
    if not in_colab():
        stop("SCAN is empty: give the path of a NIfTI file, or 'example' for a test "
             "subject of this workspace (uploading needs Colab)")
    from google.colab import files  # type: ignore[import-not-found]

    uploaded = files.upload()
    if not uploaded:
        stop("nothing uploaded: run the cell again and choose a .nii or .nii.gz file")
    name, content = next(iter(uploaded.items()))
    path = space.root / "scans" / Path(name).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, None


def translate_scan(method, settings: dict, scan, direction: str, out_dir) -> Path:
    """Translate ``scan`` as ``synthesize`` does, into ``out_dir/NAME_synthetic-T2.nii.gz``
    (or ``-T1``), in the scan's own grid; a scan that cannot be translated stops the
    notebook with the reason (:func:`stop`)."""
    from .evaluation.synthesis import synthesize_volume

    scan = Path(scan)
    stem = scan.name.removesuffix(".gz").removesuffix(".nii")
    output = Path(out_dir) / f"{stem}_synthetic-{direction[-2:].upper()}.nii.gz"
    try:
        synthesize_volume(method, scan, output, direction=direction,
                          slice_size=settings["slice_size"], clip_low=settings["clip_low"],
                          clip_high=settings["clip_high"])
    except (OSError, ValueError) as err:
        stop(str(err))
    return output


def view_volumes(volumes: dict, save_to=None, viewer: str = "auto") -> None:
    """Look at volumes side by side: axial, coronal and sagittal planes through one point,
    the point moved by linked NiiVue crosshairs when ``ipyniivue`` is installed (a WebGL
    viewer, in Jupyter and Colab), by three sliders in Colab without it; elsewhere the
    planes through the brain's middle. The still figure is saved to ``save_to`` either way
    (:func:`colab_utils.viewer.show` says how the viewer is picked).

    Args:
        volumes: ``{title: NIfTI path}``; the first sets the grid (a scan and its
            synthetic version share it; another scan, e.g. the real T2 of a subject, is
            resampled onto it by its affine).
        viewer: ``"auto"``, ``"niivue"``, ``"sliders"`` or ``"static"``.
    """
    from .viewer import show

    show(volumes, save_to=save_to, viewer=viewer)


def offer_download(path) -> None:
    """Download a file to the user's computer (Colab); elsewhere say where it is."""
    path = Path(path)
    if in_colab():
        from google.colab import files  # type: ignore[import-not-found]

        files.download(str(path))
    logger.info("%s (%.1f MB)", path, path.stat().st_size / 1e6)
