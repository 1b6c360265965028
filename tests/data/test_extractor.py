"""The brain-extractor setting: the own mask by default, deepbet only when asked for and
installed. CI has no deepbet (nor torch): a stand-in module plays it where the wiring is
tested; deepbet's own figures on the ICBM head are in docs/REGISTRATION.md."""

import sys
import types

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from colab_utils.config import DataConfig
from colab_utils.data import axial, extractor
from colab_utils.data import preprocess as preprocess_module
from colab_utils.data.brain_mask import subject_brain_mask
from colab_utils.data.nifti import save_volume
from colab_utils.data.store import SliceStore
from colab_utils.data.template import mni_template

IDENTITY = {"t1_to_template": np.eye(4)[:3].tolist(), "t2_to_t1": np.eye(4)[:3].tolist()}


@pytest.fixture(autouse=True)
def _fresh_extractor():
    extractor._deepbet.cache_clear()  # a loaded deepbet (real or stand-in) is per test
    yield
    extractor._deepbet.cache_clear()


def _stand_in(mask: np.ndarray) -> types.ModuleType:
    """A module named deepbet whose BrainExtraction returns ``mask`` for any image."""
    module = types.ModuleType("deepbet")

    class BrainExtraction:
        def run(self, image, threshold=0.5, n_dilate=0):
            assert image.shape == mask.shape and (threshold, n_dilate) == (0.5, 0)
            return image, nib.Nifti1Image(mask.astype(np.uint8), image.affine), 0.0

    module.BrainExtraction = BrainExtraction
    return module


@pytest.fixture
def subject(tmp_path):
    """The template's T1 as a subject already in template space (recorded identity
    transforms: no registration)."""
    t1, _, affine = mni_template()
    return (save_volume(tmp_path / "s-T1.nii.gz", 1000 * t1, affine),
            save_volume(tmp_path / "s-T2.nii.gz", 1000 * t1, affine))


def _process(subject, store, config, monkeypatch):
    register_pair = preprocess_module.register_pair
    monkeypatch.setattr(preprocess_module, "register_pair",
                        lambda t1, t2, transforms=None: register_pair(t1, t2, IDENTITY))
    record = preprocess_module.process_subject("s", *subject, store, config)
    with np.load(SliceStore(store).subject_file("s")) as arrays:
        return record, arrays["mask"], [int(z) for z in arrays["slices"]]


def test_asking_for_deepbet_without_it_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "deepbet", None)  # import deepbet now fails
    assert not extractor.extractor_available("deepbet")
    assert extractor.extractor_available("own")
    with pytest.raises(ImportError, match="pip install deepbet.*brain_extractor='own'"):
        extractor.require_extractor("deepbet")
    t1 = mni_template()[0]
    with pytest.raises(ImportError, match="pip install deepbet"):
        extractor.brain_mask(t1, "deepbet")
    # preprocess says so before it writes anything or starts a worker.
    config = DataConfig(brain_extractor="deepbet")
    with pytest.raises(ImportError, match="brain_extractor='deepbet' needs the deepbet"):
        preprocess_module.preprocess({"s": ("t1.nii.gz", "t2.nii.gz")}, tmp_path / "store",
                                     config)
    assert not (tmp_path / "store").exists()
    with pytest.raises(ValueError, match="unknown brain_extractor 'bet'.*'own', 'deepbet'"):
        DataConfig(brain_extractor="bet").validated()
    with pytest.raises(ValueError, match="unknown brain_extractor"):
        extractor.brain_mask(t1, "bet")


def test_the_default_is_the_own_mask_and_records_stay_as_they_were(subject, tmp_path,
                                                                    monkeypatch):
    assert DataConfig().brain_extractor == "own"
    t1 = 1000 * mni_template()[0]
    mask, info = extractor.brain_mask(t1)
    own, own_info = subject_brain_mask(t1=t1)
    assert np.array_equal(mask, own) and info == {**own_info, "mask_extractor": "own"}
    # Through preprocessing, with deepbet importable: the default still does not use it.
    monkeypatch.setitem(sys.modules, "deepbet", _stand_in(np.zeros(t1.shape, bool)))
    record, slices, zs = _process(subject, tmp_path / "store", DataConfig(), monkeypatch)
    assert "mask_extractor" not in record and not record["mask_fallback"]
    assert np.array_equal(slices, axial.stack(own, zs, DataConfig().slice_size) > 0.5)


def test_deepbet_mask_is_used_checked_and_recorded_when_asked_for(subject, tmp_path,
                                                                   monkeypatch):
    _, template_mask, _ = mni_template()
    learned = ndimage.binary_erosion(template_mask)  # not the own mask, nor the fallback
    monkeypatch.setitem(sys.modules, "deepbet", _stand_in(learned))
    assert extractor.extractor_available("deepbet")
    config = DataConfig(brain_extractor="deepbet")
    record, slices, zs = _process(subject, tmp_path / "store", config, monkeypatch)
    assert record["mask_extractor"] == "deepbet" and not record["mask_fallback"]
    assert np.array_equal(slices, axial.stack(learned, zs, config.slice_size) > 0.5)
    assert 0.86 < record["mask_dice"] < 1
    # A learned mask of implausible volume falls back to the template's, as the own one.
    extractor._deepbet.cache_clear()
    tiny = np.zeros_like(template_mask)
    tiny[90:110, 100:120, 80:100] = True
    monkeypatch.setitem(sys.modules, "deepbet", _stand_in(tiny))
    mask, info = extractor.brain_mask(1000 * mni_template()[0], "deepbet")
    assert np.array_equal(mask, template_mask) and info["mask_fallback"]
    assert "deepbet's mask" in info["mask_reason"] and info["mask_extractor"] == "deepbet"


def test_a_store_keeps_the_extractor_it_was_made_with(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepbet", _stand_in(mni_template()[1]))
    SliceStore(tmp_path / "store").open_for(DataConfig())
    with pytest.raises(ValueError, match="made by brain_extractor='own', not 'deepbet'"):
        preprocess_module.preprocess({}, tmp_path / "store",
                                     DataConfig(brain_extractor="deepbet"))
    # In a workspace the other masks get a store of their own; the own masks keep the
    # names stores had before the setting existed.
    from colab_utils.workspace import store_name

    assert store_name(DataConfig()) == "phantom-head-08d5fd69_store"  # as on 2026-12-01
    assert store_name(DataConfig(brain_extractor="deepbet")) != store_name(DataConfig())
