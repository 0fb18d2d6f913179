"""Custom analysis (category ii): a protected cross-tab, stored and read again by its id."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from disclosure_attack import Key, assert_open, listed_units, rounded, table_answer
from partner_helpers import bearer, create_partner, create_staff, get_token

URL = "/v1/partner/analysis"
THRESHOLD = 10
BASE = 5
GEOGRAPHY = {"province", "division", "district", "tehsil", "union_council"}


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def province(db: asyncpg.Connection) -> str:
    code: str = await db.fetchval(
        "SELECT province_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    return code


@pytest.fixture(scope="module")
async def education_auth(pclient: httpx.AsyncClient, seeded_url: str) -> dict[str, str]:
    """A partner granted the education dimension (and not land, disability...)."""
    return (await _partner(pclient, seeded_url, dimensions="education"))[1]


async def _partner(
    c: httpx.AsyncClient, url: str, **opts: Any
) -> tuple[dict[str, str], dict[str, str]]:
    p = create_partner(url, categories="i,ii", **opts)
    return p, bearer(await get_token(c, p["client_id"], p["client_secret"]))


def _attack(body: dict[str, Any], truth: dict[Key, int] | None = None) -> int:
    """The adversary of disclosure_attack on the whole answer: no withheld household count
    may be narrowed to less than the threshold from the published cells and margins (their
    exact values when ``truth``, the interior's true households, is given; else only the
    rounded ones). Returns how many withheld cells it attacked."""
    assert body["disclosure"]["suppressed_below"] == THRESHOLD
    assert body["disclosure"]["rounding_base"] == BASE
    dims = [*body["request"]["rows"], *body["request"].get("columns", [])]
    answer = table_answer([*body["cells"], *body["margins"]], dims)
    geography = [i for i, d in enumerate(dims) if d in GEOGRAPHY]
    withheld = assert_open(
        answer, threshold=THRESHOLD, base=BASE, truth=truth, lower=listed_units(answer, geography)
    )
    assert len(withheld) == body["disclosure"]["suppressed_cells"]
    return len(withheld)


async def test_cross_tab_matches_sql_stored_and_read_again(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, province: str
) -> None:
    p, auth = await _partner(pclient, seeded_url)
    request = {
        "rows": ["district"],
        "columns": ["poverty_band"],
        "measures": ["households", "members", "mean_pmt_score", "share_below"],
        "cut_off": 32,
        "filters": {"province": [province], "score_max": 60},
    }
    r = await pclient.post(URL, json=request, headers=auth)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {
        "analysis_id",
        "query_id",
        "computed_at",
        "registry_version",
        "request",
        "cells",
        "margins",
        "disclosure",
    }
    assert r.headers["location"] == f"{URL}/{body['analysis_id']}"
    assert body["request"]["filters"]["province"] == [province]
    truth = {
        (row[0], row[1]): row
        for row in await db.fetch(
            """SELECT district_code, poverty_band, count(*) AS households,
                      sum((SELECT count(*) FROM members m
                            WHERE m.household_id = h.id AND m.deceased_on IS NULL)) AS members,
                      avg(pmt_score)::float8 AS mean,
                      (count(*) FILTER (WHERE pmt_score < 32))::float8 / count(*) AS share
                 FROM households h WHERE province_code = $1 AND pmt_score <= 60
                GROUP BY 1, 2""",
            province,
        )
    }
    districts = {k[0] for k in truth}
    assert len(body["cells"]) == len(districts) * 5
    published = 0
    for cell in body["cells"]:
        assert set(cell) == {
            "district",
            "poverty_band",
            "households",
            "members",
            "mean_pmt_score",
            "share_below",
        }
        row = truth.get((cell["district"], cell["poverty_band"]))
        if cell["households"] is None:
            assert cell["mean_pmt_score"] is None
            continue
        assert row is not None
        published += 1
        assert row["households"] >= THRESHOLD
        assert cell["households"] == rounded(row["households"], BASE)
        assert cell["members"] == rounded(row["members"], BASE)
        assert cell["mean_pmt_score"] == pytest.approx(row["mean"], abs=0.006)
        # A band lies wholly on one side of the cut-off: its share is withheld (dominance).
        assert cell["share_below"] is None
    assert published > 0
    grand = body["margins"][-1]
    assert grand["district"] is grand["poverty_band"] is None
    total = sum(row["households"] for row in truth.values())
    assert grand["households"] == rounded(total, BASE)
    assert _attack(body, {key: row["households"] for key, row in truth.items()}) > 0
    below = await db.fetchval(
        "SELECT count(*) FROM households WHERE province_code = $1 AND pmt_score < 32", province
    )
    assert grand["share_below"] == pytest.approx(below / total, abs=0.0006)

    # Stored: the same answer again by its id, for the same agreement only.
    again = await pclient.get(f"{URL}/{body['analysis_id']}", headers=auth)
    assert again.status_code == 200, again.text
    assert again.json() == body
    stored = await db.fetchrow(
        "SELECT * FROM analysis_results WHERE id = $1::uuid", body["analysis_id"]
    )
    assert stored is not None
    assert str(stored["agreement_id"]) == p["agreement_id"]
    assert stored["client_id"] == p["client_id"]
    assert stored["registry_version"] == body["registry_version"]
    assert stored["households"] == total
    _, other = await _partner(pclient, seeded_url)
    r = await pclient.get(f"{URL}/{body['analysis_id']}", headers=other)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert (await pclient.get(f"{URL}/{uuid.uuid4()}", headers=auth)).status_code == 404
    assert (await pclient.get(f"{URL}/not-a-uuid", headers=auth)).status_code == 422

    # Both audited, with the households and members in scope.
    audits = await db.fetch(
        "SELECT * FROM audit_log WHERE client_id = $1 ORDER BY id", p["client_id"]
    )
    assert [a["endpoint"] for a in audits] == [
        "POST /v1/partner/analysis",
        "GET /v1/partner/analysis/{analysis_id}",
    ]
    assert all(a["households"] == total for a in audits)
    assert audits[0]["dimensions"] == ["district", "poverty_band"]
    assert json.loads(audits[1]["filters"])["analysis_id"] == body["analysis_id"]


async def test_member_dimensions_and_measures(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, province: str
) -> None:
    _, auth = await _partner(pclient, seeded_url, dimensions="education")
    request = {
        "rows": ["gender"],
        "columns": ["education"],
        "measures": ["households"],
        "filters": {"province": [province]},
    }
    r = await pclient.post(URL, json=request, headers=auth)
    assert r.status_code == 201, r.text
    truth = {
        (row[0], row[1]): row[2]
        for row in await db.fetch(
            """SELECT m.gender, coalesce(m.education, 'not_recorded'), count(DISTINCT h.id)
                 FROM households h JOIN members m ON m.household_id = h.id
                  AND m.deceased_on IS NULL
                WHERE h.province_code = $1 GROUP BY 1, 2""",
            province,
        )
    }
    shown = 0
    for cell in r.json()["cells"]:
        assert set(cell) == {"gender", "education", "households"}
        if cell["households"] is not None:
            shown += 1
            h = truth[(cell["gender"], cell["education"])]
            assert h >= THRESHOLD
            assert cell["households"] == rounded(h, BASE)
    assert shown > 0
    _attack(r.json(), truth)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"rows": ["district"], "colour": "red"}, 422, "colour"),
        ({"rows": ["district"], "filters": {"distrct": ["PK604"]}}, 422, "distrct"),
        ({"rows": []}, 422, "rows"),
        ({"columns": ["gender"]}, 422, "rows"),
        ({"rows": ["district"], "measures": ["median"]}, 422, "measures"),
        ({"rows": ["district"], "measures": ["share_below"]}, 422, "cut_off"),
        ({"rows": ["district"], "columns": ["shoe_size"]}, 422, "shoe_size"),
        ({"rows": ["village"]}, 422, "village"),
        ({"rows": ["district"], "columns": ["land"]}, 403, "land"),
        ({"rows": ["district"], "columns": ["disability"]}, 403, "disability"),
        ({"rows": ["district"], "columns": ["district"]}, 422, "twice"),
        ({"rows": ["district"], "filters": {"score_max": 101}}, 422, "score_max"),
        ({"rows": ["district"], "filters": {"district": ["PK999"]}}, 422, "PK999"),
    ],
)
async def test_refusals(
    pclient: httpx.AsyncClient,
    education_auth: dict[str, str],
    body: dict[str, Any],
    status: int,
    words: str,
) -> None:
    r = await pclient.post(URL, json=body, headers=education_auth)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert words in r.text


async def test_geography_and_scope(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    row = await db.fetchrow(
        "SELECT district_code, count(*) FROM households GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    )
    assert row is not None
    code, households = row
    _, auth = await _partner(pclient, seeded_url, geo=code)
    r = await pclient.post(URL, json={"rows": ["tehsil"]}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["margins"][-1]["households"] == rounded(households, BASE)
    _attack(r.json())  # from the rounded answer alone
    other = await db.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 LIMIT 1", code
    )
    r = await pclient.post(
        URL, json={"rows": ["tehsil"], "filters": {"district": [other]}}, headers=auth
    )
    assert r.status_code == 403
    assert other in r.json()["detail"]
    assert (await pclient.post(URL, json={"rows": ["district"]})).status_code == 401
    r = await pclient.post(
        URL, content=b"x" * (17 * 1024), headers={**auth, "content-type": "application/json"}
    )
    assert r.status_code == 413
    p = create_partner(seeded_url, categories="i")
    auth = bearer(await get_token(pclient, p["client_id"], p["client_secret"]))
    assert (await pclient.post(URL, json={"rows": ["district"]}, headers=auth)).status_code == 403


# Each kind of table against SQL written apart from the service's: household dimensions
# (household composition: a household's living members), member dimensions (a household
# counts once in each of its groups; age brackets from the age in years), both together,
# and the member-type filter. The truth is per household or per member, grouped here.
_AGE_BOUNDS = ((5, "0-4"), (10, "5-9"), (15, "10-14"), (18, "15-17"), (25, "18-24"))
_AGE_BOUNDS += ((35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))


def _bracket(age: int) -> str:
    return next((label for below, label in _AGE_BOUNDS if age < below), "65+")


def _composition(living: int) -> str:
    return str(living) if living < 9 else "9+"


_MEMBER_ROWS = """
    SELECT h.id, h.poverty_band, h.district_code, m.gender, m.marital_status,
           date_part('year', age(current_date, m.date_of_birth))::int AS age,
           m.date_of_birth > current_date - interval '18 years' AS child,
           (SELECT count(*) FROM members l
             WHERE l.household_id = h.id AND l.deceased_on IS NULL) AS living
      FROM households h LEFT JOIN members m ON m.household_id = h.id AND m.deceased_on IS NULL
     WHERE h.province_code = $1"""


@pytest.mark.parametrize(
    ("rows", "columns", "member_type"),
    [
        (["poverty_band"], ["household_composition"], []),
        (["gender"], ["age_bracket"], ["children"]),
        (["household_composition"], ["gender"], []),
        (["district"], ["marital_status"], ["children"]),
    ],
)
async def test_every_kind_of_table_matches_sql(
    pclient: httpx.AsyncClient,
    seeded_url: str,
    db: asyncpg.Connection,
    province: str,
    rows: list[str],
    columns: list[str],
    member_type: list[str],
) -> None:
    _, auth = await _partner(pclient, seeded_url)
    request = {
        "rows": rows,
        "columns": columns,
        "measures": ["households", "members"],
        "filters": {"province": [province], "member_type": member_type},
    }
    r = await pclient.post(URL, json=request, headers=auth)
    assert r.status_code == 201, r.text
    body = r.json()
    dims = [*rows, *columns]
    records = await db.fetch(_MEMBER_ROWS, province)
    if member_type:  # households with a living child, and all their living members
        keep = {rec["id"] for rec in records if rec["child"]}
        records = [rec for rec in records if rec["id"] in keep]

    def value(rec: asyncpg.Record, dim: str) -> str:
        return {
            "poverty_band": lambda: rec["poverty_band"] or "unscored",
            "district": lambda: rec["district_code"],
            "household_composition": lambda: _composition(rec["living"]),
            "gender": lambda: rec["gender"],
            "marital_status": lambda: rec["marital_status"],
            "age_bracket": lambda: _bracket(rec["age"]),
        }[dim]()

    member_dims = {"gender", "age_bracket", "marital_status"} & set(dims)
    households: dict[tuple[str, ...], set[int]] = {}
    members: dict[tuple[str, ...], int] = {}
    for rec in records:
        if rec["gender"] is None and member_dims:
            continue  # no living member: in no member group
        key = tuple(value(rec, d) for d in dims)
        households.setdefault(key, set()).add(rec["id"])
        members[key] = members.get(key, 0) + (rec["gender"] is not None)
    shown = 0
    for cell in body["cells"]:
        key = tuple(cell[d] for d in dims)
        if cell["households"] is None:
            continue
        shown += 1
        assert len(households[key]) >= THRESHOLD, key
        assert cell["households"] == rounded(len(households[key]), BASE), key
        assert cell["members"] == rounded(members[key], BASE), key
    assert shown > 0
    assert {tuple(c[d] for d in dims) for c in body["cells"]} >= set(households)
    if not member_dims:  # household tables: the grand total is every selected household
        total = len({rec["id"] for rec in records})
        assert body["margins"][-1]["households"] == rounded(total, BASE)


# -- the M&E team's analyses (category ii for the registry's staff) -------------------------

STAFF_URL = "/v1/staff/analysis"


async def _staff(c: httpx.AsyncClient, url: str, role: str) -> tuple[str, dict[str, str]]:
    made = create_staff(url, f"Analysis {role}", role)
    return made["client_id"], bearer(await get_token(c, made["client_id"], made["client_secret"]))


async def test_the_me_team_gets_analyses_protected_exactly_as_a_partners(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    me_id, me = await _staff(pclient, seeded_url, "me")
    # Districts by band over the whole country: plenty of cells under the threshold.
    request = {"rows": ["district"], "columns": ["poverty_band"], "filters": {"score_max": 45}}
    r = await pclient.post(STAFF_URL, json=request, headers=me)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"{STAFF_URL}/{body['analysis_id']}"
    truth = {
        (row[0], row[1]): row[2]
        for row in await db.fetch(
            """SELECT district_code, poverty_band, count(*) FROM households
                WHERE pmt_score <= 45 GROUP BY 1, 2"""
        )
    }
    suppressed = 0
    for cell in body["cells"]:
        true = truth.get((cell["district"], cell["poverty_band"]), 0)
        if cell["households"] is None:
            suppressed += 1
            continue
        assert true >= THRESHOLD
        assert cell["households"] == rounded(true, BASE)
    # Small cells withheld, and not recoverable from the margins.
    assert any(0 < n < THRESHOLD for n in truth.values())
    assert suppressed > 0
    assert body["disclosure"]["suppressed_cells"] >= suppressed
    assert _attack(body, truth) > 0

    # The same question from a partner whose agreement covers the whole country: the same
    # published table, cell for cell (the same control, not a looser one).
    _, partner = await _partner(pclient, seeded_url)
    theirs = await pclient.post(URL, json=request, headers=partner)
    assert theirs.status_code == 201, theirs.text
    for key in ("request", "cells", "margins", "disclosure", "registry_version"):
        assert theirs.json()[key] == body[key], key

    # Stored for the team: another M&E member reads it again; a partner cannot.
    other_id, other = await _staff(pclient, seeded_url, "me")
    again = await pclient.get(f"{STAFF_URL}/{body['analysis_id']}", headers=other)
    assert again.status_code == 200, again.text
    assert again.json() == body
    assert (await pclient.get(f"{URL}/{body['analysis_id']}", headers=partner)).status_code == 404
    # ... nor does the team read a partner's.
    r = await pclient.get(f"{STAFF_URL}/{theirs.json()['analysis_id']}", headers=me)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    stored = await db.fetchrow(
        "SELECT agreement_id, client_id FROM analysis_results WHERE id = $1::uuid",
        body["analysis_id"],
    )
    assert stored is not None
    assert stored["agreement_id"] is None
    assert stored["client_id"] == me_id

    # Audited with the staff member's id, as a staff access with no agreement.
    audits = await db.fetch(
        """SELECT actor_type, client_id, agreement_id, endpoint, households, dimensions
             FROM audit_log WHERE client_id = ANY($1::text[]) ORDER BY id""",
        [me_id, other_id],
    )
    assert [(a["client_id"], a["endpoint"]) for a in audits] == [
        (me_id, "POST /v1/staff/analysis"),
        (other_id, "GET /v1/staff/analysis/{analysis_id}"),
    ]
    assert {a["actor_type"] for a in audits} == {"staff"}
    assert all(a["agreement_id"] is None for a in audits)
    assert audits[0]["households"] == sum(truth.values())
    assert audits[0]["dimensions"] == ["district", "poverty_band"]


async def test_only_the_me_team_asks_and_only_on_its_own_path(
    pclient: httpx.AsyncClient, seeded_url: str
) -> None:
    request = {"rows": ["province"]}
    for role in ("officer", "committee", "secretary", "admin"):
        _, auth = await _staff(pclient, seeded_url, role)
        r = await pclient.post(STAFF_URL, json=request, headers=auth)
        assert r.status_code == 403, (role, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "analysis:read" in r.json()["detail"]
    _, me = await _staff(pclient, seeded_url, "me")
    r = await pclient.post(URL, json=request, headers=me)  # the partners' path
    assert r.status_code == 403
    assert "/v1/staff/analysis" in r.json()["detail"]
    _, partner = await _partner(pclient, seeded_url)
    r = await pclient.post(STAFF_URL, json=request, headers=partner)
    assert r.status_code == 403
    assert "/v1/partner/analysis" in r.json()["detail"]
    assert (await pclient.post(STAFF_URL, json=request)).status_code == 401
    # The locked dimensions the service does not grant the staff are refused, as a
    # partner's are when its agreement does not grant them.
    r = await pclient.post(STAFF_URL, json={"rows": ["land"]}, headers=me)
    assert r.status_code == 403
    assert "land" in r.text


async def test_locked_dimensions_the_service_grants_the_staff(seeded_url: str) -> None:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", staff_analysis_dimensions="education"
    )
    async for c in open_client(settings):
        _, me = await _staff(c, seeded_url, "me")
        r = await c.post(STAFF_URL, json={"rows": ["gender"], "columns": ["education"]}, headers=me)
        assert r.status_code == 201, r.text
        assert {"gender", "education", "households", "members"} == set(r.json()["cells"][0])
        r = await c.post(STAFF_URL, json={"rows": ["disability"]}, headers=me)
        assert r.status_code == 403


async def test_the_team_is_one_recipient_for_differencing(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    # Two score_max values a few households apart (fewer than the threshold) in a district.
    row = await db.fetchrow(
        """WITH d AS (SELECT district_code FROM households GROUP BY 1
                      ORDER BY count(*) DESC LIMIT 1 OFFSET 1),
                s AS (SELECT DISTINCT h.pmt_score FROM households h JOIN d USING (district_code)
                       WHERE h.pmt_score IS NOT NULL)
           SELECT (SELECT district_code FROM d) AS district,
                  (min(pmt_score) FILTER (WHERE pmt_score > 28) + 0.005)::float8 AS low
             FROM s"""
    )
    assert row is not None
    district, low = row["district"], row["low"]
    scores = [
        float(s["pmt_score"])
        for s in await db.fetch(
            """SELECT pmt_score FROM households WHERE district_code = $1 AND pmt_score > $2
                ORDER BY pmt_score LIMIT 3""",
            district,
            low,
        )
    ]
    high = scores[-1] + 0.005  # at most 3 more households than low selects

    def body(score_max: float) -> dict[str, Any]:
        return {
            "rows": ["poverty_band"],
            "filters": {"district": [district], "score_max": score_max},
        }

    _, first = await _staff(pclient, seeded_url, "me")
    _, second = await _staff(pclient, seeded_url, "me")
    asked = await pclient.post(STAFF_URL, json=body(low), headers=first)
    assert asked.status_code == 201, asked.text
    # Another member of the team asking the near population is refused: one log for all.
    near = await pclient.post(STAFF_URL, json=body(high), headers=second)
    assert near.status_code == 409, near.text
    assert f"earlier query {asked.json()['query_id']}" in near.json()["detail"]
    # A partner's log is its own: its first question is answered.
    _, partner = await _partner(pclient, seeded_url)
    assert (await pclient.post(URL, json=body(high), headers=partner)).status_code == 201
