import pytest

from colab_utils.data.manifest import (
    ACCESS_CHOICES,
    Checksum,
    get_source,
    load_manifest,
    parse_checksum,
)

HEADER = "name,modality,urls,checksum,size_bytes,licence,access,notes\n"
GOOD = "a,T1,http://example.org/a.tar,md5:" + "0" * 32 + ",10,CC0,http,ok\n"


def test_repository_manifest_has_ixi_with_checksums():
    sources = load_manifest()
    expected = {"ixi-t1": "34901a0593b41dd19c1a1f746eac2d58",
                "ixi-t2": "e3140d78730ecdd32ba92da48c0a9aaa",
                "ixi-demographics": "066002afe250e4375d132266fcfceac5"}
    for name, md5 in expected.items():
        assert sources[name].checksum == Checksum("md5", md5)
        assert sources[name].access == "http" and sources[name].licence == "CC BY-SA 3.0"
        assert sources[name].url.startswith(
            "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/")
    assert sources["ixi-t1"].url.endswith("/IXI-T1.tar")
    assert {"brats", "oasis3", "phantom"} <= set(sources)
    assert sources["brats"].access == "manual" and sources["brats"].urls == ()
    assert sources["phantom"].access == "generated" and "phantom" in sources["phantom"].notes
    assert all(s.access in ACCESS_CHOICES for s in sources.values())


def test_get_source_and_unknown_name():
    assert get_source("ixi-t2").url.endswith("/IXI-T2.tar")
    with pytest.raises(ValueError, match="unknown source 'ixi-t3'; expected one of: 'ixi-t1'"):
        get_source("ixi-t3")


def test_quoted_fields_mirrors_and_blank_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "\n" + 'a,T1,http://x.org/a http://y.org/a,,,"CC BY, 3.0",http,'
                    '"two\nlines"\nb,T2,,,,terms,manual,\n')
    sources = load_manifest(path)
    assert sources["a"].urls == ("http://x.org/a", "http://y.org/a")
    assert sources["a"].licence == "CC BY, 3.0" and sources["a"].notes == "two\nlines"
    assert sources["a"].checksum is None and sources["a"].size_bytes is None
    assert sources["b"].access == "manual"


@pytest.mark.parametrize("text,line,message", [
    ("name,modality,urls,checksum,size_bytes,access,notes\n" + GOOD, 1, "missing.*licence"),
    (HEADER + GOOD + "b,T1,,,,x,ftp,\n", 3, "unknown access 'ftp'; expected one of"),
    (HEADER + "\n" + GOOD.replace("md5:", "crc32:"), 3, "expected 'md5:<hex>'"),
    (HEADER + GOOD.replace("0" * 32, "0" * 31), 2, "expected 32 hex digits for md5, got 31"),
    (HEADER + GOOD.replace("0" * 32, "g" * 32), 2, "expected hex digits"),
    (HEADER + GOOD.replace("md5:" + "0" * 32, "sha256:" + "0" * 32), 2, "expected 64 hex"),
    (HEADER + GOOD + "b,T1,,,,x,http,\n", 3, "access 'http': expected at least one URL"),
    (HEADER + GOOD + GOOD, 3, "duplicate name 'a' \\(first on line 2\\)"),
    (HEADER + GOOD.replace(",10,", ",ten,"), 2, "size_bytes: expected an integer"),
    (HEADER + GOOD.replace(",10,", ",-1,"), 2, "size_bytes: expected >= 0"),
    (HEADER + GOOD + "b,T1,http://x\n", 3, "expected 8 fields, got 3"),
    (HEADER + GOOD.replace("http://example.org", "ftp://example.org"), 2, "expected http://"),
    (HEADER + 'a,T1,,,,"x\nmore",manual,ok\nb,T1,,,,x,weird,\n', 4, "unknown access"),
])
def test_malformed_manifest_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_manifest(path)
    assert f"{path}, line {line}:" in str(info.value)


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="data manifest not found"):
        load_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="line 1: expected a header row"):
        load_manifest(tmp_path / "empty.csv")


def test_parse_checksum_round_trip():
    assert parse_checksum("") is None and parse_checksum(None) is None
    parsed = parse_checksum(" SHA256:" + "AB" * 32)
    assert parsed == Checksum("sha256", "ab" * 32) and str(parsed) == "sha256:" + "ab" * 32
    assert parse_checksum(parsed) is parsed


def test_an_installed_wheel_carries_the_manifest(tmp_path):
    """The notebooks pip-install the package (not editable): built as a wheel and
    installed outside the checkout, it must still find the IXI sources."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source, wheels, site = tmp_path / "source", tmp_path / "wheels", tmp_path / "site"
    # Build from a copy of what a clone holds (a build writes build/ and *.egg-info).
    shutil.copytree(root / "colab_utils", source / "colab_utils",
                    ignore=shutil.ignore_patterns("__pycache__", "data_manifest.csv"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "data_manifest.csv",
                 "requirements.txt", "README.md"):
        shutil.copy(root / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(wheels), str(source)],
        capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = wheels.glob("colab_utils_mri_cyclegan-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(site), str(wheel)], capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "colab_utils" / "data" / "data_manifest.csv").is_file()
    code = ("import colab_utils; from colab_utils.data.manifest import get_source, "
            "default_manifest; print(colab_utils.__file__); print(default_manifest()); "
            "print(get_source('ixi-t1').url); print(get_source('ixi-t2').checksum)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-3000:]
    package, manifest, url, checksum = run.stdout.split()
    assert package.startswith(str(site)) and manifest.startswith(str(site))
    assert url.endswith("/IXI-T1.tar") and checksum == "md5:e3140d78730ecdd32ba92da48c0a9aaa"
    # The packaged copy is the top-level file, not a hand-kept one.
    assert Path(manifest).read_text() == (root / "data_manifest.csv").read_text()
