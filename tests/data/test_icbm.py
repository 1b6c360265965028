"""The real-contrast phantom's anatomy, the MNI ICBM 2009c pair: real T2 contrast (not a
function of the T1), fetched and checked from a source on a local HTTP server, and the
pipeline's fallback when it cannot be had.

These tests need the pair in ``data/icbm152`` (or ``$ICBM152_DIR``); the README's test
command fetches it first (``python -m colab_utils download icbm152 --dest data/icbm152``).
Without it they fail, saying so: a check that is skipped is no check.
"""

import io
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from http_server import FakeServer

from colab_utils.data import icbm
from colab_utils.data.phantom import anatomy, make_subject

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair():
    folder = Path(os.environ.get("ICBM152_DIR", ROOT / "data" / "icbm152"))
    if not icbm.is_ready(folder):
        pytest.fail(f"{folder}: the ICBM 2009c pair is not there; fetch it with `python -m "
                    f"colab_utils download icbm152 --dest {folder}` (or set ICBM152_DIR)")
    return folder


def _skew(values):
    values = values.astype(np.float64)
    return float(((values - values.mean()) ** 3).mean() / values.std() ** 3)


def _explained(t1, t2, bins=64):
    """Share of the T2's variance that any function of the T1 explains (correlation
    ratio over T1 quantile bins)."""
    edges = np.quantile(t1, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.digitize(t1, edges)
    means = np.bincount(which, t2, bins) / np.maximum(np.bincount(which, minlength=bins), 1)
    return float(1 - ((t2 - means[which]) ** 2).mean() / t2.var())


def test_the_pair_is_real_t2_contrast_where_the_tissue_map_phantom_is_not(pair):
    head = anatomy("icbm", pair)
    assert head.t1.shape == icbm.SHAPE and 1.0e6 < head.brain.sum() < 1.9e6  # mm³: adult
    t1, t2 = head.t1[head.brain], head.t2[head.brain]
    assert _skew(t1) < -0.3 and _skew(t2) > 0.3  # WM-bright T1, CSF-bright T2
    real = _explained(t1, t2)
    tissue_map = anatomy("head")
    made = _explained(tissue_map.t1[tissue_map.brain], tissue_map.t2[tissue_map.brain])
    assert real < 0.85 < 0.95 < made, (real, made)


def test_a_subject_is_the_icbm_head_deformed_posed_and_stored_with_its_brain(pair):
    subject = make_subject(0, seed=3, kind="icbm", icbm_dir=pair, with_brain=True)
    again = make_subject(0, seed=3, kind="icbm", icbm_dir=pair)
    np.testing.assert_array_equal(subject.t1, again.t1)  # the same subject every call
    brain = subject.truth["brain"]
    assert brain.shape == subject.t1.shape and brain.sum() > 0.5e6
    assert _skew(subject.t1[brain]) < -0.2  # still a T1 inside its brain
    lesioned = make_subject(0, seed=3, kind="icbm", icbm_dir=pair, lesions=3)
    assert np.abs(lesioned.t2 - again.t2).max() > 0.1  # spots that differ on the T2


def _zip(pair, swap=False) -> bytes:
    """The pair as the MNI's zip lays it out (uncompressed .nii members)."""
    names = dict(icbm.FILES)
    if swap:
        names["t1"], names["t2"] = names["t2"], names["t1"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for key, name in names.items():
            image = nib.load(pair / f"{key}.nii.gz")
            zf.writestr(f"mni_icbm152_nlin_sym_09c/{name}", image.to_bytes())
    return buffer.getvalue()


def _manifest(tmp_path, wheel_url, zip_url) -> Path:
    rows = (ROOT / "data_manifest.csv").read_text().splitlines()
    wheel = next(r for r in rows if r.startswith("icbm152-2009c-wheel,"))
    mni = next(r for r in rows if r.startswith("icbm152-2009c-zip,"))
    wheel = wheel.replace(wheel.split(",")[2], wheel_url)
    mni = mni.replace(mni.split(",")[2], zip_url)
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([rows[0], wheel, mni]) + "\n")
    return path


def test_fetch_takes_the_next_source_checks_contents_and_keeps_the_notice(pair, tmp_path,
                                                                         messages):
    server = FakeServer()
    try:
        good = server.add("/mni.zip", _zip(pair))
        gone = f"http://127.0.0.1:{server.httpd.server_port}/missing.whl"
        folder = icbm.fetch_icbm(tmp_path / "icbm", manifest=_manifest(tmp_path, gone, good),
                                 progress=False, retries=0)
    finally:
        server.close()
    assert icbm.is_ready(folder) and "McGill" in (folder / "COPYING").read_text()
    assert any("icbm152-2009c-wheel did not give it" in m for m in messages)
    for key in ("t1", "t2"):
        np.testing.assert_allclose(nib.load(folder / f"{key}.nii.gz").get_fdata(),
                                   nib.load(pair / f"{key}.nii.gz").get_fdata(), rtol=1e-6)


def test_a_swapped_pair_is_refused_and_nothing_half_written_is_left(pair, tmp_path):
    server = FakeServer()
    try:
        swapped = server.add("/mni.zip", _zip(pair, swap=True))
        gone = f"http://127.0.0.1:{server.httpd.server_port}/missing.whl"
        with pytest.raises(icbm.Unavailable, match="not a T1, a T2 and a brain mask of one "
                                                   "head"):
            icbm.fetch_icbm(tmp_path / "icbm", manifest=_manifest(tmp_path, gone, swapped),
                            progress=False, retries=0)
    finally:
        server.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_the_pipeline_falls_back_to_the_tissue_map_phantom_and_says_why(tmp_path, monkeypatch,
                                                                        messages):
    from colab_utils.pipeline import available_phantom
    from colab_utils.presets import preset

    def unavailable(folder, **_):
        raise icbm.Unavailable("the MNI ICBM 2009c T1/T2 pair could not be had: offline")

    monkeypatch.setattr(icbm, "fetch_icbm", unavailable)
    data = available_phantom(preset("demo").data, tmp_path)
    assert data.phantom_kind == "head" and data.phantom_lesions == 0
    assert any("offline" in m and "cannot show whether a method learns real T2" in m
               for m in messages)
