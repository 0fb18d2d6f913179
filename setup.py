"""The wheel's one build step beyond pyproject.toml: compile the website's catalogues.

The gettext sources (``app/web/translations/*/LC_MESSAGES/*.po``) are what the repository
keeps; the ``.mo`` files the service reads are compiled here, into the build (a wheel) or
into the source tree (an editable install), with Babel (a build requirement).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "app" / "web" / "translations"


def _compile(target: Path) -> None:
    spec = importlib.util.spec_from_file_location("_catalogues", HERE / "app/web/catalogues.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.compile_catalogues(SOURCE, target)


class BuildWithCatalogues(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            _compile(SOURCE)
        else:
            _compile(Path(self.build_lib) / "app" / "web" / "translations")


setup(cmdclass={"build_py": BuildWithCatalogues})
