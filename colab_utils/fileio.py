"""Files written whole: atomic writes (readers see the old file or the new one, never
half of one), JSON records and CSV tables."""

from __future__ import annotations

import os
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on some filesystems (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_if_changed(path, data: bytes) -> bool:
    """:func:`atomic_write_bytes`, unless ``path`` already holds ``data`` (its time and
    bytes then stay as they were: a re-run that changes nothing rewrites nothing).
    Returns whether it wrote."""
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True


def read_record(path) -> dict:
    """A JSON object from ``path``, or ``{}`` when it is missing, damaged or not an object
    (a run or store that has not got that far)."""
    import json

    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_record(path, record: dict) -> None:
    """Write a JSON object atomically (not at all when the file already holds it)."""
    import json

    write_if_changed(path, (json.dumps(record, indent=2) + "\n").encode())


# Columns of the tables that hold text; every other column is read back as a number.
TEXT_COLUMNS = frozenset({"direction", "subject", "method", "metric", "region", "level", "note",
                          "split", "modality", "qc_reasons", "t1", "t2", "error", "reference",
                          "start_t1_to_template", "start_t2_to_t1", "outlier",
                          "mask_fallback", "input", "kind", "reason"})


def write_csv(path, rows: list[dict], columns=None) -> Path:
    """Write rows as CSV atomically (floats with 6 significant digits; keys a row lacks
    are empty, keys not in ``columns`` left out)."""
    import csv
    import io

    path = Path(path)
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    write_if_changed(path, buffer.getvalue().encode())
    return path


def read_csv(path, text_columns=TEXT_COLUMNS) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`: numbers back as floats, except the
    ``text_columns`` (and any value that is not a number)."""
    import csv

    def convert(key, value):
        if key in text_columns:
            return value
        try:
            return float(value)
        except ValueError:
            return value

    with open(path, newline="") as f:
        return [{k: convert(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
