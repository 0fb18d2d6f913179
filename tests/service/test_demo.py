"""`nser demo` (what `make demo` runs): from an empty data folder to a registry that answers
the CNICs it prints, and a partner whose printed credentials get a token."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import ROOT, _stop, free_port
from test_embedded import _embedded_env, postmaster, stop_postmaster

CNIC_LINE = re.compile(r"/v1/public/scores/(\d{5}-\d{7}-\d)\s+# (\w+)")
CREDENTIALS = re.compile(r"client_id=(\S+) -d client_secret=(\S+)")
REQUEST_LINE = re.compile(r"-d '(\{.*\})' \S+/v1/requests")
DCI_LINE = re.compile(r"-d '(\{.*\})' \S+/dci/registry/sync/search")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The demo's data folder; its embedded PostgreSQL is stopped after the test even if the
    demo process could not stop it (it runs detached, in a session of its own)."""
    path = tmp_path / "data"
    yield path
    stop_postmaster(path / "pgdata")


@pytest.mark.slow
def test_demo_prints_cnics_that_answer_and_working_partner_credentials(
    tmp_path: Path, data_dir: Path
) -> None:
    port = free_port()
    env = _embedded_env(data_dir)
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "demo", "--households", "300", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        printed = out_path.read_text()
        # The website's address comes first, before any API example.
        ready = printed[printed.index("NSER demo registry ready") :]
        assert ready.index(f"Website (English and Urdu): {base}/") < ready.index("curl")
        home = httpx.get(f"{base}/?lang=ur", timeout=10)
        assert home.status_code == 200
        assert 'dir="rtl"' in home.text
        samples = CNIC_LINE.findall(printed)
        assert {band for _, band in samples} == {
            "ultra_poor",
            "very_poor",
            "poor",
            "non_poor",
            "well_off",
        }
        for cnic, band in samples:
            answer = httpx.get(f"{base}/v1/public/scores/{cnic}", timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["poverty_band"] == band
        match = CREDENTIALS.search(printed)
        assert match, printed
        token = httpx.post(
            f"{base}/v1/auth/token",
            timeout=30,
            data={
                "grant_type": "client_credentials",
                "client_id": match[1],
                "client_secret": match[2],
            },
        )
        assert token.status_code == 200, token.text
        # The DCI search it prints answers the household of the first CNIC.
        dci = DCI_LINE.search(printed)
        assert dci, printed
        found = httpx.post(
            f"{base}/dci/registry/sync/search",
            content=dci[1],
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token.json()['access_token']}",
            },
            timeout=10,
        )
        assert found.status_code == 200, found.text
        response = found.json()["message"]["search_response"][0]
        assert response["status"] == "succ", response
        assert len(response["data"]["reg_records"]) == 1, response
        # The data-sharing request it prints is accepted; its staff credentials act on it.
        form = REQUEST_LINE.search(printed)
        assert form, printed
        sent = httpx.post(
            f"{base}/v1/requests",
            content=form[1],
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert sent.status_code == 201, sent.text
        staff = CREDENTIALS.findall(printed)[1]
        staff_token = httpx.post(
            f"{base}/v1/auth/token",
            timeout=30,
            data={
                "grant_type": "client_credentials",
                "client_id": staff[0],
                "client_secret": staff[1],
            },
        ).json()["access_token"]
        started = httpx.post(
            f"{base}/v1/staff/requests/{sent.json()['reference']}/actions/start_review",
            json={},
            headers={"Authorization": f"Bearer {staff_token}"},
            timeout=10,
        )
        assert started.status_code == 200, started.text
        # The staff console (at localhost: passkeys need a host name) and its one-time links,
        # one for the demo staff member and one for the demo administrator.
        links = re.findall(rf"http://localhost:{port}/staff/enrol#([A-Za-z0-9_-]{{43}})", printed)
        assert len(links) == 2, printed
        with httpx.Client(base_url=f"http://localhost:{port}", timeout=10) as browser:
            page = browser.get("/staff/enrol")
            csrf = re.search(r'data-csrf="([0-9a-f]{64})"', page.text)
            assert csrf, page.text
            options = browser.post(
                "/staff/enrol/options",
                json={"token": links[1]},
                headers={"X-CSRF-Token": csrf[1]},
            )
            assert options.status_code == 200, options.text
            assert options.json()["rp"]["id"] == "localhost"
            assert options.json()["user"]["name"] == "Demo administrator"
        # Ctrl-C at the terminal of `make demo`: the demo exits and stops its PostgreSQL.
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert postmaster((data_dir / "pgdata").resolve()) is None
    finally:
        _stop(process)
