import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "colab_utils", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


def test_help_lists_commands_and_settings():
    out = _run("train", "--help")
    assert out.returncode == 0
    assert "--lambda-cycle" in out.stdout and "--run-dir" in out.stdout
    assert "--stop-at-step" in out.stdout


def test_bad_input_exits_non_zero_with_one_line_reason(tmp_path):
    out = _run("train", "--data", tmp_path / "missing", "--run-dir", tmp_path / "run",
               "--preset", "smoke")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: data directory not found")
    out = _run("train", "--data", tmp_path, "--run-dir", tmp_path / "run", "--preset", "smoke",
               "--lr", "-3")
    assert out.returncode == 2
    assert "'lr': expected > 0, got -3.0" in out.stderr
    assert "Traceback" not in out.stderr


def test_toy_writes_a_loadable_dataset(tmp_path):
    from colab_utils.data.store import load_split

    assert _run("toy", "--out", tmp_path / "toy", "--train", 8, "--val", 2, "--test", 2
                ).returncode == 0
    train = load_split(tmp_path / "toy", "train")
    assert train.t1.shape == (8, 32, 32, 1) and train.paired


def test_phantom_preprocess_train_end_to_end(tmp_path, phantom_dir, store):
    # The phantom command writes labelled NIfTI pairs (one subject here, for time).
    out = _run("phantom", "--out", tmp_path / "nifti", "--subjects", 1)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "nifti" / "phantom-001-T2.nii.gz").is_file()
    # preprocess with the command's defaults on the shared phantom, into a copy of the
    # shared store made with DataConfig(): same settings, so all 4 are kept.
    shutil.copytree(store, tmp_path / "store")
    out = _run("preprocess", "--input", phantom_dir, "--out", tmp_path / "store",
               "--val-fraction", 0.25, "--test-fraction", 0.25)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 subjects with T1 and T2" in out.stdout and "4 already done" in out.stderr
    assert (tmp_path / "store" / "index.csv").is_file()
    out = _run("train", "--data", tmp_path / "store", "--run-dir", tmp_path / "run",
               "--preset", "smoke", "--image-size", 32, "--jitter-size", 36,
               "--steps-per-epoch", 2, "--batch-size", 1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "averaged down to 32×32" in out.stderr  # the log goes to stderr
    assert f"outputs written to {tmp_path / 'run'}" in out.stdout
    assert (tmp_path / "run" / "grids" / "epoch_002.png").is_file()
    assert (tmp_path / "run" / "export" / "gen_t2_to_t1.keras").is_file()


def test_download_refuses_manual_sources_with_instructions(tmp_path):
    out = _run("download", "brats", "--dest", tmp_path)
    assert out.returncode == 2
    assert "manual" in out.stderr or "Synapse" in out.stderr
