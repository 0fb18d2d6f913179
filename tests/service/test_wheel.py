"""The wheel works on its own: installed into a fresh venv, `nser` migrates, seeds and serves
from any working directory, with no source tree and no NSER_MIGRATIONS_DIR.

This is what the Docker image runs (it installs only the wheel). `make wheel-check` runs
this file alone; `make test` runs it with the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import _admin, _database_url
from server import _stop, free_port

ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile's build stage copies to build the wheel.
SOURCES = ("pyproject.toml", "README.md", "app", "migrations")


def _packages_in(folder: Path, name: str) -> set[str]:
    """Dotted names of ``folder`` and every folder below it that holds Python modules."""
    found = set()
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py")):
            found.add(".".join([name, *path.relative_to(folder).parts]))
    return found


def test_pyproject_names_every_package() -> None:
    """pyproject.toml lists the wheel's packages by hand (mapping migrations/ needs it): a
    package added under app/ and not listed there would be missing from the wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"app.migrations": "migrations"}
    expected = _packages_in(ROOT / "app", "app") | _packages_in(
        ROOT / "migrations", "app.migrations"
    )
    listed = set(setuptools["packages"])
    assert not expected - listed, (
        f"add {sorted(expected - listed)} to pyproject.toml [tool.setuptools] packages"
    )
    assert not listed - expected, f"no such packages: {sorted(listed - expected)}"


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _build_wheel(source: Path, tmp: Path) -> Path:
    """Build the wheel from a copy of the sources, as the Dockerfile does (an in-tree build
    would leave build/ in the working tree, and a stale build/ can leak into the wheel)."""
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, "."], cwd=source)
    (wheel,) = dist.glob("nser-*.whl")
    return wheel


def _shipped(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _sources_to_ship(source: Path) -> set[str]:
    """Every file of ``source``'s app/ and migrations/, by its path inside the wheel."""
    wanted = set()
    for folder, inside in (("app", "app"), ("migrations", "app/migrations")):
        for path in (source / folder).rglob("*"):
            if path.is_file():
                wanted.add(f"{inside}/{path.relative_to(source / folder).as_posix()}")
    return wanted


def _install(wheel: Path, venv: Path) -> Path:
    """A fresh venv with the wheel and its dependencies; returns its ``bin`` folder.

    The venv gets no pip of its own (the test's pip installs into it) and no byte-code
    compilation: both only cost time here.
    """
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", wheel],
        cwd=venv.parent,
    )
    return venv / "bin"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (not migrated), dropped after."""
    name = f"nser_wheel_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _database_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


IMPORT_ALL = """
import importlib, pkgutil, app
from app.settings import Settings
for module in pkgutil.walk_packages(app.__path__, "app."):
    if module.name != "app.__main__" and not module.name.startswith("app.migrations"):
        importlib.import_module(module.name)
print(Settings().migrations_dir)
"""


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            return httpx.get(f"{base_url}/readyz", timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)


@pytest.mark.slow
def test_installed_wheel_migrates_seeds_and_serves_from_anywhere(
    tmp_path: Path, empty_database: str
) -> None:
    source = tmp_path / "src"
    wheel = _build_wheel(source, tmp_path)
    missing = _sources_to_ship(source) - _shipped(wheel)
    assert not missing, f"not in the wheel: {sorted(missing)}"

    bin_dir = _install(wheel, tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # no source tree, no alembic.ini, no .env
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NSER_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        NSER_DATABASE_URL=empty_database,
        NSER_ENVIRONMENT="test",
        NSER_DATA_DIR=str(tmp_path / "data"),
    )

    # Every module imports with the declared dependencies alone; the migrations are found
    # inside the installed package.
    located = _run([bin_dir / "python", "-c", IMPORT_ALL], cwd=elsewhere, env=env).strip()
    assert Path(located).is_relative_to(tmp_path / "venv"), located
    assert (Path(located) / "env.py").is_file(), located

    _run([bin_dir / "nser", "db", "upgrade"], cwd=elsewhere, env=env)
    seeded = _run([bin_dir / "nser", "seed", "--households", "100"], cwd=elsewhere, env=env)
    assert "seeded 100 households" in seeded

    # /readyz compares the database's revision with the heads of the shipped migrations.
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [bin_dir / "nser", "serve", "--port", str(port), "--no-migrate"],
            cwd=elsewhere,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}", process, log)
        assert ready.status_code == 200, ready.text
        # The website's templates, compiled Urdu catalogue and font travel in the wheel.
        home = httpx.get(f"http://127.0.0.1:{port}/?lang=ur", timeout=5)
        assert home.status_code == 200, home.text
        assert "قومی سماجی و معاشی رجسٹری" in home.text
        # A page's templates travel beside its code (app/web/public/<page>/templates).
        check = httpx.get(f"http://127.0.0.1:{port}/check?lang=ur", timeout=5)
        assert check.status_code == 200, check.text
        assert "غربت کی سطح معلوم کریں" in check.text
        font = httpx.get(f"http://127.0.0.1:{port}/static/fonts/NotoNastaliqUrdu-Regular.woff2")
        assert font.status_code == 200
    finally:
        _stop(process)
