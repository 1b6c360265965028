"""Safe extraction of downloaded archives (.tar, .tar.gz, .tgz, .zip).

Every member is checked before anything is written: absolute paths, ``..``
components, paths that resolve outside the destination (e.g. through a
symlink already there), symbolic and hard links, device files and FIFOs are
refused, and the whole archive with them. Tar archives are then extracted
with the standard library's ``filter="data"`` where the running Python has
it (3.11.4+, 3.12+); the checks here make older Pythons behave the same.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def member_target(dest, name: str, archive) -> Path:
    """The path under ``dest`` where archive member ``name`` may be written.

    Args:
        dest: Destination directory (need not exist yet).
        name: Member name as stored in the archive.
        archive: The archive's path or URL, for error messages.

    Returns:
        ``dest / name``, checked to stay inside ``dest``.

    Raises:
        ValueError: ``name`` is absolute, has a ``..`` component or resolves
            outside ``dest``.
    """
    unified = name.replace("\\", "/")  # archives made on Windows may use backslashes
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ValueError(f"{archive}: refusing member {name!r}: absolute path")
    parts = PurePosixPath(unified).parts  # drops "." components
    if ".." in parts:
        raise ValueError(f"{archive}: refusing member {name!r}: '..' in path")
    target = Path(dest).joinpath(*parts)  # "." or "./" is dest itself
    root = Path(dest).resolve()
    if not target.resolve().is_relative_to(root):
        raise ValueError(f"{archive}: refusing member {name!r}: resolves to "
                         f"{target.resolve()}, outside {root}")
    return target


def check_tar_member(member: tarfile.TarInfo, dest, archive) -> Path:
    """Check one tar member; return its target path (regular files and directories only).

    Raises:
        ValueError: The member is a link, device, FIFO or other special file,
            or its path is unsafe (see :func:`member_target`).
    """
    if member.issym():
        reason = f"symbolic link to {member.linkname!r}"
    elif member.islnk():
        reason = f"hard link to {member.linkname!r}"
    elif member.ischr() or member.isblk():
        reason = "device file"
    elif member.isfifo():
        reason = "FIFO"
    elif not (member.isreg() or member.isdir()):
        reason = f"unsupported member type {member.type!r}"
    else:
        target = member_target(dest, member.name, archive)
        if member.isreg() and target == Path(dest):
            raise ValueError(f"{archive}: refusing member {member.name!r}: empty file name")
        return target
    raise ValueError(f"{archive}: refusing member {member.name!r}: {reason}; expected "
                     "regular files and directories only")


def _check_zip_member(info: zipfile.ZipInfo, dest, archive) -> Path:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        what = "symbolic link" if stat.S_ISLNK(mode) else f"special file (mode {oct(mode)})"
        raise ValueError(f"{archive}: refusing member {info.filename!r}: {what}; expected "
                         "regular files and directories only")
    return member_target(dest, info.filename, archive)


def copy_atomic(fileobj, target, chunk_size: int = 1 << 20) -> Path:
    """Stream ``fileobj`` to ``target`` via a temporary file and a rename.

    Readers see either no file or the complete file, never a partial one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for block in iter(lambda: fileobj.read(chunk_size), b""):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ValueError(f"{archive}: expected a .tar, .tar.gz, .tgz or .zip archive, "
                     f"got {archive.name!r}")


def _extract_tar(archive: Path, dest: Path) -> list[Path]:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        targets = [check_tar_member(m, dest, archive) for m in members]
        dest.mkdir(parents=True, exist_ok=True)
        if _HAS_DATA_FILTER:
            tar.extractall(dest, members=members, filter="data")
        else:  # members were checked above; links and special files never get here
            tar.extractall(dest, members=members)
    return [t for m, t in zip(members, targets) if m.isreg()]


def _extract_zip(archive: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        targets = [_check_zip_member(i, dest, archive) for i in infos]
        dest.mkdir(parents=True, exist_ok=True)
        zf.extractall(dest, members=infos)
    return [t for i, t in zip(infos, targets) if not i.is_dir()]


def safe_extract(archive, dest) -> list[Path]:
    """Extract a .tar, .tar.gz, .tgz or .zip archive into ``dest``, refusing unsafe members.

    All members are checked first, so an archive with one unsafe member
    writes nothing at all.

    Args:
        archive: The archive file.
        dest: Destination directory (created if missing).

    Returns:
        The extracted regular files, in archive order.

    Raises:
        FileNotFoundError: ``archive`` does not exist.
        ValueError: Unsupported or unreadable archive, or an unsafe member
            (the message names the archive and the member).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    kind = _kind(archive)
    try:
        return _extract_tar(archive, dest) if kind == "tar" else _extract_zip(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{archive}: not a readable {kind} archive ({err})") from err
