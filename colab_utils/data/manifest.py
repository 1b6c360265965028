"""The data manifest: every data source with its URLs, checksum, licence and access.

``data_manifest.csv`` (at the repository root; an installed package carries a
copy as package data, made by ``setup.py``) has one row per source and the
columns ``name, modality, urls, checksum, size_bytes, licence, access, notes``:

* ``urls``: zero or more URLs separated by spaces (mirrors, tried in order);
* ``checksum``: ``md5:<32 hex digits>`` or ``sha256:<64 hex digits>``, or empty;
* ``size_bytes``: an integer, or empty when unknown;
* ``access``: ``http`` (downloadable by script), ``gdrive`` (Google Drive, via
  gdown), ``manual`` (needs registration; the notes say what to do) or
  ``generated`` (made offline by this package).

Every validation error names the file and the line number.
"""

from __future__ import annotations

import csv
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

COLUMNS = ("name", "modality", "urls", "checksum", "size_bytes", "licence", "access", "notes")
ACCESS_CHOICES = ("http", "gdrive", "manual", "generated")
CHECKSUM_LENGTHS = {"md5": 32, "sha256": 64}
MANIFEST_NAME = "data_manifest.csv"


def default_manifest() -> Path:
    """The manifest an installed package carries, or the checkout's (an editable install,
    or running from the repository)."""
    packaged = resources.files("colab_utils.data") / MANIFEST_NAME
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / MANIFEST_NAME


@dataclass(frozen=True)
class Checksum:
    """A file checksum: ``algorithm`` (``"md5"`` or ``"sha256"``) and lower-case ``hexdigest``."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class Source:
    """One row of the data manifest.

    Attributes:
        name: Unique identifier, e.g. ``"ixi-t1"``.
        modality: What the data holds, e.g. ``"T1"`` or ``"T1+T2"``.
        urls: Download URLs, tried in order (empty for manual/generated data).
        checksum: Expected checksum of the downloaded file, or ``None``.
        size_bytes: Expected size of the downloaded file, or ``None``.
        licence: Licence or data-use terms.
        access: One of ``ACCESS_CHOICES``.
        notes: Free text: contents, instructions for manual access.
    """

    name: str
    modality: str
    urls: tuple[str, ...]
    checksum: Checksum | None
    size_bytes: int | None
    licence: str
    access: str
    notes: str

    @property
    def url(self) -> str | None:
        """The first URL, or ``None`` when the source has none."""
        return self.urls[0] if self.urls else None


def parse_checksum(text) -> Checksum | None:
    """Parse ``"md5:<hex>"`` / ``"sha256:<hex>"``; empty or ``None`` gives ``None``.

    Args:
        text: The checksum string, a :class:`Checksum` (returned as is) or ``None``.

    Returns:
        The parsed checksum with a lower-case digest, or ``None``.

    Raises:
        ValueError: Unknown algorithm, wrong digest length or non-hex digits.
    """
    if text is None or isinstance(text, Checksum):
        return text
    text = str(text).strip()
    if not text:
        return None
    algorithm, sep, digest = text.partition(":")
    algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
    if not sep or algorithm not in CHECKSUM_LENGTHS:
        raise ValueError(f"checksum: expected 'md5:<hex>' or 'sha256:<hex>', got {text!r}")
    length = CHECKSUM_LENGTHS[algorithm]
    if len(digest) != length:
        raise ValueError(f"checksum: expected {length} hex digits for {algorithm}, "
                         f"got {len(digest)} in {text!r}")
    if set(digest) - set(string.hexdigits.lower()):
        raise ValueError(f"checksum: expected hex digits 0-9a-f, got {text!r}")
    return Checksum(algorithm, digest)


def _parse_size(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"size_bytes: expected an integer or empty, got {text!r}") from None
    if size < 0:
        raise ValueError(f"size_bytes: expected >= 0, got {size}")
    return size


def _parse_row(row: dict[str, str]) -> Source:
    name = row["name"].strip()
    if not name:
        raise ValueError("name: expected a non-empty name, got ''")
    access = row["access"].strip()
    if access not in ACCESS_CHOICES:
        raise ValueError(f"unknown access {access!r}; expected one of: "
                         f"{', '.join(map(repr, ACCESS_CHOICES))}")
    urls = tuple(row["urls"].split())
    if access == "http":
        if not urls:
            raise ValueError(f"source {name!r} has access 'http': expected at least one URL, "
                             "got none")
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"urls: expected http:// or https:// URLs, got {bad[0]!r}")
    return Source(name=name, modality=row["modality"].strip(), urls=urls,
                  checksum=parse_checksum(row["checksum"]),
                  size_bytes=_parse_size(row["size_bytes"]), licence=row["licence"].strip(),
                  access=access, notes=row["notes"].strip())


def _records(path: Path):
    """Yield ``(line_number, cells)`` for each non-empty CSV record; the line is where it starts."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise ValueError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from err
            if any(c.strip() for c in cells):
                yield start, cells


def _check_header(path: Path, line: int, header: list[str]) -> list[str]:
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    if missing or unknown:
        raise ValueError(f"{path}, line {line}: expected columns {', '.join(COLUMNS)}; "
                         f"missing {missing}, unknown {unknown}")
    return header


def load_manifest(path=None) -> dict[str, Source]:
    """Read and validate a data manifest.

    Args:
        path: The CSV file; default: :func:`default_manifest`.

    Returns:
        The sources by name, in file order.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ValueError: A malformed row; the message names the file and line.
    """
    path = Path(default_manifest() if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"data manifest not found: {path}")
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise ValueError(f"{path}, line 1: expected a header row ({', '.join(COLUMNS)}), "
                         "got an empty file")
    header = _check_header(path, *first)
    sources: dict[str, Source] = {}
    lines: dict[str, int] = {}
    for line, cells in records:
        if len(cells) != len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} fields, "
                             f"got {len(cells)}")
        try:
            source = _parse_row(dict(zip(header, cells)))
        except ValueError as err:
            raise ValueError(f"{path}, line {line}: {err}") from err
        if source.name in sources:
            raise ValueError(f"{path}, line {line}: duplicate name {source.name!r} "
                             f"(first on line {lines[source.name]})")
        sources[source.name], lines[source.name] = source, line
    return sources


def get_source(name: str, path=None) -> Source:
    """The manifest row called ``name``.

    Args:
        name: Source name, e.g. ``"ixi-t1"``.
        path: Manifest file; default as in :func:`load_manifest`.

    Raises:
        ValueError: ``name`` is not in the manifest (the message lists the known names).
    """
    sources = load_manifest(path)
    if name not in sources:
        raise ValueError(f"unknown source {name!r}; expected one of: "
                         f"{', '.join(map(repr, sources))}")
    return sources[name]
