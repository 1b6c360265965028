import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The slowest files first: pytest-xdist (see pyproject.toml) sends whole files to its
# workers in this order (with --no-loadscope-reorder), so the long ones do not come last.
SLOWEST_FIRST = ("test_notebooks.py", "test_training.py", "test_distribute.py", "test_health.py",
                 "test_unit.py", "test_synthesis.py", "test_pipeline.py", "test_cli.py",
                 "test_preprocess.py",
                 "test_registration.py", "test_resume_hardware.py", "test_methods.py",
                 "test_cyclegan.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable otherwise


def shared_directory(tmp_path_factory, name: str, build):
    """``build(directory)`` once per test session, however many pytest-xdist workers
    need it: the first builds it under a lock, the others wait and reuse it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one copy per worker
        fcntl = None
    if fcntl is None or "PYTEST_XDIST_WORKER" not in os.environ:
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    session = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    directory, done = session / name, session / f"{name}.done"
    with open(session / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_file():
            shutil.rmtree(directory, ignore_errors=True)  # a build that failed part-way
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Every test starts seeded and in float32, and leaves the global policy as it found it."""
    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture
def toy_data(tmp_path):
    """A small paired toy dataset directory (train/val/test .npz at 32 px)."""
    from colab_utils.data.toy import write_toy_dataset

    return write_toy_dataset(tmp_path / "toy", n_train=16, n_val=4, n_test=4, size=32, seed=3)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """Four phantom subjects (seed 7), shared by every test that needs NIfTI files."""
    from colab_utils.data.phantom import write_phantom

    return shared_directory(tmp_path_factory, "phantom",
                            lambda out: write_phantom(out, n_subjects=4, seed=7))


@pytest.fixture(scope="session")
def store(phantom_dir, tmp_path_factory):
    """``phantom_dir`` preprocessed with the default settings but a quarter of the
    subjects each for validation and test (2 train, 1 val, 1 test; 2 workers).
    Read-only: tests that change a store work on a copy."""
    from colab_utils.data.nifti import find_pairs
    from colab_utils.data.preprocess import preprocess

    return shared_directory(tmp_path_factory, "store", lambda out: preprocess(
        find_pairs(phantom_dir).pairs, out, STORE_CONFIG, workers=2))


def _store_config():
    from colab_utils.config import DataConfig

    return DataConfig(val_fraction=0.25, test_fraction=0.25)


STORE_CONFIG = _store_config()


class LogLines:
    """The messages the package logged (``colab_utils.*`` loggers) since the test began."""

    def __init__(self, caplog):
        self.caplog = caplog

    def list(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if r.name.startswith("colab_utils")]

    def __iter__(self):
        return iter(self.list())

    def __getitem__(self, index):
        return self.list()[index]

    def __len__(self):
        return len(self.list())

    def clear(self):
        self.caplog.clear()


@pytest.fixture
def messages(caplog):
    """What the package logs during the test (see :class:`LogLines`)."""
    import logging

    caplog.set_level(logging.INFO, logger="colab_utils")
    return LogLines(caplog)
