import json

import numpy as np
import pytest

from colab_utils.training.checkpoints import CheckpointManager, CheckpointWarning


def _arrays(value):
    return {"model/00000": np.full((3, 2), value, np.float32), "model/00001": np.arange(4)}


def test_save_and_load_round_trip(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(5, _arrays(1.5), {"epoch": 1})
    step, arrays, meta = manager.latest()
    assert step == 5 and meta == {"epoch": 1}
    np.testing.assert_array_equal(arrays["model/00000"], np.full((3, 2), 1.5))
    np.testing.assert_array_equal(arrays["model/00001"], np.arange(4))


def test_keeps_only_the_last_k(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        manager.save(step, _arrays(step))
    assert manager.steps() == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000003.json", "ckpt-000000003.npz", "ckpt-000000004.json", "ckpt-000000004.npz"]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_npz", "bad_json"])
def test_damaged_latest_falls_back_to_previous_with_warning(tmp_path, damage):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(10, _arrays(1.0))
    manager.save(20, _arrays(2.0))
    npz, record = tmp_path / "ckpt-000000020.npz", tmp_path / "ckpt-000000020.json"
    if damage == "flip_byte":
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "delete_npz":
        npz.unlink()
    else:
        record.write_text("{ not json")
    with pytest.warns(CheckpointWarning, match="ckpt-000000020"):
        step, arrays, _ = manager.latest()
    assert step == 10
    assert float(arrays["model/00000"][0, 0]) == 1.0


def test_half_written_checkpoint_without_record_is_ignored(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, _arrays(1.0))
    # A crash after the data file but before the JSON record: not committed.
    (tmp_path / "ckpt-000000002.npz").write_bytes(b"partial")
    (tmp_path / ".ckpt-000000003.npz.tmp-999").write_bytes(b"partial")
    assert manager.steps() == [1]
    assert manager.latest()[0] == 1


def test_no_usable_checkpoint_returns_none(tmp_path):
    manager = CheckpointManager(tmp_path)
    assert manager.latest() is None
    manager.save(1, _arrays(1.0))
    (tmp_path / "ckpt-000000001.npz").write_bytes(b"garbage")
    with pytest.warns(CheckpointWarning, match="expected .* bytes"):
        assert manager.latest() is None


def test_record_describes_the_data_file(tmp_path):
    CheckpointManager(tmp_path).save(7, _arrays(0.0), {"note": "x"})
    record = json.loads((tmp_path / "ckpt-000000007.json").read_text())
    assert record["step"] == 7 and len(record["npz_sha256"]) == 64
    assert record["npz_bytes"] == (tmp_path / "ckpt-000000007.npz").stat().st_size


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)
