import io
import os
import stat
import tarfile
import zipfile

import pytest

from colab_utils.data.archive import member_target, safe_extract


def _tar_info(name, kind=tarfile.REGTYPE, linkname="", data=b""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _write_tar(path, entries, mode="w"):
    with tarfile.open(path, mode) as tar:
        for entry in entries:
            tar.addfile(*_tar_info(**entry))
    return path


def _bad_tar_cases(outside):
    """(case id, members after a harmless first file, refused member name, reason)."""
    return [
        ("dotdot", [dict(name="../outside.txt", data=b"x")], "../outside.txt", "'..' in path"),
        ("nested-dotdot", [dict(name="a/../../outside.txt", data=b"x")], "a/../../outside.txt",
         "'..' in path"),
        ("absolute", [dict(name=str(outside), data=b"x")], str(outside), "absolute path"),
        ("symlink-out", [dict(name="link", kind=tarfile.SYMTYPE, linkname=".."),
                         dict(name="link/outside.txt", data=b"x")], "link", "symbolic link"),
        ("symlink-abs", [dict(name="etc", kind=tarfile.SYMTYPE, linkname="/etc")], "etc",
         "symbolic link"),
        ("hardlink-out", [dict(name="hard", kind=tarfile.LNKTYPE, linkname="../outside.txt")],
         "hard", "hard link"),
        ("hardlink-abs", [dict(name="pw", kind=tarfile.LNKTYPE, linkname="/etc/passwd")], "pw",
         "hard link"),
        ("fifo", [dict(name="pipe", kind=tarfile.FIFOTYPE)], "pipe", "FIFO"),
        ("chardev", [dict(name="null", kind=tarfile.CHRTYPE)], "null", "device file"),
        ("blockdev", [dict(name="sda", kind=tarfile.BLKTYPE)], "sda", "device file"),
    ]


_CASE_IDS = [c[0] for c in _bad_tar_cases("/x")]


@pytest.mark.parametrize("case", _CASE_IDS)
@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_unsafe_tar_is_refused_and_writes_nothing(tmp_path, case, suffix, mode):
    work = tmp_path / "work"
    work.mkdir()
    outside = work / "outside.txt"
    _, members, bad_name, reason = next(c for c in _bad_tar_cases(outside) if c[0] == case)
    archive = _write_tar(work / f"evil{suffix}", [dict(name="good.txt", data=b"ok")] + members,
                         mode)
    dest = work / "dest"
    with pytest.raises(ValueError, match="refusing member") as info:
        safe_extract(archive, dest)
    assert f"{archive}: refusing member {bad_name!r}: {reason}" in str(info.value)
    assert sorted(p.name for p in work.iterdir()) == [archive.name]  # no dest, no outside.txt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def _write_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name,data,mode,reason", [
    ("../outside.txt", b"x", None, "'..' in path"),
    ("/abs/outside.txt", b"x", None, "absolute path"),
    ("C:/outside.txt", b"x", None, "absolute path"),
    ("..\\outside.txt", b"x", None, "'..' in path"),
    ("link", b"../outside.txt", stat.S_IFLNK | 0o777, "symbolic link"),
    ("pipe", b"", stat.S_IFIFO | 0o644, "special file"),
])
def test_unsafe_zip_is_refused_and_writes_nothing(tmp_path, name, data, mode, reason):
    archive = _write_zip(tmp_path / "evil.zip", [("good.txt", b"ok", None), (name, data, mode)])
    with pytest.raises(ValueError, match="refusing member") as info:
        safe_extract(archive, tmp_path / "dest")
    assert f"refusing member {name!r}: {reason}" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_symlink_already_in_dest_is_not_followed(tmp_path, kind):
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "sub")
    if kind == "tar":
        archive = _write_tar(tmp_path / "a.tar", [dict(name="sub/file.txt", data=b"x")])
    else:
        archive = _write_zip(tmp_path / "a.zip", [("sub/file.txt", b"x", None)])
    with pytest.raises(ValueError, match="refusing member 'sub/file.txt': resolves to .* outside"):
        safe_extract(archive, dest)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_valid_tar_extracts(tmp_path, suffix, mode):
    archive = _write_tar(tmp_path / f"ok{suffix}", [
        dict(name="./", kind=tarfile.DIRTYPE),
        dict(name="sub", kind=tarfile.DIRTYPE),
        dict(name="sub/IXI002-Guys-0828-T1.nii.gz", data=b"t1 bytes"),
        dict(name="./top.txt", data=b"top"),
    ], mode)
    out = safe_extract(archive, tmp_path / "dest")
    assert out == [tmp_path / "dest/sub/IXI002-Guys-0828-T1.nii.gz", tmp_path / "dest/top.txt"]
    assert [p.read_bytes() for p in out] == [b"t1 bytes", b"top"]


def test_valid_zip_extracts(tmp_path):
    archive = _write_zip(tmp_path / "ok.zip", [("a/", b"", stat.S_IFDIR | 0o755),
                                               ("a/b.txt", b"bee", None),
                                               ("c.txt", b"sea", stat.S_IFREG | 0o644)])
    out = safe_extract(archive, tmp_path / "dest")
    assert out == [tmp_path / "dest/a/b.txt", tmp_path / "dest/c.txt"]
    assert [p.read_bytes() for p in out] == [b"bee", b"sea"]


def test_missing_unknown_and_corrupt_archives(tmp_path):
    with pytest.raises(FileNotFoundError, match="archive not found"):
        safe_extract(tmp_path / "none.tar", tmp_path / "d")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="expected a .tar, .tar.gz, .tgz or .zip"):
        safe_extract(tmp_path / "notes.txt", tmp_path / "d")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="broken.tar.gz: not a readable tar archive"):
        safe_extract(tmp_path / "broken.tar.gz", tmp_path / "d")


def test_member_target_accepts_dot_components(tmp_path):
    assert member_target(tmp_path, "./a/./b.txt", "x.tar") == tmp_path / "a" / "b.txt"
    assert member_target(tmp_path, ".", "x.tar") == tmp_path
