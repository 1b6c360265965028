import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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

    return write_phantom(tmp_path_factory.mktemp("phantom"), n_subjects=4, seed=7)


@pytest.fixture(scope="session")
def store(phantom_dir, tmp_path_factory):
    """``phantom_dir`` preprocessed with the default settings (2 workers). Read-only:
    tests that change a store work on a copy."""
    from colab_utils.data.nifti import find_pairs
    from colab_utils.data.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("store")
    preprocess(find_pairs(phantom_dir).pairs, out, PreprocessConfig(), workers=2,
               log=lambda *_: None)
    return out
