"""What-if simulations over HTTP against a direct computation of the same report.

The simulation reads the registry in ranges of household ids on two connections, with each
member condition a rule reads as a flag of one member aggregate (no ``EXISTS`` per
household). Here every household is judged on its own instead: its candidate score by the
Python scorer (``pmt.score``, one household at a time), each rule by the SQL the
programme lists use (``rules.eligible_sql``, its conditions as ``EXISTS``), the candidate
rule over the household with its candidate score. The two must give the same report, on a
registry with unscored households and households without a living member, read as one
range or as many.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from request_helpers import staff_by_role

from app.services.pmt import model as pmt
from app.services.programmes import rules
from app.services.targeting import simulation

CANDIDATE = "eq-2027"
CANDIDATE_WEIGHTS = {**pmt.ILLUSTRATIVE.weights, "television": 5.0, "household_size": -0.7}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1500, seed=23) as u:
        yield u


@pytest.fixture(scope="module")
async def conn(url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(url)
    yield c
    await c.close()


@pytest.fixture(scope="module")
async def tclient(url: str, conn: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    # Registry edge cases before the service starts: unscored households, households
    # whose members have all died, and a candidate model.
    await conn.execute(
        """UPDATE households SET pmt_score = NULL, poverty_band = NULL, pmt_version = NULL
            WHERE id % 97 = 0"""
    )
    await conn.execute(
        """UPDATE members SET deceased_on = date_of_birth + 1
            WHERE household_id IN (SELECT id FROM households WHERE id % 89 = 0)"""
    )
    await conn.execute(
        """INSERT INTO pmt_models (version, description, intercept, weights, bands,
                                   illustrative, is_current)
           VALUES ($1, 'test', 21.0, $2::jsonb, $3::jsonb, true, false)""",
        CANDIDATE,
        json.dumps(CANDIDATE_WEIGHTS),
        json.dumps(pmt.ILLUSTRATIVE.bands_json()),
    )
    settings = make_settings(url, in_process_workers=1)
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def me(tclient: httpx.AsyncClient, url: str) -> dict[str, str]:
    return (await staff_by_role(tclient, url, prefix="Equivalence"))["me"]


async def _simulate(
    tclient: httpx.AsyncClient, who: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await tclient.post("/v1/staff/simulations", json=body, headers=who)
    assert response.status_code == 202, response.text
    path = f"/v1/staff/simulations/{response.json()['simulation_id']}"
    for _ in range(600):
        answer: dict[str, Any] = (await tclient.get(path, headers=who)).json()
        if answer["status"] in ("done", "failed"):
            assert answer["status"] == "done", answer
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError("simulation did not finish")


async def _candidate_scores(
    conn: asyncpg.Connection, model: pmt.PmtModel
) -> tuple[list[int], list[Decimal], list[str]]:
    """Every household scored one at a time by the Python twin of the SQL score."""
    members: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for m in await conn.fetch("SELECT * FROM members"):
        members[m["household_id"]].append(dict(m))
    ids, scores, bands = [], [], []
    for h in await conn.fetch("SELECT * FROM households ORDER BY id"):
        value, band = pmt.score(model, dict(h), members[h["id"]])
        ids.append(h["id"])
        scores.append(Decimal(repr(value)))
        bands.append(band)
    return ids, scores, bands


async def _expected(
    conn: asyncpg.Connection, spec: simulation.SimulationSpec
) -> list[dict[str, Any]]:
    """The grouped rows, household by household in SQL with each condition an EXISTS."""
    params: list[object] = []

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if spec.candidate_model is None:
        candidate = "SELECT id, pmt_score AS score, poverty_band AS band FROM households"
    else:
        ids, scores, bands = await _candidate_scores(conn, spec.candidate_model)
        candidate = (
            f"SELECT * FROM unnest({bind(ids)}::bigint[], {bind(scores)}::numeric[], "
            f"{bind(bands)}::text[]) AS c(id, score, band)"
        )
    live = rules.eligible_sql(spec.live_rule, bind)
    cand = rules.eligible_sql(spec.candidate_rule, bind)
    sql = f"""
        SELECT h.province_code, h.district_code,
               coalesce(h.poverty_band, 'unscored') AS live_band,
               coalesce(c.band, 'unscored') AS cand_band,
               coalesce({live}, false) AS live_e,
               coalesce((SELECT {cand} FROM (SELECT h.id, h.province_code, h.division_code,
                                                    h.district_code, h.tehsil_code,
                                                    h.union_council_code, h.village_code,
                                                    c.score AS pmt_score) h), false) AS cand_e,
               (SELECT count(*) FROM members m
                 WHERE m.household_id = h.id AND m.deceased_on IS NULL) AS members,
               (SELECT count(*) FROM members m
                 WHERE m.household_id = h.id AND {rules.recipient_sql("m")}) AS recipients
          FROM households h JOIN ({candidate}) c ON c.id = h.id"""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in await conn.fetch(sql, *params):
        into = groups[tuple(r)[:6]]
        into[0] += 1
        into[1] += r["members"]
        into[2] += r["recipients"]
    keys = ("province_code", "district_code", "live_band", "cand_band", "live_e", "cand_e")
    return [
        {**dict(zip(keys, key, strict=True)), "households": h, "members": m, "recipients": n}
        for key, (h, m, n) in groups.items()
    ]


CASH = {
    "unit": "family",
    "cut_off": 32,
    "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 37}],
}
CASES = {
    "rules": {
        "live_rule": {"cut_off": 30, "requires": ["has_child"]},
        "rule": {
            **CASH,
            "requires": ["has_school_age_child"],
            "geography": ["PK6", "PK2", "PK101"],
        },
        "transfer_amount": "2500",
    },
    "model and rule": {
        "live_rule": CASH,
        "pmt_version": CANDIDATE,
        "rule": {
            "cut_off": 40,
            "raised_cut_offs": [
                {"when": "has_female_head", "cut_off": 45},
                {"when": "has_elderly_member", "cut_off": 50},
            ],
            "requires": ["has_child_under_5"],
        },
        "transfer_amount": "1000.50",
    },
    "model": {
        "live_rule": {"unit": "family", "cut_off": 35, "requires": ["has_ever_married_woman"]},
        "pmt_version": CANDIDATE,
        "transfer_amount": "700",
        "poor_bands": ["ultra_poor", "very_poor"],
    },
}


@pytest.mark.parametrize("chunk", [simulation.CHUNK_IDS, 97])
@pytest.mark.parametrize("case", list(CASES))
async def test_the_simulation_equals_a_household_by_household_computation(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    me: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    chunk: int,
) -> None:
    monkeypatch.setattr(simulation, "CHUNK_IDS", chunk)  # 97: many ranges, two readers
    answer = await _simulate(tclient, me, CASES[case])
    spec = await simulation.resolve(conn, answer["request"])
    rows = await _expected(conn, spec)
    codes = sorted({r["province_code"] for r in rows} | {r["district_code"] for r in rows})
    names = {
        r["code"]: r["name_en"]
        for r in await conn.fetch(
            "SELECT code, name_en FROM geo_units WHERE code = ANY($1::text[])", codes
        )
    }
    expected = simulation.summarize(spec, rows, names)
    result = answer["result"]
    for key in ("registry_version", "computed_at", "seconds"):
        del result[key]
    assert result == json.loads(json.dumps(expected))
    # The report is not empty on either side, and the edge cases are in the registry.
    assert result["households_total"] == await conn.fetchval("SELECT count(*) FROM households")
    assert result["entering"]["households"] > 0 or result["leaving"]["households"] > 0
    assert await conn.fetchval(
        """SELECT count(*) FROM households h WHERE NOT EXISTS (
               SELECT 1 FROM members m WHERE m.household_id = h.id AND m.deceased_on IS NULL)"""
    )
    assert any(b["band"] == "unscored" for b in result["by_band"])
