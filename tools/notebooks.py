"""Maintain the notebooks, which are the source (edit them in Jupyter or Colab).

    python tools/notebooks.py --strip            remove outputs and execution counts
    python tools/notebooks.py --repo OWNER/NAME  point badges, install cells, the README
                                                 and colab_utils.colab.REPOSITORY at a fork

Notebooks are committed without outputs; CI executes them (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLUG = re.compile(r"[\w.-]+/[\w.-]+")


def strip(path: Path) -> None:
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def current_repository() -> str:
    text = (ROOT / "colab_utils" / "colab.py").read_text()
    return re.search(r'^REPOSITORY = "(.*)"$', text, flags=re.M).group(1)


def set_repository(repository: str) -> list[Path]:
    """Replace the current slug (``colab_utils.colab.REPOSITORY``) by ``repository`` in
    the badges, install cells, README and colab.py; other links are left alone."""
    if not SLUG.fullmatch(repository):
        raise SystemExit(f"--repo: expected OWNER/NAME, got {repository!r}")
    old = current_repository()
    files = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "README.md",
                                                            ROOT / "colab_utils" / "colab.py"]
    for path in files:
        path.write_text(path.read_text().replace(old, repository))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strip", action="store_true", help="remove outputs")
    parser.add_argument("--repo", help="GitHub OWNER/NAME of a fork")
    args = parser.parse_args()
    if args.strip:
        for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
            strip(path)
    if args.repo:
        print("written: " + ", ".join(str(p) for p in set_repository(args.repo)))


if __name__ == "__main__":
    main()
