"""IXI: fetch T1/T2 NIfTIs, all of them (verified tars) or the first N paired subjects.

The IXI tars are several GB each. With ``subjects=N`` the T1 tar is streamed
and the first N T1 files are kept, then the T2 tar is streamed for the same
subject IDs, so only the bytes up to those subjects are transferred. (A
partial stream cannot be checked against the whole tar's md5; every member
is still checked for safety and written atomically. Without ``subjects``
the whole tars are downloaded, verified against the manifest's md5 and
safely extracted.)
"""

from __future__ import annotations

import re
from pathlib import Path

from .archive import safe_extract
from .download import download, stream_tar_members
from .manifest import get_source
from .nifti import IXI_PATTERN, find_pairs

_T1 = re.compile(r"(IXI\d{3}-[A-Za-z]+-\d{4})-T1\.nii\.gz$")


def fetch_ixi(dest, *, subjects: int | None = None, manifest=None, progress: bool = True,
              keep_tars: bool = False, **download_options) -> dict:
    """Fetch IXI T1 and T2 NIfTIs into ``dest``; return the subject pairs found.

    Args:
        dest: Output folder (``dest/t1``, ``dest/t2``; tars in ``dest/downloads``).
        subjects: Only the first N T1 subjects and their T2s (streamed); ``None`` for all.
        manifest: Another manifest file (tests point this at a local server).
        progress: Progress bars.
        keep_tars: Keep the downloaded tars after extraction (full download only).
        **download_options: ``retries``, ``backoff``, ``timeout`` for the downloads.

    Returns:
        ``{subject_id: (t1_path, t2_path)}`` of the subjects with both.
    """
    dest = Path(dest)
    t1_source, t2_source = get_source("ixi-t1", manifest), get_source("ixi-t2", manifest)
    if subjects is not None:
        if subjects < 1:
            raise ValueError(f"subjects: expected >= 1, got {subjects}")
        t1_files = stream_tar_members(t1_source.url, dest / "t1", select=_T1.search,
                                      limit=subjects, progress=progress, **download_options)
        wanted = {_T1.search(p.name).group(1) for p in t1_files}
        stream_tar_members(t2_source.url, dest / "t2",
                           select=lambda name: any(f"{sid}-T2" in name for sid in wanted),
                           limit=len(wanted), progress=progress, **download_options)
    else:
        for source, folder in ((t1_source, "t1"), (t2_source, "t2")):
            tar = download(source, dest / "downloads", progress=progress, **download_options)
            safe_extract(tar, dest / folder)
            if not keep_tars:
                tar.unlink()
    pairing = find_pairs(dest, IXI_PATTERN)
    print(f"[ixi] {pairing.report()}")
    return pairing.pairs
