"""Packaging hook: the top-level data_manifest.csv goes into the package as well.

The manifest stays where the design puts it (the repository's top level, one
file to edit); a wheel carries a copy as package data so that an installed
package (the notebooks' pip install from GitHub) finds the IXI sources.
Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MANIFEST = Path(__file__).resolve().parent / "data_manifest.csv"


class BuildWithManifest(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "colab_utils" / "data" / "data_manifest.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(MANIFEST), str(target))


setup(cmdclass={"build_py": BuildWithManifest})
