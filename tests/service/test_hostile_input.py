"""Hostile input is refused quickly with a clear 4xx, or bounded by a documented limit, with
the server's memory flat (docs/operations.md, "Limits and timeouts").

The limits of the HTTP server itself (the head's size, the deadlines for head and body,
what becomes of a connection whose body is never read) need a real socket: they are tried
against ``nser serve`` (app/http_guard.py). What the application refuses before routing
(app.middleware.RequestLimits), JSON nesting and the export scopes are tried in process.
"""

from __future__ import annotations

import gzip
import os
import selectors
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
import pytest
from conftest import make_settings, open_client, service_url
from partner_helpers import bearer, create_partner, get_token
from server import Server, serve

PROBLEM = "application/problem+json"
HEAD_TIMEOUT = 1.5  # seconds: the server of this module is impatient, to keep tests short
BODY_TIMEOUT = 1.5
MAX_HEAD = 32 * 1024  # the default NSER_HTTP_MAX_HEAD_BYTES


# --- a real server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "NSER_DATABASE_URL": service_url(database_url),
        "NSER_IN_PROCESS_WORKERS": "0",
        "NSER_HTTP_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "NSER_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with serve(env, tmp_path_factory.mktemp("hostile"), workers=1) as running:
        yield running


def _address(server: Server) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


def _rss(server: Server) -> int:
    """The serving process's resident memory (one worker: uvicorn serves in it)."""
    rss: int = psutil.Process(server.process.pid).memory_info().rss
    return rss


def _exchange(server: Server, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    """Send ``head`` (and ``body``) on a fresh connection, as far as the server reads it;
    return everything the server answers until it closes."""
    with socket.create_connection(_address(server), timeout=timeout) as sock:
        try:
            for start in range(0, len(head + body), 64 * 1024):
                sock.sendall((head + body)[start : start + 64 * 1024])
        except OSError:  # the server refused and closed before the end: read its answer
            pass
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _problem(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    problem: dict[str, object] = orjson.loads(body)
    return problem


def _request(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: nser.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_one_megabyte_authorization_header_is_431(server: Server) -> None:
    before = _rss(server)
    started = time.monotonic()
    for _ in range(10):
        header = {"Authorization": "Bearer " + "x" * (1024 * 1024)}
        answer = _exchange(server, _request("GET", "/v1/partner/scores/3520212345671", header))
        assert _status(answer) == 431
        assert "byte limit" in str(_problem(answer)["detail"])
    assert time.monotonic() - started < 30
    # Refused as the bytes pass the limit, never held whole: ten of them leave no trace.
    assert _rss(server) - before < 20 * 1024 * 1024
    # The server is still there for everyone else.
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


def test_sixty_four_kilobytes_of_headers_are_431(server: Server) -> None:
    many = {f"X-Filler-{i:04d}": "y" * 50 for i in range(1100)}  # ~ 64 KiB in small headers
    assert sum(len(k) + len(v) + 4 for k, v in many.items()) >= 64 * 1024
    answer = _exchange(server, _request("GET", "/healthz", many))
    assert _status(answer) == 431
    # A head just under the limit is served.
    some = {f"X-Filler-{i:04d}": "y" * 50 for i in range(400)}
    served = _exchange(server, _request("GET", "/healthz", {**some, "Connection": "close"}))
    assert _status(served) == 200


def test_ten_thousand_query_parameters_are_refused(server: Server) -> None:
    # Written long, they pass the head's limit: 431 from the server.
    long = "&".join(f"province={i}" for i in range(10_000))
    assert _status(_exchange(server, _request("GET", f"/v1/public/geography?{long}"))) == 431
    # Written short, they fit in it: 414 from the application, before the query is parsed.
    short = "&".join("p" for _ in range(10_000))
    answer = _exchange(
        server, _request("GET", f"/v1/public/geography?{short}", {"Connection": "close"})
    )
    assert _status(answer) == 414
    assert "1024 query parameters" in str(_problem(answer)["detail"])


def test_a_two_gigabyte_body_that_never_arrives_is_refused_at_once(server: Server) -> None:
    started = time.monotonic()
    head = _request(
        "POST",
        "/v1/partner/updates",
        {"Content-Length": str(2 * 1024**3), "Content-Type": "application/json"},
    )
    answer = _exchange(server, head)  # the head only: the body never comes
    assert _status(answer) == 413
    assert "byte limit" in str(_problem(answer)["detail"])
    # Answered at once, and the connection closed (after a short linger), not held for the
    # 2 GB: well within the body deadline plus the linger.
    assert time.monotonic() - started < BODY_TIMEOUT + 2.5


def test_a_body_that_stops_arriving_is_408_after_the_body_deadline(server: Server) -> None:
    # A declared length under every cap, ten bytes of it, then silence.
    head = _request(
        "POST", "/v1/requests", {"Content-Length": "1000", "Content-Type": "application/json"}
    )
    started = time.monotonic()
    answer = _exchange(server, head, b'{"organiza')
    waited = time.monotonic() - started
    assert _status(answer) == 408
    assert "body did not arrive" in str(_problem(answer)["detail"])
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 5


def test_a_head_that_stops_arriving_is_408_after_the_head_deadline(server: Server) -> None:
    started = time.monotonic()
    answer = _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: nser.te")
    waited = time.monotonic() - started
    assert _status(answer) == 408
    assert HEAD_TIMEOUT <= waited < HEAD_TIMEOUT + 5


def test_a_slowloris_of_500_connections_is_shed_and_others_are_served(server: Server) -> None:
    request = _request("GET", "/healthz")
    before = _rss(server)
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(500):
        sock = socket.create_connection(_address(server), timeout=10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    answers: dict[socket.socket, bytes] = {}
    served_meanwhile = []
    started = time.monotonic()
    try:
        position = 0
        while len(answers) < len(sockets) and time.monotonic() - started < HEAD_TIMEOUT + 20:
            # One more byte on every open connection, never the whole head.
            byte = request[position % (len(request) - 4) : position % (len(request) - 4) + 1]
            position += 1
            for sock in sockets:
                if sock not in answers:
                    try:
                        sock.send(byte)
                    except OSError:
                        answers[sock] = b""
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    answers[sock] = answers.get(sock, b"") + sock.recv(65536)
                except OSError:
                    answers.setdefault(sock, b"")
            if len(served_meanwhile) < 3 and time.monotonic() - started > HEAD_TIMEOUT / 3:
                # Everyone else is served while the slow connections are held.
                reply = httpx.get(f"{server.base_url}/healthz", timeout=10)
                served_meanwhile.append(reply.status_code)
            time.sleep(0.05)
        shed_after = time.monotonic() - started
    finally:
        for sock in sockets:
            selector.unregister(sock)
            sock.close()
        selector.close()
    assert len(answers) == 500, f"{500 - len(answers)} slow connections still open"
    assert shed_after < HEAD_TIMEOUT + 10
    refused = [answer for answer in answers.values() if answer]
    assert refused
    assert all(_status(answer) == 408 for answer in refused)
    assert served_meanwhile
    assert set(served_meanwhile) == {200}
    assert _rss(server) - before < 30 * 1024 * 1024


# --- refused by the application before routing -----------------------------------------
@pytest.fixture(scope="module")
async def hclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        export_max_households=100,
        extract_max_records=100,
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def token(hclient: httpx.AsyncClient, seeded_url: str) -> str:
    partner = create_partner(
        seeded_url,
        name="Hostile Input",
        categories="iii,iv,v,vi",
        dimensions="education",
        update_kinds="member_birth",
    )
    return await get_token(hclient, partner["client_id"], partner["client_secret"])


def _assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    return body


async def test_a_gzip_bomb_is_refused_unopened(hclient: httpx.AsyncClient, token: str) -> None:
    # 1 GiB of zeros in about 1 MB: inflated, it would take the memory; it is never inflated.
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9) * 16
    assert len(bomb) < 2 * 1024 * 1024
    for path, headers in (
        ("/v1/partner/updates", {**bearer(token), "Idempotency-Key": uuid.uuid4().hex}),
        ("/v1/requests", {}),
    ):
        started = time.monotonic()
        response = await hclient.post(
            path,
            content=bomb,
            headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert time.monotonic() - started < 5
        body = _assert_problem(response, 415)
        assert "uncompressed" in str(body["detail"])
        assert response.headers["accept-encoding"] == "identity"


async def test_json_nested_100000_deep_is_refused(hclient: httpx.AsyncClient, token: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    # An update batch (a cap of 20 MB) reaches the parser: a 422, not a crash.
    started = time.monotonic()
    response = await hclient.post(
        "/v1/partner/updates",
        content=deep,
        headers={**bearer(token), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert time.monotonic() - started < 5
    assert "not valid JSON" in str(_assert_problem(response, 422)["detail"])
    # The request form (a cap of 64 KiB) refuses the body's size first, ...
    _assert_problem(await hclient.post("/v1/requests", content=deep), 413)
    # ... and nesting that fits in the cap is refused by the parser's depth limit.
    shallower = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
    response = await hclient.post(
        "/v1/requests", content=shallower, headers={"Content-Type": "application/json"}
    )
    assert "recursion limit" in str(_assert_problem(response, 422)["detail"])


async def test_a_declared_body_over_every_cap_is_413_before_routing(
    hclient: httpx.AsyncClient,
) -> None:
    for path in ("/v1/requests", "/v1/no/such/route", "/healthz"):
        response = await hclient.post(
            path, content=b"{}", headers={"Content-Length": str(2 * 1024**3)}
        )
        _assert_problem(response, 413)


# --- export scopes ------------------------------------------------------------------------
async def test_an_export_over_the_scope_limit_is_refused_before_its_first_byte(
    hclient: httpx.AsyncClient, token: str, db: asyncpg.Connection
) -> None:
    audited = await db.fetchval("SELECT count(*) FROM audit_log")
    for path, accept in (
        ("/v1/partner/beneficiaries", "application/x-ndjson"),
        ("/v1/partner/beneficiaries", "text/csv"),
        ("/v1/partner/extracts/anonymized", "text/csv"),
        ("/v1/partner/extracts/anonymized", "application/vnd.apache.parquet"),
    ):
        started = time.monotonic()
        response = await hclient.get(path, headers={**bearer(token), "Accept": accept})
        assert time.monotonic() - started < 10
        body = _assert_problem(response, 422)
        assert body["limit"] == 100
        assert int(str(body["selected"])) > 100
        assert "NSER_EXPORT_MAX_HOUSEHOLDS" in str(body["detail"]) or (
            "NSER_EXTRACT_MAX_RECORDS" in str(body["detail"])
        )
    # Refused before anything was shared: no audit row.
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audited
    # The JSON list stays available, a page at a time.
    page = await hclient.get("/v1/partner/beneficiaries?limit=50", headers=bearer(token))
    assert page.status_code == 200
    assert len(page.json()["items"]) == 50
    # A scope within the limit streams.
    district = await db.fetchval(
        "SELECT district_code FROM households GROUP BY 1 HAVING count(*) <= 100 "
        "ORDER BY count(*) DESC LIMIT 1"
    )
    if district is not None:
        small = await hclient.get(
            f"/v1/partner/beneficiaries?district={district}",
            headers={**bearer(token), "Accept": "application/x-ndjson"},
        )
        assert small.status_code == 200


# --- configuration ------------------------------------------------------------------------
def _nser(*args: str, **env: str) -> tuple[int, str]:
    import subprocess
    import sys

    from server import ROOT

    clean = {key: value for key, value in os.environ.items() if not key.startswith("NSER_")}
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**clean, "NSER_ENVIRONMENT": "test", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("command", "env", "said"),
    [
        (
            ["serve", "--port", "1"],
            {"NSER_READ_DATABSE_URL": "postgresql://replica/nser"},
            "unknown setting: NSER_READ_DATABSE_URL (did you mean NSER_READ_DATABASE_URL?)",
        ),
        (
            ["worker", "--exit-when-idle"],
            {"NSER_AUDIT_CHAINS": "0", "NSER_DATABASE_URL": "postgresql://u:pw@replica/nser"},
            "invalid setting: NSER_AUDIT_CHAINS: Input should be greater than or equal to 1",
        ),
    ],
)
def test_nser_refuses_to_start_on_bad_configuration(
    command: list[str], env: dict[str, str], said: str
) -> None:
    code, output = _nser(*command, **env)
    assert code == 1, output
    assert said in output
    assert "Traceback" not in output
    assert "replica" not in output  # values (URLs, passwords) are never echoed


def test_an_unknown_name_is_refused_naming_the_closest_known_one() -> None:
    from app.settings import UnknownSetting, check_names

    check_names({"NSER_TEST_ADMIN_URL": "x", "NSER_BENCH_DB_PREFIX": "y", "PATH": "/bin"})
    for wrong, right in (
        ("NSER_AUDIT_CHAIN", "NSER_AUDIT_CHAINS"),
        ("nser_read_databse_url", "NSER_READ_DATABASE_URL"),
        ("NSER_HTTP_HEAD_TIMEOUT", "NSER_HTTP_HEAD_TIMEOUT_SECONDS"),
    ):
        with pytest.raises(UnknownSetting, match=f"did you mean {right}"):
            check_names({wrong: "4"})
    with pytest.raises(UnknownSetting) as refused:
        check_names({"NSER_FOO": "1"})
    assert "did you mean" not in str(refused.value)  # nothing close: no guess


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("audit_chains", 0, "NSER_AUDIT_CHAINS: Input should be greater than or equal to 1"),
        ("db_pool_size", 100_000, "NSER_DB_POOL_SIZE: Input should be less than or equal to"),
        ("http_head_timeout_seconds", 0, "NSER_HTTP_HEAD_TIMEOUT_SECONDS: Input should be"),
        ("http_max_head_bytes", "lots", "NSER_HTTP_MAX_HEAD_BYTES: Input should be a valid"),
        ("k_anonymity", 1, "NSER_K_ANONYMITY: Input should be greater than or equal to 2"),
    ],
)
def test_a_value_out_of_range_is_refused(field: str, value: object, expected: str) -> None:
    from pydantic import ValidationError

    from app.settings import Settings, explain

    with pytest.raises(ValidationError) as refused:
        Settings(environment="test", **{field: value})
    assert expected in explain(refused.value)
    assert str(value) not in explain(refused.value).split(":", 2)[-1].split("Input")[0]


def test_the_suites_environment_and_a_dotenv_file_are_checked(tmp_path: Path) -> None:
    from app.settings import Settings, UnknownSetting

    Settings(environment="test")  # the environment this suite runs in is valid
    (tmp_path / ".env").write_text("NSER_LOG_LEVL=debug\n")
    with pytest.raises(UnknownSetting, match="did you mean NSER_LOG_LEVEL"):
        Settings(_env_file=tmp_path / ".env")  # type: ignore[call-arg]
