"""Which subjects train, validate and test: stable by construction, or from a file.

A subject's split is a pure function of its ID, the split seed and the
fractions (:func:`stable_split`): a stable hash of ``seed:ID`` mapped to
[0, 1) is compared with the fractions. Adding or removing subjects (a larger
``--subjects``, a subject that failed and later succeeds) never moves another
subject between splits. The price of that stability is that, with few
subjects, the split sizes are only on average the fractions.

A split file (CSV with columns ``subject,split``) overrides it
(:func:`read_split_file`): e.g. a published protocol's subject lists.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

SPLITS = ("train", "val", "test")


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (SHA-256; the same on every machine)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0 ** 64


def stable_split(subject: str, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """``"test"``, ``"val"`` or ``"train"`` for one subject, whoever else exists."""
    u = unit_hash(f"{seed}:{subject}")
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction \
        else "train"


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


def assign(subjects, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
           split_file=None) -> dict[str, str]:
    """``{subject: split}`` for the subjects at hand.

    Args:
        subjects: The subject IDs that were preprocessed.
        seed, val_fraction, test_fraction: For :func:`stable_split`.
        split_file: A CSV that fixes the splits instead (subjects it does not name are
            left out of every split).

    Raises:
        ValueError: The split file names subjects that are not here, or a split ends
            up empty (naming the cause and what to change).
    """
    subjects = sorted(subjects)
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
        assignment = {s: stable_split(s, seed=seed, val_fraction=val_fraction,
                                      test_fraction=test_fraction) for s in subjects}
        source = (f"val_fraction {val_fraction} and test_fraction {test_fraction} with split "
                  f"seed {seed}")
    empty = [s for s in SPLITS if s not in assignment.values()]
    if empty:
        raise ValueError(f"{len(subjects)} subjects split by {source} leave no subject in "
                         f"{empty}; use more subjects, other fractions or seed, or a split file")
    return assignment
