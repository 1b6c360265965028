import functools
import hashlib
import io
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import nibabel as nib
import numpy as np
import pytest

from colab_utils.data.ixi import fetch_ixi


def _nifti_bytes(seed):
    image = nib.Nifti1Image(np.random.default_rng(seed).uniform(size=(4, 4, 4)).astype("float32"),
                            np.eye(4))
    return image.to_bytes()


def _tar(path, names):
    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(names):
            data = _nifti_bytes(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def ixi_server(tmp_path):
    """A local IXI mirror: 4 T1 subjects, T2 for 3 of them, and a manifest pointing at it."""
    site = tmp_path / "site"
    site.mkdir()
    ids = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212", "IXI014-HH-1236"]
    _tar(site / "IXI-T1.tar", [f"{i}-T1.nii.gz" for i in ids])
    _tar(site / "IXI-T2.tar", [f"{i}-T2.nii.gz" for i in (ids[3], ids[0], ids[1])])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    md5 = {n: hashlib.md5((site / n).read_bytes()).hexdigest()
           for n in ("IXI-T1.tar", "IXI-T2.tar")}
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "name,modality,urls,checksum,size_bytes,licence,access,notes\n"
        f"ixi-t1,T1,{url}/IXI-T1.tar,md5:{md5['IXI-T1.tar']},,CC BY-SA 3.0,http,\n"
        f"ixi-t2,T2,{url}/IXI-T2.tar,md5:{md5['IXI-T2.tar']},,CC BY-SA 3.0,http,\n")
    yield manifest, ids, site
    server.shutdown()


def test_first_n_subjects_are_streamed_and_paired(ixi_server, tmp_path):
    manifest, ids, _ = ixi_server
    pairs = fetch_ixi(tmp_path / "ixi", subjects=2, manifest=manifest, progress=False, backoff=0)
    assert sorted(pairs) == ids[:2]
    assert sorted(p.name for p in (tmp_path / "ixi" / "t1").iterdir()) == [
        f"{i}-T1.nii.gz" for i in ids[:2]]
    assert not (tmp_path / "ixi" / "downloads").exists()  # nothing but the members


def test_full_download_is_verified_and_extracted(ixi_server, tmp_path):
    manifest, ids, _ = ixi_server
    pairs = fetch_ixi(tmp_path / "ixi", manifest=manifest, progress=False, backoff=0)
    assert sorted(pairs) == [ids[0], ids[1], ids[3]]  # IXI013 has no T2
    assert not list((tmp_path / "ixi" / "downloads").glob("*.tar"))


def test_corrupt_mirror_is_rejected(ixi_server, tmp_path):
    manifest, _, site = ixi_server
    tar = site / "IXI-T1.tar"
    tar.write_bytes(tar.read_bytes()[:-1024] + b"\x01" * 1024)  # same size, other bytes
    with pytest.raises(ValueError, match="IXI-T1.tar.*expected"):
        fetch_ixi(tmp_path / "ixi", manifest=manifest, progress=False, backoff=0)
    assert not (tmp_path / "ixi" / "t1").exists()


def test_a_missing_t2_does_not_make_the_stream_read_the_whole_tar(tmp_path, monkeypatch, messages):
    from colab_utils.data import ixi

    site = tmp_path / "site"
    site.mkdir()
    ids = [f"IXI{n:03d}-HH-{1000 + n}" for n in range(1, 81)]
    _tar(site / "IXI-T1.tar", [f"{i}-T1.nii.gz" for i in ids[:5]])
    # IXI002 has no T2; after the wanted subjects come 77 others (a multi-GB tar in life).
    _tar(site / "IXI-T2.tar", [f"{i}-T2.nii.gz" for i in ids if not i.startswith("IXI002")])
    seen = []

    class Recording(ixi._PastWanted):
        def __call__(self, name):
            seen.append(name)
            return super().__call__(name)

    monkeypatch.setattr(ixi, "_PastWanted", Recording)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("name,modality,urls,checksum,size_bytes,licence,access,notes\n"
                        f"ixi-t1,T1,{url}/IXI-T1.tar,,,CC BY-SA 3.0,http,\n"
                        f"ixi-t2,T2,{url}/IXI-T2.tar,,,CC BY-SA 3.0,http,\n")
    try:
        pairs = fetch_ixi(tmp_path / "ixi", subjects=3, manifest=manifest, progress=False,
                          backoff=0)
    finally:
        server.shutdown()
    assert sorted(pairs) == [ids[0], ids[2]]
    assert "1 with T1 only: IXI002-HH-1002" in messages[0]  # reported, not silently lost
    # The stream stopped a patience's worth of members past IXI003, far from the end.
    assert len(seen) == 2 + ixi.PAST_PATIENCE and seen[-1].startswith("IXI023")


def test_the_ixi_40_protocol_takes_the_first_40_pairs_in_id_order(tmp_path):
    from colab_utils.data.ixi import write_protocol_split
    from colab_utils.data.splits import read_split_file

    pairs = {f"IXI{n:03d}-HH-{1000 + n}": ("t1", "t2") for n in range(60, 10, -1)}
    chosen, path = write_protocol_split(pairs, tmp_path)
    assert sorted(chosen) == sorted(pairs)[:40]
    split = read_split_file(path)
    ordered = sorted(chosen)
    assert [split[s] for s in ordered] == ["train"] * 25 + ["val"] * 5 + ["test"] * 10
    with pytest.raises(ValueError, match="expected 40 IXI subjects with a T1 and a T2, "
                                         "found 39"):
        write_protocol_split(dict(list(pairs.items())[:39]), tmp_path)
