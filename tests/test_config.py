"""The settings tree: paper defaults, one name per setting, presets, old run files."""

import dataclasses
import json
from pathlib import Path

import pytest

from colab_utils.config import (
    RESUMABLE_CHANGES,
    DataConfig,
    Experiment,
    TrainConfig,
    all_setting_names,
)
from colab_utils.presets import PRESETS, method_config, preset, smoke_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_defaults_are_the_cyclegan_paper():
    c = TrainConfig()
    assert (c.lr, c.beta_1, c.lambda_cycle, c.lambda_identity, c.pool_size,
            c.gan_mode) == (2e-4, 0.5, 10.0, 5.0, 50, "lsgan")
    assert c.lambda_identity == 0.5 * c.lambda_cycle
    assert (c.image_size, c.n_res_blocks, c.gen_filters, c.epochs, c.epochs_decay) == (
        256, 9, 64, 100, 100)
    assert c.validated() is c


def test_each_method_gets_its_papers_gan_loss_and_pairing():
    assert TrainConfig(model="pix2pix").gan_mode == "bce"
    assert TrainConfig(model="cyclegan_s").gan_mode == "lsgan"
    assert [TrainConfig(model=m).paired for m in ("cyclegan", "cyclegan_s", "pix2pix",
                                                  "supervised", "simple")] == [
        False, True, True, True, False]
    with pytest.raises(ValueError, match="lambda_supervised"):
        smoke_config(model="cyclegan_s", lambda_supervised=0.0)


def test_no_setting_name_is_in_two_parts_of_the_tree():
    data, train = set(DataConfig.field_names()), set(TrainConfig.field_names())
    own = set(Experiment.own_fields())
    assert not (data & train or data & own or train & own)
    assert len(all_setting_names()) == len(data) + len(train) + len(own)


def test_presets_are_whole_and_fields_left_unset_keep_them():
    assert set(PRESETS) == {"smoke", "demo", "paper", "ixi-40"}
    paper = preset("paper")
    # The paper preset alone: 256 px, every brain slice, 100 + 100 epochs of every slice.
    assert (paper.train.image_size, paper.train.epochs, paper.train.epochs_decay,
            paper.train.steps_per_epoch, paper.data.slices) == (256, 100, 100, 0, "brain")
    assert (paper.train.gen_filters, paper.train.batch_size, paper.train.lr) == (64, 1, 2e-4)
    # A notebook whose size and length fields are left at None keeps all of that.
    unset = dict(image_size=None, epochs=None, epochs_decay=None, steps_per_epoch=None,
                 subjects=None)
    assert preset("paper", **unset) == paper
    # A value the user sets overrides it; a new size brings the paper's jitter ratio.
    small = preset("paper", image_size=128, epochs=3)
    assert (small.train.image_size, small.train.jitter_size, small.train.epochs,
            small.train.epochs_decay) == (128, 144, 3, 100)
    demo = preset("demo")
    assert (demo.train.image_size, demo.train.steps_per_epoch, demo.data.subjects) == (64, 64, 12)
    ixi = preset("ixi-40")
    assert (ixi.data.source, ixi.data.protocol, ixi.data.subjects) == ("ixi", "ixi-40", 40)
    assert ixi.train == paper.train
    with pytest.raises(ValueError, match="unknown setting 'imagesize'"):
        preset("demo", imagesize=32)
    with pytest.raises(ValueError, match="preset"):
        preset("fast")


def test_method_config_gives_cyclegan_longer_epochs_and_unit_its_factor():
    demo = preset("demo")
    assert method_config(demo, "cyclegan").steps_per_epoch == 128  # 64 × 2.0
    assert method_config(demo, "cyclegan_s").steps_per_epoch == 64
    assert method_config(demo, "unit").steps_per_epoch == 64  # 64 × 1.0
    assert method_config(preset("demo", unit_step_factor=0.25), "unit_s").steps_per_epoch == 16
    assert method_config(demo, "unit").model_lr == pytest.approx(4e-4)  # 8e-4 × 0.5
    assert method_config(demo, "pix2pix").model == "pix2pix"
    assert method_config(preset("demo", steps_per_epoch=5, cyclegan_step_factor=1.5),
                         "cyclegan").steps_per_epoch == 8
    assert method_config(preset("paper"), "cyclegan").steps_per_epoch == 0  # every slice


def test_json_round_trip(tmp_path):
    c = smoke_config(lambda_cycle=7.5, grid_slices=3)
    c.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == c
    # A setting that was removed because nothing read it (notes) is dropped, any value.
    values = {**c.to_dict(), "notes": "a run of last week"}
    assert TrainConfig.from_dict(values) == c


def test_a_run_config_written_before_the_settings_tree_still_loads(tmp_path):
    # config.json of the demo CycleGAN as runs wrote it until 2026-11 (max_steps_per_epoch,
    # and the options removed since at the one value the code implements).
    old = TrainConfig.load(FIXTURES / "run_config_2026-11.json")
    now = method_config(preset("demo"), "cyclegan")
    # Settings added since take their defaults; those a run may change on resume aside,
    # the old run is today's demo CycleGAN but for the shape of its epochs (8 of 80
    # steps then, 4 of 128 since the demo's budget of 2026-11-30).
    differing = {f.name for f in dataclasses.fields(TrainConfig)
                 if getattr(old, f.name) != getattr(now, f.name)}
    assert differing <= RESUMABLE_CHANGES | {"steps_per_epoch"} and old.model == "cyclegan"
    assert (old.steps_per_epoch, now.steps_per_epoch) == (80, 128)
    assert old.context_slices == 0 and old.unit_weights == (10.0, 0.1, 100.0, 0.1, 100.0)
    assert old.collapse_grace == TrainConfig().collapse_grace != now.collapse_grace
    values = json.loads((FIXTURES / "run_config_2026-11.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**values, "upsampling": "resize_conv"}))
    with pytest.raises(ValueError, match="'upsampling' is 'resize_conv', a setting this "
                                         "version no longer has"):
        TrainConfig.load(path)
    path.write_text(json.dumps({**values, "precision": "off"}))
    assert TrainConfig.load(path).precision == "float32"


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1.0, "'lr': expected > 0"),
    ("beta_1", 1.0, r"'beta_1': expected a value in \[0, 1\)"),
    ("image_size", 30, "multiple of 4"),
    ("batch_size", 0, "'batch_size': expected > 0"),
    ("precision", "fp8", "expected one of"),
    ("model", "munit",
     "'cyclegan', 'cyclegan_s', 'unit', 'unit_s', 'pix2pix', 'supervised', 'simple'"),
    ("lambda_l1", -1.0, "'lambda_l1': expected >= 0"),
    ("lambda_structure", -0.5, "'lambda_structure': expected >= 0"),
    ("pool_size", -2, "'pool_size': expected >= 0"),
    ("validate_every", 0, "'validate_every': expected > 0"),
])
def test_out_of_range_values_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        smoke_config(**{field: value})


@pytest.mark.parametrize("field,value,message", [
    ("source", "xnat", "'phantom', 'ixi', 'folder', 'gdrive'"),
    ("slices", "all", "'seed', 'range', 'brain'"),
    ("val_fraction", 0.9, "val_fraction \\+ test_fraction"),
    ("slice_size", 30, "slice_size"),
    ("phantom_kind", "skull", "'head', 'brain', 'thick'"),
    ("protocol", "ixi-100", "'ixi-40'"),
    ("workers", 0, "'workers': expected >= 1"),
])
def test_bad_data_settings_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**{field: value}).validated()


@pytest.mark.parametrize("overrides, message", [
    ({"methods": "simple"}, "at least two"),
    ({"methods": "simple,munit"}, "methods"),
    ({"volume_methods": "cyclegan,munit"}, "volume_methods"),
    ({"volume_plane_step": 0}, "volume_plane_step"),
    ({"unit_step_factor": -1.0}, "unit_step_factor"),
    ({"unit_weights": "10,0.1,100,0.1"}, "unit_weights"),
    ({"unit_weights": "10,0.1,-100,0.1,100"}, "unit_weights"),
    ({"context_slices": 5}, "context_slices"),
    ({"reference": "pix2pix", "methods": "simple,cyclegan"}, "reference"),
    ({"strategy": "horovod"}, "strategy"),
    ({"cyclegan_step_factor": 0.0}, "cyclegan_step_factor"),
])
def test_bad_comparison_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset("smoke", **overrides)


def test_load_names_the_file_and_the_bad_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"lr": 1e-3, "learning_rate": 1}))
    with pytest.raises(ValueError,
                       match=r"config.json: unknown config field\(s\) \['learning_rate'\]"):
        TrainConfig.load(path)
    path.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ValueError, match="config.json: config field 'epochs': expected int"):
        TrainConfig.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        TrainConfig.load(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        TrainConfig.load(tmp_path / "nope.json")


def test_from_dict_converts_command_line_strings():
    c = TrainConfig.from_dict({"epochs": "3", "lr": "0.001", "augment": "false"})
    assert (c.epochs, c.lr, c.augment) == (3, 0.001, False)
    d = DataConfig.from_dict({"slice_range": "50:140", "unpaired": "true"})
    assert d.slice_range == (50, 140) and d.unpaired
    assert dataclasses.replace(d, unpaired=False) != d
