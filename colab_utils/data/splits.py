"""Which subjects train, validate and test: stable by construction, or from a file.

Subjects are ranked by a stable hash of ``seed:ID`` (the same on every
machine) and fill the splits' quotas, the fractions rounded (:func:`quotas`):
test first, then validation, the rest trains, so that even 3 subjects give
1 / 1 / 1 and 5 give 3 / 1 / 1. A store records its split, and a subject it
recorded never moves: adding subjects to a store (a larger ``--subjects``, more
files in the folder, a subject that failed and later succeeds) only places the
new ones, in what the splits lack.

A split file (CSV with columns ``subject,split``) overrides it
(:func:`read_split_file`): e.g. a published protocol's subject lists.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

SPLITS = ("train", "val", "test")


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (SHA-256; the same on every machine)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0 ** 64


def unpaired_modalities(train_subjects, *, seed: int) -> dict[str, str]:
    """For strictly unpaired training: which scan (``"t1"`` or ``"t2"``) each training
    subject gives, never both. Half each on average, by a stable hash of the ID; only
    when that gives one modality to all does the subject with the extreme hash give
    the other."""
    scores = {s: unit_hash(f"{seed}:{s}:modality") for s in sorted(train_subjects)}
    chosen = {s: "t1" if u < 0.5 else "t2" for s, u in scores.items()}
    if len(chosen) >= 2 and len(set(chosen.values())) == 1:
        only = next(iter(chosen.values()))
        flip = (max if only == "t1" else min)(scores, key=scores.get)
        chosen[flip] = "t2" if only == "t1" else "t1"
    return chosen


def read_split_file(path) -> dict[str, str]:
    """``{subject: split}`` from a CSV with columns ``subject`` and ``split``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Missing columns, an unknown split name, a subject listed twice,
            or a split without subjects; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    assignment: dict[str, str] = {}
    lines: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"subject", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV with columns 'subject' and 'split', got "
                             f"{reader.fieldnames}")
        for row in reader:
            line = reader.line_num
            subject, split = (row["subject"] or "").strip(), (row["split"] or "").strip()
            if not subject:
                continue
            if split not in SPLITS:
                raise ValueError(f"{path}, line {line}: expected split train, val or test, "
                                 f"got {split!r} for {subject!r}")
            if subject in assignment:
                raise ValueError(f"{path}, line {line}: subject {subject!r} is listed twice "
                                 f"(first on line {lines[subject]} as "
                                 f"{assignment[subject]!r})")
            assignment[subject], lines[subject] = split, line
    empty = [s for s in SPLITS if s not in assignment.values()]
    if empty:
        raise ValueError(f"{path}: expected at least one subject in every split, got none in "
                         f"{empty}")
    return assignment


def quotas(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many of ``n`` subjects validate and test: the fractions rounded (a half down,
    so that a small set keeps its training subjects: 5 at 0.2 / 0.3 give 3 / 1 / 1), at
    least one each with 3 subjects or more, and one left to train."""
    def share(fraction):
        return max(1, math.ceil(n * fraction - 0.5 - 1e-9)) if n >= 3 else 0

    test, val = share(test_fraction), share(val_fraction)
    while n >= 3 and val + test > n - 1:
        if test >= val and test > 1:
            test -= 1
        else:
            val -= 1
    return {"test": test, "val": val, "train": n - test - val}


def assign(subjects, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
           split_file=None, recorded: dict[str, str] | None = None) -> dict[str, str]:
    """``{subject: split}`` for the subjects at hand.

    A subject the store already ``recorded`` (under the same split settings) keeps its
    split: adding subjects to a store moves none of those it holds. The new subjects,
    ranked by a stable hash of ``seed:ID``, fill what the splits lack of their
    :func:`quotas` (test first, then validation; the rest trains): 5 subjects at the
    default fractions give 3 / 1 / 1, and every split has a subject with 3 or more.

    Args:
        subjects: The subject IDs that were preprocessed.
        seed, val_fraction, test_fraction: The hash's seed and the fractions.
        split_file: A CSV that fixes the splits instead (subjects it does not name are
            left out of every split).
        recorded: The splits a store recorded for these settings (``None``: none).

    Raises:
        ValueError: Fewer than 3 subjects (what they can and cannot be used for), a
            split file that names subjects that are not here, or a split left empty
            (naming the cause and what to change).
    """
    subjects = sorted(subjects)
    if len(subjects) < 3 and not split_file:
        raise ValueError(
            f"{len(subjects)} subject(s) ({', '.join(subjects) or 'none'}): training, "
            "validation and test need one subject each, 3 at least. With fewer, a model "
            "can be trained (a split file with every subject in 'train') but neither its "
            "settings chosen on validation subjects nor its quality measured on unseen "
            "test subjects; add subjects for that")
    if split_file:
        chosen = read_split_file(split_file)
        unknown = sorted(set(chosen) - set(subjects))
        if unknown:
            raise ValueError(f"{split_file}: names {len(unknown)} subject(s) that were not "
                             f"preprocessed: {', '.join(unknown[:10])}"
                             + (" …" if len(unknown) > 10 else ""))
        assignment = {s: chosen[s] for s in subjects if s in chosen}
        source = str(split_file)
    else:
        assignment = {s: split for s, split in (recorded or {}).items() if s in subjects}
        new = sorted((s for s in subjects if s not in assignment),
                     key=lambda s: (unit_hash(f"{seed}:{s}"), s))
        wanted = quotas(len(subjects), val_fraction, test_fraction)
        for split in ("test", "val"):
            lacking = wanted[split] - sum(v == split for v in assignment.values())
            for subject in new[:max(lacking, 0)]:
                assignment[subject] = split
            new = new[max(lacking, 0):]
        assignment.update({s: "train" for s in new})
        source = (f"val_fraction {val_fraction} and test_fraction {test_fraction} with split "
                  f"seed {seed}")
    empty = [s for s in SPLITS if s not in assignment.values()]
    if empty:
        raise ValueError(f"{len(subjects)} subjects split by {source} leave no subject in "
                         f"{empty}; use more subjects or a split file")
    return assignment


def small_split_notes(assignment: dict[str, str]) -> list[str]:
    """What a split of fewer than 3 subjects means for the statistics, one line each."""
    notes = []
    for split in SPLITS:
        n = sum(v == split for v in assignment.values())
        if split == "train" and n < 3:
            notes.append(f"{n} training subject(s): a model of so few subjects may not "
                         "generalise; results describe these subjects, not a population")
        elif split != "train" and n < 3:
            notes.append(f"{n} {split} subject(s): per-subject statistics (mean ± std, the "
                         f"Wilcoxon test) rest on {n} value(s); no p-value below "
                         f"{min(1.0, 2.0 / 2 ** n):.2g} is possible")
    return notes
