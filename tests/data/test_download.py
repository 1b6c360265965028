"""Downloads against a real HTTP server on 127.0.0.1 that the tests start and script."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
from http_server import FakeServer

from colab_utils.data import download as dl
from colab_utils.data.download import (
    DownloadError,
    download,
    download_gdrive,
    stream_tar_members,
    verify_file,
)
from colab_utils.data.manifest import Source, parse_checksum

FAST = dict(backoff=0, timeout=5, progress=False, chunk_size=4096)


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture
def payload():
    return np.random.default_rng(7).bytes(200_000)


def test_interrupted_download_resumes_with_range(server, payload, tmp_path):
    url = server.add("/data/IXI-T1.tar", payload, drop_after=70_000)
    out = download(url, tmp_path, checksum=_md5(payload), **FAST)
    assert out == tmp_path / "IXI-T1.tar"
    assert out.read_bytes() == payload
    assert [r for _, r in server.requests] == [None, "bytes=70000-"]
    assert not (tmp_path / "IXI-T1.tar.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    url = server.add("/f.bin", payload, drop_after=70_000, ignore_range=True)
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **FAST)
    assert out.read_bytes() == payload  # not the first 70 000 bytes twice
    assert [r for _, r in server.requests] == [None, "bytes=70000-"]


def test_range_answered_from_the_wrong_byte_restarts(server, payload, tmp_path):
    url = server.add("/f.bin", payload, drop_after=70_000, bad_range=True)
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **FAST)
    assert out.read_bytes() == payload
    assert [r for _, r in server.requests] == [None, "bytes=70000-", None]


def test_complete_part_file_answered_416_is_verified_and_kept(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    (tmp_path / "f.bin.part").write_bytes(payload)
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **FAST)
    assert out.read_bytes() == payload
    assert server.requests == [("/f.bin", f"bytes={len(payload)}-")]


def test_overlong_part_file_is_discarded(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    (tmp_path / "f.bin.part").write_bytes(payload + b"junk")
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **FAST)
    assert out.read_bytes() == payload
    assert [r for _, r in server.requests] == [f"bytes={len(payload) + 4}-", None]


def test_wrong_checksum_is_rejected_and_nothing_is_left(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    expected = "md5:" + "0" * 32
    with pytest.raises(ValueError, match="expected checksum") as info:
        download(url, tmp_path / "f.bin", checksum=expected, **FAST)
    message = str(info.value)
    assert expected in message and hashlib.md5(payload).hexdigest() in message
    assert "f.bin" in message
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_rejected(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    with pytest.raises(ValueError, match=f"expected {len(payload) + 1} bytes, got {len(payload)}"):
        download(url, tmp_path / "f.bin", size_bytes=len(payload) + 1, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_server_error_then_success_is_retried(server, payload, tmp_path):
    url = server.add("/f.bin", payload, fail_first=2)
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **{**FAST, "progress": True})
    assert out.read_bytes() == payload
    assert len(server.requests) == 3


def test_persistent_server_error_gives_up_after_retries(server, payload, tmp_path):
    url = server.add("/f.bin", payload, fail_first=100)
    with pytest.raises(DownloadError, match="gave up after 3 attempt"):
        download(url, tmp_path / "f.bin", retries=2, **FAST)
    assert len(server.requests) == 3
    assert not (tmp_path / "f.bin").exists()


def test_backoff_doubles(monkeypatch, server, payload, tmp_path):
    sleeps = []
    monkeypatch.setattr(dl.time, "sleep", sleeps.append)
    url = server.add("/f.bin", payload, fail_first=3)
    download(url, tmp_path / "f.bin", **{**FAST, "backoff": 0.5})
    assert sleeps == [0.5, 1.0, 2.0]


def test_timeout_is_retried(server, payload, tmp_path):
    url = server.add("/f.bin", payload, stall_first=1, stall_seconds=1.0)
    out = download(url, tmp_path / "f.bin", checksum=_md5(payload), **{**FAST, "timeout": 0.2})
    assert out.read_bytes() == payload
    assert len(server.requests) == 2


def test_404_fails_fast_with_url_and_status(server, payload, tmp_path):
    url = server.add("/f.bin", payload, status=404)
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(url, tmp_path / "f.bin", **FAST)
    assert url in str(info.value)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_verified_file_is_not_downloaded_again(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    (tmp_path / "f.bin").write_bytes(payload)
    assert download(url, tmp_path, checksum=_md5(payload), **FAST) == tmp_path / "f.bin"
    assert server.requests == []


def test_corrupt_existing_file_is_downloaded_again(server, payload, tmp_path):
    url = server.add("/f.bin", payload)
    (tmp_path / "f.bin").write_bytes(b"stale")
    out = download(url, tmp_path, checksum=_md5(payload), **FAST)
    assert out.read_bytes() == payload
    assert len(server.requests) == 1


def test_source_supplies_url_and_checksum(server, payload, tmp_path):
    url = server.add("/x.tar", payload)
    good = Source("x", "T1", (url,), parse_checksum(_md5(payload)), len(payload), "CC0", "http", "")
    assert download(good, tmp_path, **FAST).read_bytes() == payload
    bad = Source("y", "T1", (url,), parse_checksum("sha256:" + "a" * 64), None, "CC0", "http", "")
    with pytest.raises(ValueError, match="sha256:a{64}"):
        download(bad, tmp_path / "y.tar", **FAST)


def test_source_mirrors_are_tried_in_order(server, payload, tmp_path):
    url = server.add("/x.tar", payload)
    dead = url.replace("/x.tar", "/missing.tar")
    src = Source("x", "T1", (dead, url), parse_checksum(_md5(payload)), None, "CC0", "http", "")
    assert download(src, tmp_path / "x.tar", **FAST).read_bytes() == payload
    assert [p for p, _ in server.requests] == ["/missing.tar", "/x.tar"]


def test_manual_source_explains_itself(tmp_path):
    src = Source("brats", "T1+T2", (), None, None, "terms", "manual", "register at Synapse")
    with pytest.raises(ValueError, match="cannot be downloaded by script: register at Synapse"):
        download(src, tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    (dict(checksum="crc32:1234"), "expected 'md5:<hex>'"),
    (dict(retries=-1), "retries: expected >= 0"),
    (dict(timeout=0), "timeout: expected > 0"),
])
def test_bad_arguments(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        download("http://127.0.0.1:9/f.bin", tmp_path, **kwargs)


def test_non_http_url_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected an http:// or https:// URL, got 'file:///etc'"):
        download("file:///etc", tmp_path)


def test_verify_file(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"abc")
    assert verify_file(f, "sha256:" + hashlib.sha256(b"abc").hexdigest(), 3) == f
    with pytest.raises(ValueError, match="expected checksum md5:"):
        verify_file(f, "md5:" + "1" * 32)
    with pytest.raises(FileNotFoundError, match="missing"):
        verify_file(tmp_path / "missing")


# --- Google Drive: gdown is replaced; no test talks to Google ----------------------------

@pytest.fixture
def fake_gdown(monkeypatch):
    gdown = pytest.importorskip("gdown")
    calls = []

    def fake_download(*, id, output, quiet, **_):
        calls.append(id)
        path = output + "drive_file.bin" if output.endswith("/") else output
        with open(path, "wb") as f:
            f.write(b"drive bytes")
        return path

    monkeypatch.setattr(gdown, "download", fake_download)
    return calls


def test_gdrive_download_is_verified(fake_gdown, tmp_path):
    url = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOp/view?usp=sharing"
    out = download_gdrive(url, tmp_path / "d.bin", checksum=_md5(b"drive bytes"), progress=False)
    assert out.read_bytes() == b"drive bytes" and fake_gdown == ["1AbCdEfGhIjKlMnOp"]
    again = download_gdrive("1AbCdEfGhIjKlMnOp", out, checksum=_md5(b"drive bytes"))
    assert again == out and len(fake_gdown) == 1  # verified file: no second call
    assert download_gdrive("1AbCdEfGhIjKlMnOp", tmp_path, progress=False).name == "drive_file.bin"


def test_gdrive_bad_checksum_leaves_nothing(fake_gdown, tmp_path):
    with pytest.raises(ValueError, match="expected checksum md5:0{32}"):
        download_gdrive("1AbCdEfGhIjKlMnOp", tmp_path / "d.bin", checksum="md5:" + "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_gdrive_rejects_bad_id_and_folder_checksum(tmp_path):
    with pytest.raises(ValueError, match="expected a Google Drive file/folder ID"):
        download_gdrive("not an id", tmp_path)
    with pytest.raises(ValueError, match="expected None for a folder download"):
        download_gdrive("1AbCdEfGhIjKlMnOp", tmp_path, checksum=_md5(b""), folder=True)


# --- members of a streamed tar ----------------------------------------------------------

def _tar_bytes(members, compression=""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ixi_members(n=5):
    r = np.random.default_rng(3)
    members = [("README.txt", b"IXI")]
    members += [(f"IXI{i:03d}-HH-{1000 + i}-T1.nii.gz", r.bytes(20_000)) for i in range(n)]
    return members


@pytest.mark.parametrize("compression,suffix", [("", ".tar"), ("gz", ".tar.gz")])
def test_stream_tar_takes_first_matching_members(server, tmp_path, compression, suffix):
    members = _ixi_members()
    url = server.add(f"/IXI-T1{suffix}", _tar_bytes(members, compression))
    out = stream_tar_members(url, tmp_path / "ixi", select=lambda n: n.endswith("-T1.nii.gz"),
                             limit=2, **{k: FAST[k] for k in ("backoff", "timeout", "progress")})
    assert out == [tmp_path / "ixi" / members[1][0], tmp_path / "ixi" / members[2][0]]
    assert [p.read_bytes() for p in out] == [members[1][1], members[2][1]]
    assert sorted(p.name for p in (tmp_path / "ixi").iterdir()) == [p.name for p in out]


def test_stream_tar_resumes_after_a_broken_stream(server, tmp_path):
    members = _ixi_members(3)
    data = _tar_bytes(members)
    url = server.add("/IXI-T1.tar", data, drop_after=len(data) // 2)
    out = stream_tar_members(url, tmp_path, select=lambda n: n.endswith(".nii.gz"),
                             backoff=0, progress=False)
    assert [p.read_bytes() for p in out] == [d for _, d in members[1:]]
    assert len(server.requests) == 2
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_stream_tar_refuses_unsafe_member(server, tmp_path):
    dest = tmp_path / "dest"
    url = server.add("/evil.tar", _tar_bytes([("ok.nii.gz", b"1"), ("../escape.nii.gz", b"2")]))
    with pytest.raises(ValueError, match=r"refusing member '\.\./escape\.nii\.gz'"):
        stream_tar_members(url, dest, select=lambda n: True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert [p.name for p in dest.iterdir()] == ["ok.nii.gz"]


def test_stream_tar_rejects_non_tar(server, tmp_path):
    url = server.add("/page.html", b"<html>" * 200)
    with pytest.raises(ValueError, match="expected a tar archive"):
        stream_tar_members(url, tmp_path, select=lambda n: True, progress=False)
    assert len(server.requests) == 1
