"""Verified, resumable downloads: over HTTP(S), from Google Drive, and out of remote tars.

:func:`download` streams a URL to ``<dest>.part``, resuming a partial file
with an HTTP ``Range`` request, retrying transient failures with exponential
backoff, and renames the file to ``dest`` only once its checksum and size
verify. A file that fails verification is deleted, never left at ``dest``.

:func:`stream_tar_members` takes the first few matching members out of a
remote tar without downloading the rest (the IXI tars are several GB).

Only the standard library talks HTTP here; ``tqdm`` draws progress bars and
``gdown`` (imported only when needed) fetches from Google Drive.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from colab_utils.data.archive import check_tar_member, copy_atomic
from colab_utils.data.manifest import Checksum, Source, parse_checksum

logger = logging.getLogger(__name__)

_USER_AGENT = "colab_utils-downloader/0.1"
_TRANSIENT = (OSError, http.client.HTTPException)  # URLError, timeouts and resets are OSErrors
_RETRIED_4XX = (408, 429)  # request timeout, too many requests: worth another try
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_DRIVE_ID = re.compile(r"(?:/d/|/folders/|[?&]id=)([\w-]{10,})")


class DownloadError(OSError):
    """A download failed for a network or server reason (a bad checksum is a ``ValueError``)."""


class _Retryable(Exception):
    """A transient failure: the attempt may be repeated."""


# --- verification -----------------------------------------------------------------------

def file_checksum(path, algorithm: str = "sha256", chunk_size: int = 1 << 22) -> str:
    """Hex digest of a file with ``algorithm`` (``"md5"`` or ``"sha256"``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(path: Path, checksum: Checksum | None, size_bytes: int | None) -> str | None:
    """What is wrong with ``path`` (size first: it is cheap), or ``None`` if it verifies."""
    if size_bytes is not None:
        size = path.stat().st_size
        if size != size_bytes:
            return f"expected {size_bytes} bytes, got {size}"
    if checksum is not None:
        actual = file_checksum(path, checksum.algorithm)
        if actual != checksum.hexdigest:
            return f"expected checksum {checksum}, got {checksum.algorithm}:{actual}"
    return None


def verify_file(path, checksum=None, size_bytes: int | None = None) -> Path:
    """Check a file's size and checksum.

    Args:
        path: The file.
        checksum: ``"md5:<hex>"``, ``"sha256:<hex>"``, a :class:`Checksum` or ``None``.
        size_bytes: Expected size, or ``None``.

    Returns:
        ``path``, when it verifies.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Size or checksum differ (the message gives expected and actual).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file to verify not found: {path}")
    problem = _mismatch(path, parse_checksum(checksum), size_bytes)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return path


# --- HTTP plumbing -------------------------------------------------------------------------

def _progress(total, initial: int, desc: str, enabled: bool, unit: str = "B"):
    from tqdm.auto import tqdm

    scale = unit == "B"
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=scale,
                unit_divisor=1024 if scale else 1000, disable=not enabled, leave=True)


def _http_error(url: str, err: urllib.error.HTTPError) -> Exception:
    """A retryable error for 5xx, 408 and 429; a final ``DownloadError`` for other statuses."""
    if err.code >= 500 or err.code in _RETRIED_4XX:
        return _Retryable(f"HTTP {err.code} {err.reason}")
    return DownloadError(f"{url}: HTTP {err.code} {err.reason}; expected 200 "
                         "(a client error, not retried: check the URL or access rights)")


def _open(url: str, timeout: float, offset: int = 0):
    """``urlopen`` with errors sorted into final (``DownloadError``) and ``_Retryable``."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            raise  # the caller decides: the partial file may already be complete
        raise _http_error(url, err) from err
    except _TRANSIENT as err:
        raise _Retryable(f"cannot connect ({err})") from err


def _with_retries(url: str, attempt, retries: int, backoff: float):
    """Call ``attempt()``; after a ``_Retryable``, wait ``backoff * 2**k`` s and call again."""
    for k in range(retries):
        try:
            return attempt()
        except _Retryable as err:
            delay = backoff * 2 ** k
            logger.warning("%s: %s; retrying in %.1f s (%d/%d)", url, err, delay, k + 1, retries)
            time.sleep(delay)
    try:
        return attempt()
    except _Retryable as err:
        raise DownloadError(f"{url}: gave up after {retries + 1} attempt(s); "
                            f"last error: {err}") from err


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(first_byte, total)`` from ``Content-Range: bytes 100-199/1000`` (``None`` if absent)."""
    match = _CONTENT_RANGE.match(header or "")
    if not match:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None), (int(total) if total.isdigit() else None)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


# --- download -------------------------------------------------------------------------------

def _after_416(part: Path, err: urllib.error.HTTPError) -> None:
    """A ``Range`` past the end: keep a complete partial file, else restart from zero."""
    _, total = _content_range(err.headers.get("Content-Range"))
    size = part.stat().st_size
    if total is not None and size == total:
        return  # already complete; verification decides whether it is right
    part.unlink()
    raise _Retryable(f"HTTP 416 for a partial file of {size} bytes (remote size {total}); "
                     "restarting from zero") from err


def _resume_offset(url: str, part: Path, response, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the full size, from the response status."""
    length = _content_length(response)
    if response.status == 200:  # a full body, also when the server ignored our Range
        return 0, length
    if response.status == 206 and offset:
        first, total = _content_range(response.headers.get("Content-Range"))
        if first != offset:
            part.unlink()
            raise _Retryable(f"server resumed at byte {first}, expected {offset}; "
                             "restarting from zero")
        if total is None and length is not None:
            total = offset + length
        return offset, total
    raise DownloadError(f"{url}: unexpected HTTP {response.status}; expected 200 or 206")


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, chunk_size: int) -> None:
    """One attempt to complete ``part``: resume, or start over when the server says so."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, timeout, offset)
    except urllib.error.HTTPError as err:  # only 416 with a partial file gets here
        return _after_416(part, err)
    with response:
        offset, total = _resume_offset(url, part, response, offset)
        received = offset
        with open(part, "ab" if offset else "wb") as out, \
                _progress(total, offset, part.name[:-5], progress) as bar:
            while True:
                try:
                    block = response.read(chunk_size)
                except _TRANSIENT as err:
                    raise _Retryable(f"connection lost after {received} bytes ({err})") from err
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:  # http.client reports a short body as EOF
        raise _Retryable(f"incomplete read: got {received} of {total} bytes")
    return None


def _target(url: str, dest) -> Path:
    """``dest`` itself, or ``dest / <file name in the URL>`` when ``dest`` is a directory."""
    is_dir = Path(dest).is_dir() or str(dest).endswith(("/", os.sep))
    if not is_dir:
        return Path(dest)
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if name in ("", ".", ".."):
        raise ValueError(f"{url}: expected a file name at the end of the URL (dest {dest} is "
                         "a directory), got none; pass a file path as dest")
    return Path(dest) / name


def _download_url(url: str, dest, checksum: Checksum | None, size_bytes: int | None,
                  options: dict) -> Path:
    target = _target(url, dest)
    if target.is_file():
        problem = _mismatch(target, checksum, size_bytes)
        if problem is None:
            logger.info("%s: already present and verified", target)
            return target
        logger.warning("%s: %s; downloading it again", target, problem)
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    _with_retries(url, lambda: _fetch_once(url, part, options["timeout"], options["progress"],
                                           options["chunk_size"]),
                  options["retries"], options["backoff"])
    problem = _mismatch(part, checksum, size_bytes)
    if problem:
        part.unlink()
        raise ValueError(f"{target} (from {url}): {problem}; the download was deleted")
    os.replace(part, target)
    return target


def _source_urls(source: Source) -> tuple[str, ...]:
    if source.access in ("manual", "generated") or not source.urls:
        raise ValueError(f"source {source.name!r} (access {source.access!r}) cannot be "
                         f"downloaded by script: {source.notes}")
    return source.urls


def _check_options(retries: int, backoff: float, timeout: float, chunk_size: int) -> None:
    if retries < 0:
        raise ValueError(f"retries: expected >= 0, got {retries}")
    if backoff < 0:
        raise ValueError(f"backoff: expected >= 0, got {backoff}")
    if timeout <= 0:
        raise ValueError(f"timeout: expected > 0 seconds, got {timeout}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")


def download(url_or_source, dest, *, checksum=None, size_bytes: int | None = None,
             retries: int = 5, backoff: float = 1.0, timeout: float = 60,
             progress: bool = True, chunk_size: int = 1 << 20) -> Path:
    """Download a file, resuming and retrying, and verify it before it appears at ``dest``.

    Args:
        url_or_source: An ``http(s)://`` URL, or a manifest :class:`Source`
            (its URLs are tried in order; its checksum and size are used
            unless given here; ``gdrive`` sources go to :func:`download_gdrive`).
        dest: Target file, or an existing directory (or a path ending in
            ``/``) to keep the URL's file name.
        checksum: ``"md5:<hex>"``, ``"sha256:<hex>"``, a :class:`Checksum` or ``None``.
        size_bytes: Expected size, or ``None``.
        retries: Further attempts after a transient failure (connection
            error, timeout, short read, HTTP 5xx/408/429).
        backoff: The k-th retry waits ``backoff * 2**k`` seconds.
        timeout: Socket timeout in seconds.
        progress: Show a tqdm progress bar.
        chunk_size: Bytes per read.

    Returns:
        The verified file. A file already at the target that verifies is
        returned without any request (with no checksum or size known, any
        existing file counts as verified); one that does not verify is
        downloaded again.

    Raises:
        ValueError: Bad arguments, a source that cannot be downloaded by
            script, or a size/checksum mismatch (the file is deleted).
        DownloadError: HTTP 4xx, or transient failures beyond ``retries``.
    """
    _check_options(retries, backoff, timeout, chunk_size)
    if isinstance(url_or_source, Source):
        source = url_or_source
        urls = _source_urls(source)
        checksum = source.checksum if checksum is None else checksum
        size_bytes = source.size_bytes if size_bytes is None else size_bytes
        if source.access == "gdrive":
            return download_gdrive(urls[0], dest, checksum=checksum, progress=progress)
    else:
        urls = (str(url_or_source),)
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"url: expected an http:// or https:// URL, got {bad[0]!r}")
    checksum = parse_checksum(checksum)
    options = dict(retries=retries, backoff=backoff, timeout=timeout, progress=progress,
                   chunk_size=chunk_size)
    for mirror in urls[:-1]:
        try:
            return _download_url(mirror, dest, checksum, size_bytes, options)
        except (DownloadError, ValueError) as err:
            logger.warning("%s; trying the next mirror", err)
    return _download_url(urls[-1], dest, checksum, size_bytes, options)


# --- Google Drive ---------------------------------------------------------------------------

def _drive_id(file_id_or_url: str) -> str:
    text = str(file_id_or_url).strip()
    match = _DRIVE_ID.search(text)
    if match:
        return match.group(1)
    if re.fullmatch(r"[\w-]{10,}", text):
        return text
    raise ValueError(f"expected a Google Drive file/folder ID or share URL, got {text!r}")


def _gdown():
    try:
        import gdown
    except ImportError as err:
        raise ImportError("Google Drive downloads need gdown: pip install 'gdown>=5'") from err
    return gdown


def _gdrive_file(gdown, drive_id: str, dest, checksum, progress: bool) -> Path:
    is_dir = Path(dest).is_dir() or str(dest).endswith(("/", os.sep))
    if is_dir:  # the file name is only known once Drive answers
        Path(dest).mkdir(parents=True, exist_ok=True)
        out = gdown.download(id=drive_id, output=str(dest).rstrip("/" + os.sep) + os.sep,
                             quiet=not progress)
    else:
        target = Path(dest)
        if target.is_file() and _mismatch(target, checksum, None) is None:
            return target  # with no checksum known, an existing file counts as verified
        target.parent.mkdir(parents=True, exist_ok=True)
        out = gdown.download(id=drive_id, output=str(target) + ".part", quiet=not progress)
    if not out:
        raise DownloadError(f"Google Drive file {drive_id}: gdown returned no file "
                            "(is it shared as 'anyone with the link'?)")
    got = Path(out)
    problem = _mismatch(got, checksum, None)
    if problem:
        got.unlink()
        raise ValueError(f"Google Drive file {drive_id} -> {got}: {problem}; "
                         "the download was deleted")
    if is_dir:
        return got
    os.replace(got, dest)
    return Path(dest)


def download_gdrive(file_id_or_url: str, dest, *, checksum=None, folder: bool = False,
                    progress: bool = True) -> Path:
    """Download a Google Drive file (or folder) with gdown and verify it.

    Args:
        file_id_or_url: A Drive file/folder ID or share URL.
        dest: Target file, or a directory to keep Drive's file name; for
            ``folder=True`` the directory to fill.
        checksum: Expected ``"md5:<hex>"``/``"sha256:<hex>"`` of the file, or
            ``None``; must be ``None`` for folders.
        folder: Download a whole shared folder.
        progress: Let gdown show its progress bar.

    Returns:
        The verified file (an existing one that verifies is not downloaded
        again), or the folder (a folder downloaded whole before is not downloaded
        again: its ``.downloaded`` marker says so).

    Raises:
        ValueError: Bad ID/URL, a checksum with ``folder=True``, or a
            checksum mismatch (the file is deleted).
        DownloadError: gdown returned nothing.
    """
    drive_id = _drive_id(file_id_or_url)
    checksum = parse_checksum(checksum)
    if folder and checksum is not None:
        raise ValueError(f"checksum: expected None for a folder download, got {checksum}")
    gdown = _gdown()
    if not folder:
        return _gdrive_file(gdown, drive_id, dest, checksum, progress)
    done = Path(dest) / ".downloaded"
    if done.is_file():  # the whole folder came down before: not again
        logger.info("%s: Google Drive folder %s already downloaded", dest, drive_id)
        return Path(dest)
    files = gdown.download_folder(id=drive_id, output=str(dest), quiet=not progress)
    if files is None:
        raise DownloadError(f"Google Drive folder {drive_id}: gdown returned no files")
    done.write_text(f"{drive_id}\n{len(files)} files\n")
    return Path(dest)


# --- members of a remote tar ---------------------------------------------------------------

def _stream_once(url: str, dest_dir: Path, select, limit, found: dict, timeout: float,
                 bar, stop=None) -> None:
    """One pass over the remote tar, adding matches to ``found`` (name -> path), until
    ``limit`` matches or until ``stop(name)`` says the rest cannot match."""
    with _open(url, timeout) as response:
        try:
            tar = tarfile.open(fileobj=response, mode="r|*")
        except (tarfile.TarError, EOFError) as err:
            raise ValueError(f"{url}: expected a tar archive, got unreadable data "
                             f"({err})") from err
        try:
            with tar:
                for member in tar:
                    if stop is not None and stop(member.name):
                        return  # past what is wanted: the rest is never read
                    if not select(member.name) or member.name in found:
                        continue
                    target = check_tar_member(member, dest_dir, url)
                    if member.isdir():
                        continue
                    # written atomically, so a file of the right size is a complete earlier copy
                    if not (target.is_file() and target.stat().st_size == member.size):
                        copy_atomic(tar.extractfile(member), target)
                    found[member.name] = target
                    bar.update(1)
                    if limit is not None and len(found) >= limit:
                        return  # the rest of the archive is never read
        except (tarfile.ReadError, EOFError, *_TRANSIENT) as err:
            raise _Retryable(f"stream broken after {len(found)} member(s) ({err})") from err


def stream_tar_members(url: str, dest_dir, *, select, limit: int | None = None,
                       stop=None, retries: int = 5, backoff: float = 1.0, timeout: float = 60,
                       progress: bool = True) -> list[Path]:
    """Extract selected members of a remote tar while streaming it, stopping early.

    Reads the HTTP response as a stream (``tarfile`` mode ``"r|*"``, so
    ``.tar.gz`` works too) and stops after ``limit`` matches: the first N
    subjects of a multi-GB IXI tar cost only the bytes up to them. Each member
    passes the checks of :func:`~colab_utils.data.archive.safe_extract` and
    is written atomically. A broken stream is reopened (up to ``retries``
    times); members already on disk with the right size are not written again.

    Args:
        url: ``http(s)://`` URL of a tar (optionally compressed).
        dest_dir: Directory for the extracted files (member paths kept).
        select: ``select(member_name) -> bool``; which members to extract.
        limit: Stop after this many matching files; ``None`` for all.
        stop: ``stop(member_name) -> bool``; stop reading when it says True (e.g. the
            members are past every wanted name), so that a wanted member the
            archive lacks does not cost the whole archive.
        retries, backoff, timeout: As in :func:`download`.
        progress: Show a tqdm bar counting extracted files.

    Returns:
        The paths of the matching files, in archive order.

    Raises:
        ValueError: Not a tar, bad arguments, or an unsafe matching member
            (files extracted before it stay).
        DownloadError: HTTP 4xx, or transient failures beyond ``retries``.
    """
    _check_options(retries, backoff, timeout, 1)
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected None or >= 1, got {limit}")
    if not str(url).startswith(("http://", "https://")):
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    dest_dir = Path(dest_dir)
    found: dict[str, Path] = {}
    with _progress(limit, 0, PurePosixPath(urlsplit(url).path).name, progress,
                   unit="file") as bar:
        _with_retries(url, lambda: _stream_once(url, dest_dir, select, limit, found, timeout,
                                                bar, stop),
                      retries, backoff)
    return list(found.values())
