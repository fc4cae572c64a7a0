"""Build hook: ship the example bundles and the docs inside the wheel.

`pyproject.toml` holds the metadata; this only copies `examples/*-kind-ambient/` and
`docs/` into `ambientctl/_data/` of the build, so that after `pip install .` or
`pipx install` the examples (`ambientctl examples`) and the checks catalogue
(`ambientctl doctor explain`) are there (see `ambientctl/resources.py`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "ambientctl" / "_data"
        if target.exists():
            shutil.rmtree(target)
        for src in sorted((ROOT / "examples").glob("*-kind-ambient")):
            if (src / "manifest.json").is_file():
                shutil.copytree(src, target / "examples" / src.name)
        docs = ROOT / "docs"
        if docs.is_dir():
            shutil.copytree(docs, target / "docs")


setup(cmdclass={"build_py": BuildWithData})
