"""Differencing: two tables whose populations differ by one household must not give it away.

The attack: within a district, two ``score_max`` values bracket one household's PMT score,
so the same table asked with each differs by exactly that household; subtracting the
published cells would give its poverty band (and, through a mean, its score). The second
query is refused (409) whichever product asks it, and whenever it is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_partner, get_token

SUMMARIES = "/v1/partner/summaries"
MAPS = "/v1/partner/maps/households"
ANALYSIS = "/v1/partner/analysis"
THRESHOLD = 10


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def target(db: asyncpg.Connection) -> asyncpg.Record:
    """A household of the biggest district whose score no other household there has, and
    the next lower score in the district: ``score_max`` just above each (``score``,
    ``lower``) selects the same households but that one."""
    row = await db.fetchrow(
        """WITH d AS (SELECT district_code FROM households GROUP BY 1
                      ORDER BY count(*) DESC LIMIT 1),
                s AS (SELECT h.id, h.pmt_score, h.poverty_band, h.district_code,
                             count(*) OVER (PARTITION BY h.pmt_score) AS same,
                             lag(h.pmt_score) OVER (ORDER BY h.pmt_score) AS lower
                        FROM households h JOIN d USING (district_code)
                       WHERE h.pmt_score IS NOT NULL)
           SELECT district_code, id, poverty_band,
                  -- Half-way to the next score: a float that is no score's binary neighbour.
                  (pmt_score + 0.005)::float8 AS score, (lower + 0.005)::float8 AS lower
             FROM s WHERE same = 1 AND lower IS NOT NULL
            ORDER BY abs(pmt_score - 30), id LIMIT 1"""
    )
    assert row is not None
    below = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2",
        row["district_code"],
        row["lower"],
    )
    upto = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2",
        row["district_code"],
        row["score"],
    )
    assert upto == below + 1  # the two filters differ by exactly the one household
    assert below >= 5 * THRESHOLD
    return row


async def _partner(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    p = create_partner(url, categories="i,ii,vii")
    return bearer(await get_token(c, p["client_id"], p["client_secret"]))


def _summary_params(t: asyncpg.Record, score_max: float) -> dict[str, Any]:
    return {"group_by": "poverty_band", "district": t["district_code"], "score_max": score_max}


def _analysis_body(t: asyncpg.Record, score_max: float) -> dict[str, Any]:
    return {
        "rows": ["poverty_band"],
        "measures": ["households", "members", "mean_pmt_score"],
        "filters": {"district": [t["district_code"]], "score_max": score_max},
    }


def _refused_after(r: httpx.Response, query_id: int) -> None:
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert detail.startswith(
        f"differs from your earlier query {query_id} by fewer than {THRESHOLD} households"
    ), detail
    assert "rows" not in r.json()


async def test_summaries_second_query_refused(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert first.status_code == 200, first.text
    answer = first.json()
    query_id = answer["query_id"]
    cell = next(c for c in answer["rows"] if c["poverty_band"] == target["poverty_band"])
    true = await db.fetchval(
        """SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2
              AND poverty_band = $3""",
        target["district_code"],
        target["lower"],
        target["poverty_band"],
    )
    assert cell["households"] in (None, (2 * true + 5) // 10 * 5)

    second = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    _refused_after(second, query_id)
    # The same question again is answered, identically (nothing new is learnt).
    again = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert again.status_code == 200
    assert again.json()["rows"] == answer["rows"]
    assert again.json()["margins"] == answer["margins"]
    # A population that differs by the threshold or more is answered; the one-household
    # difference stays refused after it.
    whole = await pclient.get(
        SUMMARIES,
        params={"group_by": "poverty_band", "district": target["district_code"]},
        headers=auth,
    )
    assert whole.status_code == 200, whole.text
    third = await pclient.get(
        SUMMARIES,
        params={**_summary_params(target, target["score"]), "group_by": "gender"},
        headers=auth,
    )
    _refused_after(third, again.json()["query_id"])  # nor does another grouping
    logged = await db.fetch(
        """SELECT filters->>'score_max' AS score_max FROM aggregate_queries
            WHERE agreement_id = (SELECT agreement_id FROM aggregate_queries WHERE id = $1)
            ORDER BY id""",
        query_id,
    )
    # Refused queries are neither answered nor logged.
    assert [row["score_max"] for row in logged] == [
        str(target["lower"]),
        str(target["lower"]),
        None,
    ]


async def test_analysis_second_query_refused(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.post(ANALYSIS, json=_analysis_body(target, target["lower"]), headers=auth)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert any(c["households"] is not None for c in answer["cells"])
    second = await pclient.post(
        ANALYSIS, json=_analysis_body(target, target["score"]), headers=auth
    )
    _refused_after(second, answer["query_id"])
    # The first analysis is still there, unchanged.
    stored = await pclient.get(f"{ANALYSIS}/{answer['analysis_id']}", headers=auth)
    assert stored.json() == answer


async def test_across_products(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert first.status_code == 200
    second = await pclient.post(
        ANALYSIS, json=_analysis_body(target, target["score"]), headers=auth
    )
    _refused_after(second, first.json()["query_id"])


async def test_concurrent_queries_cannot_both_pass(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    answers = await asyncio.gather(
        pclient.get(SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth),
        pclient.get(SUMMARIES, params=_summary_params(target, target["score"]), headers=auth),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]


async def test_each_agreement_has_its_own_log(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    one, two = await _partner(pclient, seeded_url), await _partner(pclient, seeded_url)
    a = await pclient.get(SUMMARIES, params=_summary_params(target, target["lower"]), headers=one)
    b = await pclient.get(SUMMARIES, params=_summary_params(target, target["score"]), headers=two)
    assert a.status_code == b.status_code == 200


async def test_smaller_population_second_is_refused_too(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    assert first.status_code == 200, first.text
    second = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    _refused_after(second, first.json()["query_id"])


async def test_maps_are_under_the_same_control(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    """Two hexagon maps bracketing one household's score would subtract like two tables."""
    auth = await _partner(pclient, seeded_url)
    params = {"district": target["district_code"], "resolution": 7}
    first = await pclient.get(MAPS, params={**params, "score_max": target["lower"]}, headers=auth)
    assert first.status_code == 200, first.text
    second = await pclient.get(MAPS, params={**params, "score_max": target["score"]}, headers=auth)
    assert second.status_code == 409, second.text
    assert "differs from your earlier query" in second.json()["detail"]
    summary = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    assert summary.status_code == 409  # nor through another product


# -- what the control compares with: every population answered, as it was answered ----------


async def _grid(db: asyncpg.Connection, points: int, apart: int) -> list[float]:
    """``points`` scores, each half-way between two scores of the registry, with at least
    ``apart`` scored households between consecutive ones (none on a point)."""
    scores = [
        float(row["s"])
        for row in await db.fetch(
            "SELECT pmt_score AS s FROM households WHERE pmt_score IS NOT NULL ORDER BY 1"
        )
    ]
    grid: list[float] = []
    i = apart
    while len(grid) < points:
        while i < len(scores) and scores[i] == scores[i - 1]:
            i += 1
        assert i < len(scores), "the registry is too small for the grid"
        grid.append((scores[i - 1] + scores[i]) / 2)
        i += apart
    return grid


async def test_two_thousand_earlier_queries_do_not_change_the_result(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, target: asyncpg.Record
) -> None:
    """The query a household away from the agreement's first one is refused however many
    queries came between (no window, no "latest N": the oldest is not forgotten)."""
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert first.status_code == 200, first.text
    # 2,000 country-wide score windows between points of a grid 3 × THRESHOLD households
    # apart: any two differ by at least that many, and each from the first query by more.
    grid = await _grid(db, 64, 3 * THRESHOLD)
    windows = [(low, high) for i, low in enumerate(grid) for high in grid[i + 1 :]][:2000]
    assert len(windows) == 2000
    for low, high in windows:
        r = await pclient.get(
            SUMMARIES,
            params={"group_by": "province", "score_min": low, "score_max": high},
            headers=auth,
        )
        assert r.status_code == 200, (low, high, r.text)
    second = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    _refused_after(second, first.json()["query_id"])


async def test_compared_with_the_population_answered_not_as_it_is_now(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, target: asyncpg.Record
) -> None:
    """A household leaves a population after the partner was given a table of it; other
    filters that select exactly what remains would subtract to that household. Compared
    with the registry as it is now the two populations are equal; compared with what the
    partner holds, one household apart: refused."""
    auth = await _partner(pclient, seeded_url)
    place = await db.fetchrow(
        """SELECT province_code, district_code, count(*) AS n FROM households
            WHERE pmt_score <= 90 AND district_code <> $1
            GROUP BY 1, 2 ORDER BY 3 DESC, 2 LIMIT 1""",
        target["district_code"],
    )
    assert place is not None
    assert place["n"] >= 5 * THRESHOLD
    before = {"group_by": "poverty_band", "district": place["district_code"], "score_max": 90}
    first = await pclient.get(SUMMARIES, params=before, headers=auth)
    assert first.status_code == 200, first.text
    moved = await db.fetchrow(
        """SELECT id, pmt_score FROM households WHERE district_code = $1 AND pmt_score <= 90
            ORDER BY id LIMIT 1""",
        place["district_code"],
    )
    assert moved is not None
    await db.execute("UPDATE households SET pmt_score = 95 WHERE id = $1", moved["id"])
    try:
        # The same households as the first query's now, named with other filters.
        now = {**before, "province": place["province_code"]}
        same_now = await db.fetchval(
            "SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= 90",
            place["district_code"],
        )
        assert same_now == place["n"] - 1
        second = await pclient.get(SUMMARIES, params=now, headers=auth)
        _refused_after(second, first.json()["query_id"])
        # The first query's own filters again are answered (as documented, the registry's
        # own change between two identical queries is not covered).
        again = await pclient.get(SUMMARIES, params=before, headers=auth)
        assert again.status_code == 200, again.text
        # ... and from then on the other filters are the same population as an answered
        # one with other filters, which is no difference at all: still refused, because the
        # first answer is not forgotten.
        third = await pclient.get(SUMMARIES, params=now, headers=auth)
        assert third.status_code == 409
    finally:
        await db.execute(
            "UPDATE households SET pmt_score = $2 WHERE id = $1", moved["id"], moved["pmt_score"]
        )


async def test_more_near_sizes_than_can_be_compared_are_refused(
    pclient: httpx.AsyncClient,
    seeded_url: str,
    db: asyncpg.Connection,
    target: asyncpg.Record,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Populations of the same size, far apart: each is compared with the earlier ones of
    nearly its size. Past MAX_NEAR of those the query is refused, not compared with some."""
    from app.services.products import differencing

    monkeypatch.setattr(differencing, "MAX_NEAR", 3)
    auth = await _partner(pclient, seeded_url)
    scores = [
        float(row["pmt_score"])
        for row in await db.fetch(
            """SELECT pmt_score FROM households WHERE district_code = $1
                 AND pmt_score IS NOT NULL ORDER BY 1""",
            target["district_code"],
        )
    ]
    # Five disjoint score windows of the district holding exactly 2 × THRESHOLD households.
    size, windows, i = 2 * THRESHOLD, [], 0
    while len(windows) < 5:
        lo, hi = i, i + size
        assert hi < len(scores)
        if (lo == 0 or scores[lo - 1] < scores[lo]) and scores[hi - 1] < scores[hi]:
            below = scores[lo - 1] if lo else scores[lo] - 1
            windows.append(((below + scores[lo]) / 2, (scores[hi - 1] + scores[hi]) / 2))
            i = hi
        else:
            i += 1
    answers = [
        await pclient.get(
            SUMMARIES,
            params={
                "group_by": "poverty_band",
                "district": target["district_code"],
                "score_min": low,
                "score_max": high,
            },
            headers=auth,
        )
        for low, high in windows
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 409]
    assert (
        "more than 3 of your earlier queries selected nearly as many households"
        in (answers[-1].json()["detail"])
    )
