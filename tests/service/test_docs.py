"""The project's own documentation covers the API it serves and stands on its own.

- every operation in ``/openapi.json`` has its heading in docs/api.md, with the path
  written exactly as FastAPI writes it (``{param}`` placeholders included);
- no file of the repository points at documents outside it (a clone has only itself);
- the relative links of README.md and docs/ lead to files that exist.

None of this needs a database: the OpenAPI document is built without starting the app.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings

from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
API_DOC = ROOT / "docs" / "api.md"
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Spelled in two parts so that this file does not match itself.
OUTSIDE = "/".join(("..", "shared")).encode()
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _openapi() -> dict[str, Any]:
    settings = make_settings("postgresql://unused@127.0.0.1:1/unused")
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def _operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in _openapi()["paths"].items()
        for method in item
        if method in METHODS
    ]


def test_openapi_has_operations() -> None:
    paths = {path for _, path in _operations()}
    assert "/v1/public/scores/{cnic}" in paths
    assert "/v1/households/{household_id}/history" in paths


@pytest.mark.parametrize(("method", "path"), _operations())
def test_every_operation_has_its_heading_in_api_md(method: str, path: str) -> None:
    text = API_DOC.read_text(encoding="utf-8")
    assert path in text, f"{path} is not in docs/api.md"
    heading = f"### `{method} {path}`"
    assert heading in text.splitlines(), f"docs/api.md has no heading {heading!r}"


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    names = [name for name in listed.decode().split("\0") if name]
    assert names, "git ls-files listed nothing: run the tests from a git checkout"
    return [ROOT / name for name in names]


def test_no_file_refers_outside_the_repository() -> None:
    files = {*_tracked_files(), *GUIDES}
    offending = sorted(
        str(path.relative_to(ROOT))
        for path in files
        if path.is_file() and OUTSIDE in path.read_bytes()
    )
    assert not offending, f"files referring to {OUTSIDE.decode()}: {offending}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_relative_links_resolve(guide: Path) -> None:
    targets = LINK.findall(guide.read_text(encoding="utf-8"))
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in local if not (guide.parent / t).exists()]
    assert not missing, f"{guide.name} links to missing files: {missing}"
