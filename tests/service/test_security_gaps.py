"""Controls the security map (docs/security.md) had listed without a test.

- a partner's score look-up of a CNIC outside its agreement's geography is the unknown
  CNIC's 404, word for word;
- a partner's own rate limit ends in 429 with ``Retry-After``, counted per client;
- no answer carries CORS headers, so no browser on another origin may read one;
- an unexpected exception is a problem+json 500 that carries none of its message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_partner, get_token

from app.main import create_app


@pytest.fixture(scope="module")
async def places(seeded_url: str) -> dict[str, str]:
    """A district, a living member's CNIC inside it and one outside it."""
    conn = await asyncpg.connect(seeded_url)
    try:
        district = await conn.fetchval(
            "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        sql = """SELECT m.cnic FROM members m JOIN households h ON h.id = m.household_id
                  WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL
                    AND (h.district_code = $1) = $2 ORDER BY m.id LIMIT 1"""
        inside = await conn.fetchval(sql, district, True)
        outside = await conn.fetchval(sql, district, False)
    finally:
        await conn.close()
    return {"district": district, "inside": inside, "outside": outside}


async def test_a_score_outside_the_geography_is_the_unknown_cnics_404(
    seeded_url: str, client: httpx.AsyncClient, places: dict[str, str]
) -> None:
    partner = create_partner(seeded_url, categories="iii", geo=places["district"])
    token = await get_token(client, partner["client_id"], partner["client_secret"])
    inside = await client.get(f"/v1/partner/scores/{places['inside']}", headers=bearer(token))
    assert inside.status_code == 200, inside.text
    outside = await client.get(f"/v1/partner/scores/{places['outside']}", headers=bearer(token))
    unknown = await client.get("/v1/partner/scores/1111111111111", headers=bearer(token))
    assert outside.status_code == unknown.status_code == 404
    assert outside.json()["detail"] == unknown.json()["detail"]
    assert places["outside"] not in outside.text


async def _client(url: str, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(url, **overrides)):
        yield c


async def test_a_partners_own_rate_limit_ends_in_429(
    seeded_url: str, places: dict[str, str]
) -> None:
    limited = create_partner(seeded_url, categories="iii", rate_limit="3/minute")
    other = create_partner(seeded_url, categories="iii")
    async for c in _client(seeded_url, rate_limit_storage="memory://"):
        token = await get_token(c, limited["client_id"], limited["client_secret"])
        path = f"/v1/partner/scores/{places['inside']}"
        statuses = [(await c.get(path, headers=bearer(token))).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        over = await c.get(path, headers=bearer(token))
        assert over.status_code == 429
        assert over.headers["content-type"] == "application/problem+json"
        assert 1 <= int(over.headers["retry-after"]) <= 60
        # The count is the client's: another partner is still answered.
        second = await get_token(c, other["client_id"], other["client_secret"])
        assert (await c.get(path, headers=bearer(second))).status_code == 200


async def test_no_answer_carries_cors_headers(
    client: httpx.AsyncClient, places: dict[str, str]
) -> None:
    origin = {"Origin": "https://evil.example"}
    answers = [
        await client.get(f"/v1/public/scores/{places['inside']}", headers=origin),
        await client.get("/v1/public/summaries", headers=origin),
        await client.options(
            f"/v1/public/scores/{places['inside']}",
            headers={**origin, "Access-Control-Request-Method": "GET"},
        ),
    ]
    for answer in answers:
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


async def test_an_unexpected_error_is_a_500_without_its_message(seeded_url: str) -> None:
    app = create_app(make_settings(seeded_url))
    secret = "secret-internal-detail 35202-1234567-1"

    @app.get("/v1/public/boom")
    async def boom() -> None:
        raise RuntimeError(secret)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
            answer = await c.get("/v1/public/boom")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    for leaked in ("secret", "35202", "RuntimeError", "Traceback"):
        assert leaked not in answer.text
    assert answer.json()["status"] == 500
