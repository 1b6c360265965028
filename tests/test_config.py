import json

import pytest

from colab_utils.config import TrainConfig


def test_defaults_are_the_cyclegan_paper():
    c = TrainConfig()
    assert (c.lr, c.beta_1, c.lambda_cycle, c.lambda_identity, c.pool_size,
            c.resolved_gan_mode) == (2e-4, 0.5, 10.0, 5.0, 50, "lsgan")
    assert c.lambda_identity == 0.5 * c.lambda_cycle
    assert (c.image_size, c.n_res_blocks, c.gen_filters, c.epochs, c.epochs_decay) == (
        256, 9, 64, 100, 100)
    assert c.validated() is c


def test_each_method_gets_its_papers_gan_loss_and_pairing():
    assert TrainConfig(model="pix2pix").resolved_gan_mode == "bce"
    assert TrainConfig(model="cyclegan_s").resolved_gan_mode == "lsgan"
    assert TrainConfig(model="pix2pix", gan_mode="lsgan").resolved_gan_mode == "lsgan"
    assert [TrainConfig(model=m).paired for m in ("cyclegan", "cyclegan_s", "pix2pix",
                                                  "supervised", "simple")] == [
        False, True, True, True, False]
    with pytest.raises(ValueError, match="lambda_supervised"):
        TrainConfig.smoke(model="cyclegan_s", lambda_supervised=0.0)


def test_smoke_preset_is_small_and_overridable():
    s = TrainConfig.smoke(seed=3)
    assert s.image_size == 32 and s.total_epochs == 2 and s.seed == 3


def test_json_round_trip(tmp_path):
    c = TrainConfig.smoke(lambda_cycle=7.5, notes="hello")
    c.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == c


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1.0, "'lr': expected > 0"),
    ("disc_lr_scale", 0.0, "'disc_lr_scale': expected > 0"),
    ("disc_norm", "layer", "'auto', 'instance', 'batch', 'none'"),
    ("beta_1", 1.0, r"'beta_1': expected a value in \[0, 1\)"),
    ("image_size", 30, "multiple of 4"),
    ("batch_size", 0, "'batch_size': expected > 0"),
    ("gan_mode", "wgan", "'lsgan', 'bce'"),
    ("precision", "fp8", "expected one of"),
    ("model", "unit", "'cyclegan', 'cyclegan_s', 'pix2pix', 'supervised', 'simple'"),
    ("lambda_l1", -1.0, "'lambda_l1': expected >= 0"),
    ("lambda_structure", -0.5, "'lambda_structure': expected >= 0"),
    ("pool_size", -2, "'pool_size': expected >= 0"),
    ("warmup_steps", -1, "'warmup_steps': expected >= 0"),
    ("validate_every", 0, "'validate_every': expected > 0"),
])
def test_out_of_range_values_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.smoke(**{field: value})


def test_load_names_the_file_and_the_bad_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"lr": 1e-3, "learning_rate": 1}))
    with pytest.raises(ValueError, match=r"config.json: unknown config field\(s\) \['learning_rate'\]"):
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
