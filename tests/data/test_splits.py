"""Splits for small sets: every split gets a subject from 3 subjects on, deterministically,
and a subject recorded in a store never moves when subjects are added."""

import random

import pytest

from colab_utils.data.splits import assign, quotas, small_split_notes


def _counts(assignment):
    return {s: sum(v == s for v in assignment.values()) for s in ("train", "val", "test")}


@pytest.mark.parametrize("n, expected", [(3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)),
                                         (10, (5, 2, 3)), (12, (6, 2, 4)),
                                         (40, (20, 8, 12))])
def test_quotas_at_the_demos_fractions(n, expected):
    # Half a subject rounds down: a small set keeps its training subjects (5 -> 3 / 1 / 1);
    # the demo's 12 give 6 / 2 / 4.
    q = quotas(n, 0.2, 0.3)
    assert (q["train"], q["val"], q["test"]) == expected


def test_every_split_gets_a_subject_from_three_on_for_any_seed():
    for n in range(3, 13):
        subjects = [f"sub-{i:02d}" for i in range(n)]
        for seed in range(20):
            counts = _counts(assign(subjects, seed=seed, val_fraction=0.2, test_fraction=0.3))
            assert min(counts.values()) >= 1, (n, seed, counts)
            assert counts["val"] + counts["test"] == sum(quotas(n, 0.2, 0.3).values()) - counts[
                "train"]


def test_the_split_is_deterministic_whatever_the_order():
    subjects = [f"IXI{i:03d}" for i in range(9)]
    first = assign(subjects, seed=6, val_fraction=0.2, test_fraction=0.3)
    shuffled = subjects[:]
    random.Random(1).shuffle(shuffled)
    assert assign(shuffled, seed=6, val_fraction=0.2, test_fraction=0.3) == first
    assert assign(subjects, seed=7, val_fraction=0.2, test_fraction=0.3) != first


def test_subjects_added_to_a_store_move_none_of_those_it_recorded():
    five = [f"case{i}" for i in range(5)]
    recorded = assign(five, seed=6, val_fraction=0.2, test_fraction=0.3)
    assert _counts(recorded) == {"train": 3, "val": 1, "test": 1}
    ten = five + [f"case{i}" for i in range(5, 10)]
    grown = assign(ten, seed=6, val_fraction=0.2, test_fraction=0.3, recorded=recorded)
    assert {s: grown[s] for s in five} == recorded
    assert _counts(grown) == {"train": 5, "val": 2, "test": 3}  # 10's quotas, filled by new


def test_fewer_than_three_subjects_say_what_can_and_cannot_be_done():
    with pytest.raises(ValueError, match=r"2 subject\(s\) \(a, b\): .*3 at least.*split file"):
        assign(["a", "b"])


def test_a_split_file_naming_unknown_subjects_is_named(tmp_path):
    split_file = tmp_path / "splits.csv"
    split_file.write_text("subject,split\na,train\nb,val\nc,test\nzz,test\n")
    with pytest.raises(ValueError, match=r"splits.csv: names 1 subject\(s\) that were not "
                                         r"preprocessed: zz"):
        assign(["a", "b", "c"], split_file=split_file)


def test_small_splits_are_said_with_what_they_mean():
    notes = small_split_notes({"a": "train", "b": "train", "c": "val", "d": "val", "e": "test"})
    assert any(n.startswith("2 training subject(s)") for n in notes)
    assert any("2 val subject(s)" in n and "no p-value below 0.5" in n for n in notes)
    assert any("1 test subject(s)" in n and "no p-value below 1" in n for n in notes)
    assert small_split_notes({f"s{i}": s for i, s in enumerate(["train"] * 3 + ["val"] * 3
                                                                + ["test"] * 3)}) == []
