"""Models that travel: a run exported as one archive, loaded from a path or a link."""

import json
import zipfile

import numpy as np
import pytest
from http_server import FakeServer

from colab_utils.evaluation.export import export_model, load_model, sha256
from colab_utils.evaluation.scoring import evaluate
from colab_utils.presets import smoke_config
from colab_utils.training.fit import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory, store):
    """A finished, evaluated smoke CycleGAN on the shared store, and its archive."""
    root = tmp_path_factory.mktemp("export")
    run = root / "cyclegan-run"
    train(smoke_config(steps_per_epoch=2, epochs=1, epochs_decay=1, tensorboard=False,
                       collapse_check=False), run, store, show_inline=False)
    evaluate(run, store, split="val", examples=0)
    return run, export_model(run, root)


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


def test_the_archive_holds_the_generators_settings_preprocessing_and_a_model_card(exported):
    run, archive = exported
    assert archive.name == "cyclegan-run.model.zip"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        card = json.loads(zf.read("model.json"))
        text = zf.read("MODEL_CARD.md").decode()
    assert {"model.json", "MODEL_CARD.md", "gen_t1_to_t2.keras", "gen_t2_to_t1.keras"} == names
    assert card["method"] == "cyclegan" and card["image_size"] == 32 and card["format"] == 1
    assert card["preprocess"]["slice_size"] == 256 and card["preprocess"]["clip_low"] == 0.5
    assert card["data"]["source"] == "phantom" and "MNI ICBM152" in card["data"]["licence"]
    assert card["data"]["subjects"]["train"] == ["phantom-001", "phantom-003"]
    assert card["metrics"]["val"]["t1_to_t2"]["n_subjects"] == 1  # test not scored yet
    assert "test" not in card["metrics"]
    assert "a phantom, not real subjects" in text and "(n = 1)" in text


def test_a_model_from_a_link_is_verified_then_translates_as_the_run_does(
        exported, server, tmp_path, monkeypatch):
    run, archive = exported
    monkeypatch.setenv("COLAB_UTILS_CACHE", str(tmp_path / "cache"))
    digest = sha256(archive)
    url = server.add("/models/cyclegan.model.zip", archive.read_bytes())
    method, preprocess = load_model(url, sha256_digest=digest)
    direct, _ = load_model(run)
    images = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 1)).astype(np.float32)
    for direction in ("t1_to_t2", "t2_to_t1"):
        np.testing.assert_allclose(method.translate(images, direction=direction),
                                   direct.translate(images, direction=direction), atol=1e-6)
    assert method.image_size == 32 and preprocess["slice_size"] == 256
    # A link without its checksum, a wrong checksum: refused before anything is opened.
    with pytest.raises(ValueError, match="give the archive's SHA-256"):
        load_model(url)
    with pytest.raises(ValueError, match="SHA-256 mismatch|sha256"):
        load_model(server.add("/models/other.model.zip", archive.read_bytes()),
                   sha256_digest="0" * 64)


def test_an_archive_of_a_newer_version_or_no_archive_is_a_clear_error(exported, tmp_path):
    _, archive = exported
    newer = tmp_path / "newer.model.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(newer, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "model.json":
                card = json.loads(data)
                card.update(format=99, colab_utils="9.0")
                data = json.dumps(card).encode()
            dst.writestr(name, data)
    with pytest.raises(ValueError, match=r"newer.model.zip: a model archive of format 99, "
                                         r"written by colab_utils 9.0.*install a newer"):
        load_model(newer)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.zip: not a model archive"):
        load_model(junk)
    with pytest.raises(ValueError, match=r"SHA-256 .*, expected 00"):
        load_model(archive, sha256_digest="00" * 32)


def test_an_unfinished_run_is_not_exported(tmp_path):
    (tmp_path / "run").mkdir()
    smoke_config().save(tmp_path / "run" / "config.json")
    with pytest.raises(ValueError, match="has not finished"):
        export_model(tmp_path / "run", tmp_path)


def test_hub_models_go_through_keras_own_loading(monkeypatch):
    import keras

    seen = []
    image = keras.Input((32, 32, 1))
    model = keras.Model(image, keras.layers.Activation("tanh")(image))
    monkeypatch.setattr(keras.saving, "load_model",
                        lambda address, compile=False: seen.append(address) or model)
    method, preprocess = load_model("hf://someone/t1-to-t2", direction="t1_to_t2")
    assert seen == ["hf://someone/t1-to-t2"] and method.image_size == 32
    assert list(method.translators) == ["t1_to_t2"] and preprocess["slice_size"] == 256
    with pytest.raises(ValueError, match="say which direction"):
        load_model("hf://someone/t1-to-t2")


def test_a_scan_translated_in_bf16_matches_float32_and_the_synthesize_default_is_auto(
        exported, phantom_dir, tmp_path):
    import nibabel as nib

    from colab_utils.cli import build_parser
    from colab_utils.evaluation.synthesis import synthesize_volume
    from colab_utils.metrics import plane_scores

    _, archive = exported
    outputs = {}
    for policy in ("float32", "mixed_bfloat16"):
        method, settings = load_model(archive, precision=policy)
        assert method.policy == policy
        out = tmp_path / f"{policy}.nii.gz"
        synthesize_volume(method, phantom_dir / "phantom-001-T1.nii.gz", out,
                          direction="t1_to_t2", slice_size=settings["slice_size"],
                          clip_low=settings["clip_low"], clip_high=settings["clip_high"])
        outputs[policy] = np.asarray(nib.load(str(out)).dataobj, np.float32)
    full, half = outputs["float32"], outputs["mixed_bfloat16"]
    inside = full > 0
    assert inside.sum() > 100_000 and not np.array_equal(full, half)  # bf16 did run
    scale = float(full[inside].max())
    per_plane = plane_scores(full / scale, half / scale, inside, axis=2)["ssim"]
    assert np.nanmean(per_plane) >= 0.995 and np.nanmin(per_plane) >= 0.98
    # The command line translates in the hardware's fastest policy unless told otherwise.
    args = build_parser().parse_args(["synthesize", "--model", "m", "--input", "i",
                                      "--output", "o"])
    assert args.precision == "auto"


def test_notebook_02_keeps_one_archive_and_pushes_each_generator_with_keras_saving(
        exported, tmp_path, monkeypatch):
    import os
    import shutil

    import keras

    from colab_utils import colab

    run = tmp_path / "runs" / exported[0].name
    shutil.copytree(exported[0], run)
    archive = colab.model_archive(run)
    assert archive == tmp_path / "runs" / "models" / f"{run.name}.model.zip"
    written = archive.stat().st_mtime_ns
    assert colab.model_archive(run).stat().st_mtime_ns == written  # current: not rewritten
    record = next(run.rglob("*.json"))  # the run changed (evaluated again, trained on)
    later = archive.stat().st_mtime + 5
    os.utime(record, (later, later))
    assert colab.model_archive(run).stat().st_mtime_ns != written
    pushed = []
    monkeypatch.setattr(keras.saving, "save_model",
                        lambda model, address: pushed.append((address, model.input_shape)))
    assert colab.keep_model(run, hf_repo=" hf://someone/t1t2 ") == archive
    assert pushed == [("hf://someone/t1t2-t1-to-t2", (None, 32, 32, 1)),
                      ("hf://someone/t1t2-t2-to-t1", (None, 32, 32, 1))]
    assert colab.keep_model(run) == archive and len(pushed) == 2  # no repo: no push

    def refused(model, address):
        raise PermissionError("401 Client Error: Unauthorized")

    monkeypatch.setattr(keras.saving, "save_model", refused)
    with pytest.raises(colab.StopNotebook, match="failed .*401.*the archive .* is kept"):
        colab.keep_model(run, hf_repo="someone/t1t2")
    assert archive.is_file()
    with pytest.raises(colab.StopNotebook, match="expected owner/name"):
        colab.keep_model(run, hf_repo="t1t2")
