"""GET /v1/public/scores/{cnic}: found, unknown, deceased, malformed; nothing identifying."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import make_settings, open_client
from hypothesis import given, settings
from hypothesis import strategies as st
from lookup_data import DECEASED, LIVING, UNKNOWN, insert_known_members

from app.schemas.cnic import mask_cnic, parse_cnic

METRICS_TOKEN = "metrics-scrape-token-for-the-look-up-tests"


@pytest.fixture(scope="module")
async def known(database_url: str) -> str:
    await insert_known_members(database_url)
    return database_url


# Every look-up test runs twice: through the pure-ASGI shortcut (the default) and through
# the FastAPI route it shortcuts, which must answer identically.
@pytest.fixture(scope="module", params=[True, False], ids=["fast_path", "fastapi_route"])
async def lookup_client(
    known: str, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        known,
        public_lookup_limits="10000/minute",
        public_fast_path=request.param,
        metrics_token=METRICS_TOKEN,
    )
    async for c in open_client(settings):
        yield c


def dashed(cnic: str) -> str:
    return f"{cnic[:5]}-{cnic[5:12]}-{cnic[12]}"


@pytest.mark.parametrize("written", [LIVING, dashed(LIVING)])
async def test_found_answers_only_the_public_fields(
    lookup_client: httpx.AsyncClient, written: str
) -> None:
    response = await lookup_client.get(f"/v1/public/scores/{written}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # Exactly these keys: no name, address, household id or anything else identifying.
    assert set(body) == {"cnic", "pmt_score", "poverty_band", "surveyed_on", "pmt_version"}
    assert body["cnic"] == "99901-*******-3"
    assert body["pmt_score"] == 14.27
    assert body["poverty_band"] == "ultra_poor"
    assert body["surveyed_on"] == "2021-03-14"
    assert body["pmt_version"]
    assert LIVING not in response.text
    assert "Ayesha" not in response.text
    assert "House 1" not in response.text


@pytest.mark.parametrize("written", [UNKNOWN, dashed(UNKNOWN), DECEASED, dashed(DECEASED)])
async def test_unknown_or_deceased_is_404(lookup_client: httpx.AsyncClient, written: str) -> None:
    response = await lookup_client.get(f"/v1/public/scores/{written}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["detail"]


MALFORMED = [
    "abcdefghijklm",
    "35202-123456A-3",
    "352021234567",  # 12 digits
    "35202123456733",  # 14 digits
    "35202-1234567-33",
    "3520-21234567-3",
    "35202-12345673",  # one dash only
    "35202--1234567-3",
    "٣٥٢٠٢١٢٣٤٥٦٧٣",  # Arabic-Indic digits
    "٣٥٢٠٢-١٢٣٤٥٦٧-٣",
    "3520212345٦73",
    "३५२०२१२३४५६७३",  # Devanagari digits
    "1' OR '1'='1",
    "3520212345673; DROP TABLE members",
    "3520212345673 ",
    "+3520212345673",
    "-3520212345673",
    "3520212345673.0",
]


@pytest.mark.parametrize("written", MALFORMED)
async def test_malformed_is_422_problem(lookup_client: httpx.AsyncClient, written: str) -> None:
    response = await lookup_client.get(
        f"/v1/public/scores/{httpx.URL(path=written).raw_path.decode()}"
    )
    assert response.status_code == 422, (written, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert body["errors"][0]["field"] == "cnic"


async def test_table_still_there_after_sql_in_path(
    lookup_client: httpx.AsyncClient,
) -> None:
    response = await lookup_client.get(f"/v1/public/scores/{LIVING}")
    assert response.status_code == 200


async def test_post_is_405_problem(lookup_client: httpx.AsyncClient) -> None:
    response = await lookup_client.post(f"/v1/public/scores/{LIVING}")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


async def test_request_id_is_echoed_or_generated(lookup_client: httpx.AsyncClient) -> None:
    mine = await lookup_client.get("/healthz", headers={"X-Request-ID": "abc-123.X"})
    assert mine.headers["x-request-id"] == "abc-123.X"
    insane = await lookup_client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    generated = insane.headers["x-request-id"]
    assert len(generated) == 32
    assert generated.isalnum()


async def test_docs_work_offline(lookup_client: httpx.AsyncClient) -> None:
    page = await lookup_client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text
    assert "http://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-favicon-32x32.png"):
        url = f"/docs/static/{asset}"
        assert url in page.text
        response = await lookup_client.get(url)
        assert response.status_code == 200
        assert len(response.content) > 100
    assert (await lookup_client.get("/docs/static/..%2Fsettings.py")).status_code == 404
    assert (await lookup_client.get("/docs/oauth2-redirect")).status_code == 200
    schema = (await lookup_client.get("/openapi.json")).json()
    assert "/v1/public/scores/{cnic}" in schema["paths"]


async def test_metrics_count_by_route_template(lookup_client: httpx.AsyncClient) -> None:
    await lookup_client.get(f"/v1/public/scores/{LIVING}")
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    text = (await lookup_client.get("/metrics", headers=scrape)).text
    assert 'route="/v1/public/scores/{cnic}"' in text
    assert "nser_http_request_duration_seconds_bucket" in text
    assert LIVING not in text


@settings(deadline=None)
@given(st.text(max_size=20))
def test_parse_cnic_accepts_only_ascii_cnics(text: str) -> None:
    try:
        parsed = parse_cnic(text)
    except ValueError:
        return
    assert len(parsed) == 13
    assert all(c in "0123456789" for c in parsed)
    assert text in (parsed, dashed(parsed))


@settings(deadline=None)
@given(st.from_regex(r"\A[0-9]{13}\Z"), st.booleans())
def test_parse_cnic_round_trip(digits: str, with_dashes: bool) -> None:
    assert parse_cnic(dashed(digits) if with_dashes else digits) == digits
    assert mask_cnic(digits) == f"{digits[:5]}-*******-{digits[12]}"
