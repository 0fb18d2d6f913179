"""Schemathesis fuzzes a live server from its own /openapi.json and finds nothing.

The checks: no 5xx (``not_a_server_error``), every status and content type is one the
document declares (``status_code_conformance``, ``content_type_conformance``), input the
schema forbids is refused (``negative_data_rejection``), and an operation that needs a token
refuses a request without one (``ignored_auth``). The partner's token holds every category,
so the fuzzer reaches past authorization; a second run covers the staff operations with a
caller holding every role. The runs are bounded in time; a database of its own
keeps the batches it sends away from the other tests' registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import fresh_database, run_cli
from partner_helpers import create_partner
from server import Server, serve

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "negative_data_rejection",
        "ignored_auth",
    )
)
MAX_SECONDS = 60
STAFF_SECONDS = 40
DCI_SECONDS = 30


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    with fresh_database(households=300, seed=11) as url:
        partner = create_partner(
            url,
            name="Fuzzing Partner",
            categories="i,ii,iii,iv,v,vi,vii,viii",
            dimensions="education,room_count",
            update_kinds="phone_change,address_change,member_update",
        )
        # Staff holding every role, so the staff workflow is fuzzed past its 403s.
        roles = ["officer", "committee", "secretary", "me", "admin"]
        args = ["staff", "create", "--name", "Fuzzing Staff", *[f"--role={r}" for r in roles]]
        staff = json.loads(run_cli([*args, "--json"], url).stdout)
        env = {
            "NSER_DATABASE_URL": url,
            "NSER_PUBLIC_LOOKUP_LIMITS": "100000/minute",
            "NSER_TOKEN_LIMITS": "100000/minute",
            "NSER_PARTNER_DEFAULT_LIMITS": "100000/minute",
            "NSER_STAFF_READ_LIMITS": "100000/minute",
            "NSER_GRIEVANCE_LIMITS": "100000/minute",
            "NSER_REQUEST_FORM_LIMITS": "100000/minute",
            "NSER_LOG_LEVEL": "WARNING",
        }
        with serve(env, tmp_path_factory.mktemp("fuzz"), workers=1) as server:
            form = {
                "grant_type": "client_credentials",
                "client_id": partner["client_id"],
                "client_secret": partner["client_secret"],
            }
            got = httpx.post(f"{server.base_url}/v1/auth/token", data=form, timeout=10)
            assert got.status_code == 200, got.text
            staff_form = {
                **form,
                "client_id": staff["client_id"],
                "client_secret": staff["client_secret"],
            }
            staff_token = httpx.post(
                f"{server.base_url}/v1/auth/token", data=staff_form, timeout=10
            )
            assert staff_token.status_code == 200, staff_token.text
            yield server, got.json()["access_token"], staff_token.json()["access_token"]


def _fuzz(
    server: Server, token: str, tmp_path: Path, checks: str, seconds: int, *extra: str
) -> None:
    report = tmp_path / "report"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            checks,
            "--header",
            f"Authorization: Bearer {token}",
            "--max-time",
            str(seconds),
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--seed",
            "2026",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            "--no-color",
            "--generation-database",
            "none",
            *extra,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=seconds * 4,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "No issues found" in output or " passed" in output, output[-5000:]


@pytest.mark.slow
def test_schemathesis_finds_nothing(live: tuple[Server, str, str], tmp_path: Path) -> None:
    server, partner, _ = live
    _fuzz(server, partner, tmp_path, CHECKS, MAX_SECONDS)


@pytest.mark.slow
def test_schemathesis_finds_nothing_in_the_staff_api(
    live: tuple[Server, str, str], tmp_path: Path
) -> None:
    # The staff operations with a caller holding every role. Without negative_data_rejection:
    # it counts a 413 for an oversized body as accepting it.
    server, _, staff = live
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,ignored_auth"
    _fuzz(
        server,
        staff,
        tmp_path,
        checks,
        STAFF_SECONDS,
        "--include-path-regex",
        "^/v1/(staff|households)",
    )


@pytest.mark.slow
def test_schemathesis_finds_nothing_in_the_dci_api(
    live: tuple[Server, str, str], tmp_path: Path
) -> None:
    # The DCI adapter on its own (sync and asynchronous search and txn status), so its
    # operations get their share of the time.
    server, partner, _ = live
    _fuzz(server, partner, tmp_path, CHECKS, DCI_SECONDS, "--include-path-regex", "^/dci/")
