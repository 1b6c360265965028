"""IXI: fetch T1/T2 NIfTIs, all of them (verified tars) or the first N paired subjects.

The IXI tars are several GB each. With ``subjects=N`` the T1 tar is streamed
and the first N T1 files are kept, then the T2 tar is streamed for the same
subject IDs, so only the bytes up to those subjects are transferred: the T2
stream stops once its members are past every wanted ID (IXI's tars list the
subjects in ID order), so a subject without a T2 does not make it read the
whole tar. (A partial stream cannot be checked against the whole tar's md5;
every member is still checked for safety and written atomically. Without
``subjects`` the whole tars are downloaded, verified against the manifest's
md5 and safely extracted.)

:func:`write_protocol_split` fixes the published ``ixi-40`` protocol's subjects
and splits (:data:`colab_utils.presets.IXI_40`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..log import get_logger
from .archive import safe_extract
from .download import download, stream_tar_members
from .manifest import get_source
from .nifti import IXI_PATTERN, find_pairs

logger = get_logger(__name__)

_T1 = re.compile(r"(IXI\d{3}-[A-Za-z]+-\d{4})-T1\.nii\.gz$")
_NUMBER = re.compile(r"IXI(\d{3})")
# Members past the last wanted ID before the T2 stream gives up (a little disorder in
# the tar is tolerated).
PAST_PATIENCE = 20
# The protocol's subjects are the first of this many streamed T1 subjects that have a T2.
PROTOCOL_MARGIN = 8


def _number(name: str) -> int | None:
    match = _NUMBER.search(name)
    return int(match.group(1)) if match else None


class _PastWanted:
    """``stop(name)``: True after :data:`PAST_PATIENCE` members in a row whose IXI number is
    beyond every wanted subject's."""

    def __init__(self, wanted):
        self.last = max(_number(w) for w in wanted)
        self.run = 0

    def __call__(self, name: str) -> bool:
        number = _number(name)
        self.run = self.run + 1 if number is not None and number > self.last else 0
        return self.run >= PAST_PATIENCE


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
        have = find_pairs(dest, IXI_PATTERN).pairs if dest.is_dir() else {}
        if len(have) >= subjects:  # fetched before: nothing is streamed again
            logger.info("IXI: %d paired subjects already in %s", len(have), dest)
            return dict(sorted(have.items())[:subjects])
        t1_files = stream_tar_members(t1_source.url, dest / "t1", select=_T1.search,
                                      limit=subjects, progress=progress, **download_options)
        wanted = {_T1.search(p.name).group(1) for p in t1_files}
        stream_tar_members(t2_source.url, dest / "t2",
                           select=lambda name: any(f"{sid}-T2" in name for sid in wanted),
                           limit=len(wanted), stop=_PastWanted(wanted), progress=progress,
                           **download_options)
    else:
        for source, folder in ((t1_source, "t1"), (t2_source, "t2")):
            tar = download(source, dest / "downloads", progress=progress, **download_options)
            safe_extract(tar, dest / folder)
            if not keep_tars:
                tar.unlink()
    pairing = find_pairs(dest, IXI_PATTERN)
    logger.info("%s", pairing.report())
    return pairing.pairs


def write_protocol_split(pairs: dict, folder) -> tuple[dict, Path]:
    """The ``ixi-40`` protocol: the first 40 paired subjects in ID order, split 25 train,
    5 val, 10 test in that order; write ``FOLDER/ixi-40-split.csv`` and return
    ``(the 40 pairs, the split file)``.

    Raises:
        ValueError: Fewer than 40 paired subjects (fetch more with ``subjects``).
    """
    from ..presets import IXI_40

    chosen = sorted(pairs)[:IXI_40["subjects"]]
    if len(chosen) < IXI_40["subjects"]:
        raise ValueError(f"protocol ixi-40: expected {IXI_40['subjects']} IXI subjects with a "
                         f"T1 and a T2, found {len(chosen)}; fetch more subjects")
    order = ["train"] * IXI_40["train"] + ["val"] * IXI_40["val"] + ["test"] * IXI_40["test"]
    path = Path(folder) / "ixi-40-split.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("subject,split\n" + "".join(f"{s},{split}\n"
                                               for s, split in zip(chosen, order)))
    return {s: pairs[s] for s in chosen}, path
