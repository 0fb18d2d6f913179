"""Score explanations and simulations over HTTP, on a registry of this module's own.

The module changes scores (a second model version re-scores part of the registry), so it
seeds a database of its own instead of the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from partner_helpers import bearer, create_partner, get_token
from request_helpers import staff_by_role

from app.services.pmt import model as pmt
from app.services.sharing.rules import LOCKED
from app.services.targeting import simulation as simulation_service

B_WEIGHTS = {name: w * 1.4 for name, w in pmt.ILLUSTRATIVE.weights.items()}
B_WEIGHTS["refrigerator"] = 9.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1200, seed=11) as u:
        yield u


@pytest.fixture(scope="module")
async def tclient(url: str) -> AsyncIterator[httpx.AsyncClient]:
    # The module reads a hundred explanations as one staff member: not a test of the limit.
    settings = make_settings(url, in_process_workers=1, staff_read_limits="100000/minute")
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def conn(url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(url)
    yield c
    await c.close()


@pytest.fixture(scope="module")
async def staff(tclient: httpx.AsyncClient, url: str) -> dict[str, dict[str, str]]:
    return await staff_by_role(tclient, url, prefix="Targeting")


@pytest.fixture(scope="module")
async def two_versions(conn: asyncpg.Connection) -> str:
    """Model "b-2027" current, and the first half of the households re-scored under it."""
    await conn.execute("UPDATE pmt_models SET is_current = false WHERE is_current")
    await conn.execute(
        """INSERT INTO pmt_models (version, description, intercept, weights, bands,
                                   illustrative, is_current)
           VALUES ('b-2027', 'test', -6.5, $1::jsonb, $2::jsonb, true, true)""",
        json.dumps(B_WEIGHTS),
        json.dumps(pmt.ILLUSTRATIVE.bands_json()),
    )
    model = await pmt.current_model(conn)
    low, high = await conn.fetchrow("SELECT min(id), max(id) FROM households")
    await pmt.rescore_range(conn, model, low, (low + high) // 2)
    return "b-2027"


def _total(answer: dict[str, Any]) -> Decimal:
    parts = [Decimal(repr(c["points"])) for c in answer["contributions"]]
    return (
        Decimal(repr(answer["intercept"]))
        + sum(parts, Decimal(0))
        + Decimal(repr(answer["bound_adjustment"]))
    )


async def test_contributions_sum_to_the_score_under_two_model_versions(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    rows = await conn.fetch(
        """(SELECT id, pmt_score::float8 AS s, pmt_version FROM households
             WHERE pmt_version = 'illustrative-2026.1' ORDER BY id DESC LIMIT 60)
           UNION ALL
           (SELECT id, pmt_score::float8, pmt_version FROM households
             WHERE pmt_version = $1 ORDER BY id LIMIT 60)""",
        two_versions,
    )
    assert {r["pmt_version"] for r in rows} == {"illustrative-2026.1", two_versions}
    clamped = 0
    for r in rows:
        response = await tclient.get(
            f"/v1/staff/households/{r['id']}/score-explanation", headers=staff["me"]
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["pmt_version"] == r["pmt_version"]
        assert answer["pmt_score"] == r["s"] == answer["registry_score"]
        assert answer["matches_registry"] is True
        assert _total(answer) == Decimal(repr(r["s"])), answer
        assert len(answer["contributions"]) == len(pmt.ILLUSTRATIVE.weights)
        clamped += answer["bound_adjustment"] != 0
        for c in answer["contributions"]:
            assert c["points"] == pytest.approx(c["weight"] * c["value"], abs=0.02)
    assert clamped > 0  # model b pushes some raw scores below 0: the bound is shown


async def test_history_shows_the_model_that_moved_the_score(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    hid = await conn.fetchval(
        """SELECT household_id FROM household_history
            WHERE change = 'pmt_rescore' AND after->>'pmt_version' = $1 LIMIT 1""",
        two_versions,
    )
    answer = (
        await tclient.get(f"/v1/staff/households/{hid}/score-explanation", headers=staff["officer"])
    ).json()
    last = answer["history"][-1]
    assert last["model_changed"]
    assert last["pmt_version"] == two_versions
    assert last["previous_version"] == "illustrative-2026.1"
    assert last["moved_by"][0]["source"] == "pmt_recompute"
    assert last["pmt_score"] == answer["pmt_score"]
    assert [c["edge"] for c in answer["band_crossings"]] == [16.17, 24.0, 32.0, 50.0]


async def test_partner_explanation_is_scoped_and_audited(
    tclient: httpx.AsyncClient, conn: asyncpg.Connection, url: str
) -> None:
    province, inside = await conn.fetchrow(
        "SELECT province_code, id FROM households ORDER BY id LIMIT 1"
    )
    outside = await conn.fetchval(
        "SELECT id FROM households WHERE province_code <> $1 LIMIT 1", province
    )
    made = create_partner(url, categories="iii", geo=province)
    auth = bearer(await get_token(tclient, made["client_id"], made["client_secret"]))
    path = "/v1/partner/households/{}/score-explanation"
    ok = await tclient.get(path.format(inside), headers=auth)
    assert ok.status_code == 200, ok.text
    assert ok.json()["household_id"] == str(inside)
    assert all("actor" not in c for h in ok.json()["history"] for c in h["moved_by"])
    assert (await tclient.get(path.format(outside), headers=auth)).status_code == 404
    assert (await tclient.get(path.format(10**12), headers=auth)).status_code == 404
    audited = await conn.fetch(
        """SELECT households, filters->>'household_id' AS hid FROM audit_log
            WHERE client_id = $1 AND endpoint LIKE '%score-explanation' ORDER BY id""",
        made["client_id"],
    )
    assert [(a["households"], a["hid"]) for a in audited] == [
        (1, str(inside)),
        (0, str(outside)),
        (0, str(10**12)),
    ]
    lists_only = create_partner(url, categories="iv", geo=province)
    other = bearer(await get_token(tclient, lists_only["client_id"], lists_only["client_secret"]))
    assert (await tclient.get(path.format(inside), headers=other)).status_code == 403


# The indicators an agreement never needs to grant: household_size and dependency_ratio
# are read from the household's composition (an unlocked dimension); every other indicator
# belongs to a locked dimension (disability .. land).
UNLOCKED_INDICATORS = {"household_size", "dependency_ratio"}
LOCKED_INDICATORS = set(pmt.ILLUSTRATIVE.weights) - UNLOCKED_INDICATORS
# Employment is locked too, but no PMT indicator reads it.
PMT_LOCKED = LOCKED - {"employment"}
# What would let a partner rebuild the formula (see app/services/targeting/partner_view.py).
STAFF_ONLY_FIELDS = {"intercept", "raw_score", "bound_adjustment", "rounding"}


async def test_a_partner_with_no_dimensions_sees_no_locked_pmt_field(
    tclient: httpx.AsyncClient, conn: asyncpg.Connection, url: str
) -> None:
    """The issue's reproduction: category iii, geography PK6, no dimensions."""
    hid = await conn.fetchval(
        "SELECT id FROM households WHERE province_code = 'PK6' AND pmt_version = $1 "
        "AND pmt_score > 0 AND pmt_score < 100 ORDER BY id LIMIT 1",
        pmt.ILLUSTRATIVE.version,
    )
    made = create_partner(url, categories="iii", geo="PK6")
    auth = bearer(await get_token(tclient, made["client_id"], made["client_secret"]))
    response = await tclient.get(f"/v1/partner/households/{hid}/score-explanation", headers=auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert STAFF_ONLY_FIELDS.isdisjoint(answer), sorted(STAFF_ONLY_FIELDS & set(answer))
    shown = {c["indicator"]: c for c in answer["contributions"]}
    assert set(shown) == UNLOCKED_INDICATORS
    for c in shown.values():
        assert c["dimension"] == "household_composition"
        exact = Decimal(repr(c["weight"] * c["value"]))
        assert c["points"] == float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
        assert "exact_points" not in c
    assert answer["withheld_dimensions"] == sorted(PMT_LOCKED)
    changed = {ch["indicator"] for b in answer["band_crossings"] for ch in b["changes"]}
    assert changed <= UNLOCKED_INDICATORS
    assert (answer["pmt_score"], answer["poverty_band"]) == tuple(
        await conn.fetchrow(
            "SELECT pmt_score::float8, poverty_band FROM households WHERE id = $1", hid
        )
    )
    # Nothing in the answer names a locked indicator, anywhere.
    assert not any(name in response.text for name in LOCKED_INDICATORS)


async def test_a_partner_sees_granted_locked_values_but_never_their_weights(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    url: str,
    staff: dict[str, dict[str, str]],
) -> None:
    hid = await conn.fetchval(
        """SELECT h.id FROM households h JOIN members m ON m.household_id = h.id
            WHERE h.province_code = 'PK6' AND cardinality(m.disabilities) > 0
              AND m.deceased_on IS NULL ORDER BY h.id LIMIT 1"""
    )
    made = create_partner(url, categories="iii", geo="PK6", dimensions="disability,education")
    auth = bearer(await get_token(tclient, made["client_id"], made["client_secret"]))
    path = f"/v1/partner/households/{hid}/score-explanation"
    answer = (await tclient.get(path, headers=auth)).json()
    full = (await tclient.get(path.replace("partner", "staff"), headers=staff["officer"])).json()
    values = {c["indicator"]: c["value"] for c in full["contributions"]}
    shown = {c["indicator"]: c for c in answer["contributions"]}
    assert set(shown) == UNLOCKED_INDICATORS | {"has_disabled_member", "head_education_years"}
    assert shown["has_disabled_member"] == {
        "indicator": "has_disabled_member",
        "dimension": "disability",
        "value": 1.0,
    }
    assert set(shown["head_education_years"]) == {"indicator", "dimension", "value"}
    for name, c in shown.items():
        assert c["value"] == values[name]
    assert answer["withheld_dimensions"] == sorted(PMT_LOCKED - {"disability", "education"})
    changed = {ch["indicator"] for b in answer["band_crossings"] for ch in b["changes"]}
    assert changed <= UNLOCKED_INDICATORS


async def _simulate(
    tclient: httpx.AsyncClient, who: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await tclient.post("/v1/staff/simulations", json=body, headers=who)
    assert response.status_code == 202, response.text
    sim_id = response.json()["simulation_id"]
    assert response.headers["location"] == f"/v1/staff/simulations/{sim_id}"
    for _ in range(600):
        answer: dict[str, Any] = (
            await tclient.get(f"/v1/staff/simulations/{sim_id}", headers=who)
        ).json()
        if answer["status"] in ("done", "failed"):
            assert answer["status"] == "done", answer
            done = answer["progress"]
            assert done["percent"] == 100, done
            assert done["ranges_done"] == done["ranges"] >= 1, done
            return answer
        assert 0 <= answer["progress"]["percent"] <= 100
        await asyncio.sleep(0.1)
    raise AssertionError("simulation did not finish")


async def _registry_state(conn: asyncpg.Connection) -> tuple[Any, ...]:
    return tuple(
        await conn.fetchrow(
            """SELECT (SELECT sum(pmt_score) FROM households),
                      (SELECT string_agg(DISTINCT pmt_version, ',') FROM households),
                      (SELECT count(*) FROM household_history),
                      (SELECT max(updated_at) FROM households)"""
        )
    )


async def _in_30_to_32(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        """SELECT count(*) AS households, coalesce(sum(
                  (SELECT count(*) FROM members m
                    WHERE m.household_id = h.id AND m.deceased_on IS NULL)), 0)::int AS members
             FROM households h WHERE pmt_score >= 30 AND pmt_score < 32"""
    )
    return {"households": row["households"], "members": row["members"]}


CUT_32_TO_30 = {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}, "transfer_amount": "2500"}


async def test_cut_off_32_to_30_moves_the_scores_in_30_to_32(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    """The report, with no score on either edge (see the next test for the edges)."""
    await conn.execute(
        "UPDATE households SET pmt_score = pmt_score + 0.01 WHERE pmt_score IN (30, 32)"
    )
    before = await _registry_state(conn)
    answer = await _simulate(tclient, staff["me"], CUT_32_TO_30)
    assert await _registry_state(conn) == before  # nothing live changed
    expected = await _in_30_to_32(conn)
    result = answer["result"]
    assert expected["households"] > 2
    assert result["leaving"] == {**expected, "families": expected["households"]}
    assert result["entering"] == {"households": 0, "members": 0, "families": 0}
    assert result["caseload"]["change"]["households"] == -expected["households"]
    assert Decimal(result["cost"]["change"]) == -2500 * expected["households"]
    assert result["households_total"] == await conn.fetchval("SELECT count(*) FROM households")
    by_province = sum(p["leaving"]["households"] for p in result["by_province"])
    by_district = sum(d["leaving"]["households"] for d in result["by_district"])
    by_band = sum(b["leaving"]["households"] for b in result["by_band"])
    assert by_province == by_district == by_band == expected["households"]
    assert result["band_moves"] == []
    ie = result["inclusion_exclusion"]
    assert sum(ie["newly_excluded"].values()) == expected["households"]
    assert ie["exclusion_error"]["shift"] == ie["newly_excluded"]["poor"]
    assert answer["request"]["candidate"]["rule"]["cut_off"] == 30


async def test_cut_off_32_to_30_moves_exactly_the_scores_in_30_to_32(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    # Households exactly on both edges, so the test tells < from <=.
    ids = await conn.fetch("SELECT id FROM households ORDER BY id DESC LIMIT 2")
    await conn.execute("UPDATE households SET pmt_score = 30.00 WHERE id = $1", ids[0]["id"])
    await conn.execute("UPDATE households SET pmt_score = 32.00 WHERE id = $1", ids[1]["id"])
    answer = await _simulate(tclient, staff["me"], CUT_32_TO_30)
    expected = await _in_30_to_32(conn)
    assert answer["result"]["leaving"] == {**expected, "families": expected["households"]}


async def test_candidate_model_simulation_matches_re_scoring_for_real(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    """Simulate model b over the whole registry, then apply it: the same households move."""
    await pmt.recompute(conn)  # everyone on b: the live scores
    await conn.execute(
        """INSERT INTO pmt_models (version, description, intercept, weights, bands,
                                   illustrative, is_current)
           VALUES ('c-2028', 'test', 20.0, $1::jsonb, $2::jsonb, true, false)""",
        json.dumps({**pmt.ILLUSTRATIVE.weights, "television": 6.0, "household_size": -0.6}),
        json.dumps(pmt.ILLUSTRATIVE.bands_json()),
    )
    old = {
        r["id"]: r["pmt_score"] for r in await conn.fetch("SELECT id, pmt_score FROM households")
    }
    answer = await _simulate(
        tclient,
        staff["secretary"],
        {"live_rule": {"cut_off": 24}, "pmt_version": "c-2028", "transfer_amount": 100},
    )
    result = answer["result"]
    await conn.execute("UPDATE pmt_models SET is_current = (version = 'c-2028')")
    await pmt.recompute(conn)
    new = {
        r["id"]: r["pmt_score"] for r in await conn.fetch("SELECT id, pmt_score FROM households")
    }
    # No score exactly at the cut-off: "below" and "at or below" select the same households.
    assert not any(Decimal(24) in (old[k], new[k]) for k in old)
    entering = sum(1 for k in old if old[k] > 24 and new[k] < 24)
    leaving = sum(1 for k in old if old[k] < 24 and new[k] > 24)
    assert entering + leaving > 0
    assert result["entering"]["households"] == entering
    assert result["leaving"]["households"] == leaving
    moved = sum(m["households"] for m in result["band_moves"])
    assert moved > 0


async def test_simulation_requests_fail_closed(
    tclient: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> None:
    me = staff["me"]
    bad = [
        {"live_rule": {"cut_off": 32}, "transfer_amount": 1},  # no candidate
        {"rule": {"cut_off": 30}, "transfer_amount": 1},  # no live rule
        {"live_rule": {"cut_off": 32}, "pmt_version": "nope", "transfer_amount": 1},
        {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 300}, "transfer_amount": 1},
        {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}, "transfer_amount": -1},
        {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}, "transfer_amount": 1, "x": 1},
        {"programme_id": "no-such-programme", "rule": {"cut_off": 30}, "transfer_amount": 1},
    ]
    for body in bad:
        response = await tclient.post("/v1/staff/simulations", json=body, headers=me)
        assert response.status_code == 422, (body, response.text)
    ok = {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}, "transfer_amount": 1}
    officer = await tclient.post("/v1/staff/simulations", json=ok, headers=staff["officer"])
    assert officer.status_code == 403
    missing = "/v1/staff/simulations/00000000-0000-0000-0000-000000000000"
    assert (await tclient.get(missing, headers=me)).status_code == 404


async def test_a_running_simulation_shows_how_far_it_has_got(
    tclient: httpx.AsyncClient,
    conn: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    two_versions: str,
) -> None:
    """The worker publishes progress from outside the run's transaction (which holds the
    simulation's row locked): the API shows ranges read of ranges to read."""
    await _simulate(tclient, staff["me"], CUT_32_TO_30)  # a request document to copy
    # A run in progress that no worker will take over (claimed just now).
    sim_id = await conn.fetchval(
        """INSERT INTO simulations (request, requested_by, status, claimed_by, claimed_at)
           SELECT request, requested_by, 'running', 'test', now() FROM simulations LIMIT 1
           RETURNING id"""
    )
    url = f"/v1/staff/simulations/{sim_id}"
    before = (await tclient.get(url, headers=staff["me"])).json()
    assert before["progress"] == {"ranges_done": 0, "ranges": None, "percent": 0}
    writer = simulation_service.ProgressWriter(conn, sim_id, every=0)
    publishing = asyncio.ensure_future(writer.publish())
    try:
        writer(3, 12)
        for _ in range(100):
            answer = (await tclient.get(url, headers=staff["me"])).json()
            if answer["progress"]["ranges_done"] == 3:
                break
            await asyncio.sleep(0.05)
        assert answer["status"] == "running"
        assert answer["progress"] == {"ranges_done": 3, "ranges": 12, "percent": 25}
        writer(12, 12)
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
    await writer.flush()
    answer = (await tclient.get(url, headers=staff["me"])).json()
    assert answer["progress"] == {"ranges_done": 12, "ranges": 12, "percent": 100}
    await conn.execute("DELETE FROM simulations WHERE id = $1", sim_id)
