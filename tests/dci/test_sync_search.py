"""DCI sync search and txn status through HTTP, every message checked against the spdci
schemas (tests/dci/schemas.py), every answer against the registry and the beneficiary list."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from dci.schemas import validate
from partner_helpers import bearer, create_partner, get_token

from app.services.dci import records
from app.services.sharing import rules as sharing_rules

SEARCH = "/dci/registry/sync/search"
STATUS = "/dci/registry/sync/txn/status"
TS = "2026-12-11T09:00:00+05:00"
LIMITED_DIMENSIONS = ["employment", "toilet_type"]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1500, seed=5) as u:
        yield u


@pytest.fixture(scope="module")
async def c(url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for client in open_client(settings):
        yield client


@pytest.fixture(scope="module")
async def conn(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
async def district(conn: asyncpg.Connection) -> str:
    code: str = await conn.fetchval(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    return code


@pytest.fixture(scope="module")
async def full(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    p = create_partner(url, categories="iii,iv,v", dimensions="education,room_count")
    return {**p, "token": await get_token(c, p["client_id"], p["client_secret"])}


@pytest.fixture(scope="module")
async def limited(c: httpx.AsyncClient, url: str, district: str) -> dict[str, str]:
    p = create_partner(url, categories="iv,v", dimensions=LIMITED_DIMENSIONS, geo=district)
    return {**p, "token": await get_token(c, p["client_id"], p["client_secret"])}


def envelope(
    *criteria: dict[str, Any], transaction_id: str | None = None, refs: list[str] | None = None
) -> dict[str, Any]:
    refs = refs or [f"ref-{i}" for i in range(len(criteria))]
    body = {
        "signature": "",
        "header": {
            "version": "1.0.0",
            "message_id": uuid.uuid4().hex,
            "message_ts": TS,
            "action": "search",
            "sender_id": "spmis.example.org",
            "receiver_id": "nser",
            "total_count": len(criteria),
            "is_msg_encrypted": False,
        },
        "message": {
            "transaction_id": transaction_id or uuid.uuid4().hex,
            "search_request": [
                {"reference_id": ref, "timestamp": TS, "search_criteria": crit, "locale": "eng"}
                for ref, crit in zip(refs, criteria, strict=True)
            ],
        },
    }
    validate("SearchEnvelope", body)
    return body


def idtype(kind: str, value: object, **extra: Any) -> dict[str, Any]:
    return {"query_type": "idtype-value", "query": {"type": kind, "value": value}, **extra}


def expression(query: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "reg_type": "ns:org:RegistryType:Social",
        "query_type": "expression",
        "response_entity": "Group",
        "query": {
            "type": "ns:org:QueryType:NoSql",
            "value": {"expression": {"collection": "Group", "query": query}},
        },
        **extra,
    }


def predicate(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"query_type": "predicate", "query": list(items), **extra}


def cond(name: str, op: str, value: object) -> dict[str, Any]:
    return {"attribute_name": name, "operator": op, "attribute_value": value}


async def post(c: httpx.AsyncClient, token: str | None, body: object, path: str = SEARCH):
    headers = bearer(token) if token else {}
    r = await c.post(path, json=body, headers=headers)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r


async def search(c: httpx.AsyncClient, token: str, *criteria: dict[str, Any], **kw: Any):
    r = await post(c, token, envelope(*criteria, **kw))
    assert r.status_code == 200, r.text
    body = r.json()
    validate("OnSearchEnvelope", body)
    assert body["header"]["action"] == "on-search"
    assert body["header"]["status"] == "succ"
    return body


def household_ids(response_item: dict[str, Any]) -> list[int]:
    return [
        int(g["group_identifier"][0]["identifier_value"])
        for g in response_item["data"]["reg_records"]
    ]


async def walk(
    c: httpx.AsyncClient, token: str, crit: dict[str, Any], size: int = 200
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    number = 1
    while True:
        page = {**crit, "pagination": {"page_size": size, "page_number": number}}
        item = (await search(c, token, page))["message"]["search_response"][0]
        assert item["status"] == "succ"
        records += item["data"]["reg_records"]
        total = item["pagination"]["total_count"]
        if number * size >= total:
            assert len(records) == total
            return records
        number += 1


async def sql_ids(conn: asyncpg.Connection, where: str, *args: object) -> list[int]:
    rows = await conn.fetch(f"SELECT h.id FROM households h WHERE {where} ORDER BY h.id", *args)
    return [r["id"] for r in rows]


def ids_of(records: list[dict[str, Any]]) -> list[int]:
    return [int(g["group_identifier"][0]["identifier_value"]) for g in records]


LIVING = "m.household_id = h.id AND m.deceased_on IS NULL"


# -- the query types ----------------------------------------------------------------------


async def test_idtype_value_by_uin_cnic_and_household_id(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection
) -> None:
    row = await conn.fetchrow(
        "SELECT m.cnic, m.household_id FROM members m WHERE m.cnic IS NOT NULL "
        "AND m.deceased_on IS NULL ORDER BY m.id LIMIT 1"
    )
    assert row is not None
    printed = f"{row['cnic'][:5]}-{row['cnic'][5:12]}-{row['cnic'][12]}"
    body = await search(
        c,
        full["token"],
        idtype("UIN", printed),
        idtype("CNIC", row["cnic"]),
        idtype("HOUSEHOLD_ID", str(row["household_id"])),
    )
    answers = body["message"]["search_response"]
    assert [a["reference_id"] for a in answers] == ["ref-0", "ref-1", "ref-2"]
    for answer in answers:
        assert answer["status"] == "succ"
        assert household_ids(answer) == [row["household_id"]]
        assert answer["pagination"]["total_count"] == 1
    group = answers[0]["data"]["reg_records"][0]
    assert group["@type"] == "Group"
    cnics = [
        i["identifier_value"]
        for m in group["member_list"]
        for i in m["demographic_info"]["identifier"]
    ]
    assert row["cnic"] in cnics
    assert body["header"]["completed_count"] == 3


async def test_expression_matches_sql(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection, district: str
) -> None:
    query = {
        "$and": [
            {"poverty_score": {"$lt": 40}},
            {"district": {"$eq": district}},
            {"$or": [{"household_size": {"$ge": 6}}, {"age": {"$gte": 65}}]},
        ]
    }
    records = await walk(c, full["token"], expression(query))
    expected = await sql_ids(
        conn,
        "h.pmt_score < 40 AND h.district_code = $1 AND ("
        f"(SELECT count(*) FROM members m WHERE {LIVING}) >= 6 OR EXISTS (SELECT 1 FROM "
        f"members m WHERE {LIVING} AND age(current_date, m.date_of_birth) >= interval "
        "'65 years'))",
        district,
    )
    assert expected
    assert ids_of(records) == expected


async def test_predicate_matches_sql(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection
) -> None:
    crit = predicate(
        {"seq_num": 2, "expression1": cond("sex", "eq", "female")},
        {
            "seq_num": 1,
            "expression1": cond("pmt_score", "ge", 20),
            "condition": "not",
            "expression2": cond("poverty_band", "in", ["well_off", "non_poor"]),
        },
        {"expression1": cond("group_size", "le", 4)},
    )
    records = await walk(c, full["token"], crit)
    expected = await sql_ids(
        conn,
        f"EXISTS (SELECT 1 FROM members m WHERE {LIVING} AND m.gender = 'female') "
        "AND h.pmt_score >= 20 AND NOT (h.poverty_band IN ('well_off', 'non_poor')) "
        f"AND (SELECT count(*) FROM members m WHERE {LIVING}) <= 4",
    )
    assert expected
    assert ids_of(records) == expected


# -- pages and order ---------------------------------------------------------------------


async def test_pages_give_every_household_once_and_sort(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection, district: str
) -> None:
    base = expression({"district": {"$in": [district]}, "poverty_score": {"$le": 50}})
    expected = await sql_ids(conn, "h.district_code = $1 AND h.pmt_score <= 50", district)
    assert len(expected) > 30
    by_id = await walk(c, full["token"], base, size=7)
    assert ids_of(by_id) == expected
    sort = [{"attribute_name": "poverty_score", "sort_order": "desc"}]
    by_score = await walk(c, full["token"], {**base, "sort": sort}, size=7)
    ids = ids_of(by_score)
    assert sorted(ids) == expected
    assert len(set(ids)) == len(ids)
    scores = [g["poverty_score"] for g in by_score]
    assert scores == sorted(scores, reverse=True)
    # Past the last page: an empty page, still succ, with the total.
    past = {**base, "pagination": {"page_size": 50, "page_number": 100}}
    item = (await search(c, full["token"], past))["message"]["search_response"][0]
    assert item["data"]["reg_records"] == []
    assert item["pagination"]["total_count"] == len(expected)


async def test_every_page_counts_every_match(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection, district: str
) -> None:
    """Full pages, the last (short) one and one past the end all give the whole count; a
    page of one location (``$eq``) and of two (``$in``) stays in household id order."""
    other: str = await conn.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        district,
    )
    cases = [
        ({"district": {"$eq": district}, "poverty_score": {"$lt": 60}}, [district]),
        ({"district": {"$in": [other, district]}, "poverty_score": {"$lt": 60}}, [district, other]),
    ]
    for query, codes in cases:
        expected = await sql_ids(
            conn, "h.district_code = ANY($1::text[]) AND h.pmt_score < 60", codes
        )
        size = next(s for s in (9, 8, 7, 11) if len(expected) % s)  # a short last page
        assert len(expected) > 2 * size
        pages = -(-len(expected) // size)
        got: list[int] = []
        for number in (*range(1, pages + 1), pages + 1):
            crit = expression(query, pagination={"page_size": size, "page_number": number})
            item = (await search(c, full["token"], crit))["message"]["search_response"][0]
            assert item["pagination"]["total_count"] == len(expected), (query, number)
            got += household_ids(item)
        assert got == expected


# -- refusals -----------------------------------------------------------------------------


async def _audit_rows(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM audit_log WHERE endpoint LIKE '/dci/%'")
    return n


@pytest.mark.parametrize(
    ("crit", "code", "named"),
    [
        (expression({"income": {"$lt": 5}}), "rjct.filter.invalid", "income"),
        (expression({"poverty_score": {"$ne": 5}}), "rjct.filter.invalid", "$ne"),
        (expression({"$nor": [{"age": {"$lt": 5}}]}), "rjct.filter.invalid", "$nor"),
        (predicate({"expression1": cond("district", "gt", "PK6")}), "rjct.filter.invalid", "gt"),
        (predicate({"expression1": cond("mobile", "eq", "1")}), "rjct.filter.invalid", "mobile"),
        (idtype("MOBILE", "0300"), "rjct.filter.invalid", "MOBILE"),
        (idtype("UIN", "12345"), "rjct.filter.invalid", "CNIC"),
        (
            {**expression({"age": {"$lt": 5}}), "sort": [{"attribute_name": "age"}]},
            "rjct.sort.invalid",
            "age",
        ),
        (
            {**expression({"age": {"$lt": 5}}), "pagination": {"page_size": 5000}},
            "rjct.pagination.invalid",
            "page_size",
        ),
        (
            {**idtype("UIN", "3520212345673"), "colour": "red"},
            "rjct.search_criteria.invalid",
            "colour",
        ),
        (
            {**idtype("UIN", "3520212345673"), "response_entity": "Person"},
            "rjct.search_criteria.invalid",
            "Person",
        ),
        (expression({"district": {"$eq": "ZZ999"}}), "rjct.filter.invalid", "ZZ999"),
    ],
)
async def test_unsupported_is_rejected_by_name_and_nothing_is_read(
    c: httpx.AsyncClient,
    full: dict[str, str],
    conn: asyncpg.Connection,
    crit: dict[str, Any],
    code: str,
    named: str,
) -> None:
    before = await _audit_rows(conn)
    body = envelope(idtype("HOUSEHOLD_ID", 1), crit)
    r = await post(c, full["token"], body)
    assert r.status_code == 400, r.text
    reply = r.json()
    validate("OnSearchEnvelope", reply)
    assert reply["header"]["status"] == "rjct"
    first, second = reply["message"]["search_response"]
    assert first["status"] == "rjct"
    assert "data" not in first
    assert second["status"] == "rjct"
    assert "data" not in second
    assert second["status_reason_code"] == code
    assert named in second["status_reason_message"]
    assert await _audit_rows(conn) == before


@pytest.mark.parametrize(
    ("mutate", "code", "named"),
    [
        (lambda b: b.pop("message"), "err.request.bad", "message"),
        (lambda b: b.pop("header"), "err.request.bad", "header"),
        (lambda b: b["header"].pop("sender_id"), "err.request.bad", "sender_id"),
        (lambda b: b["header"].update(action="subscribe"), "err.request.bad", "action"),
        (lambda b: b["header"].update(version="2.0.0"), "err.version.not_supported", "1.0.0"),
        (lambda b: b["header"].update(colour=1), "err.request.bad", "colour"),
        (lambda b: b.update(extra=1), "err.request.bad", "extra"),
        (lambda b: b["message"].update(txn="x"), "err.request.bad", "txn"),
        (lambda b: b["header"].update(total_count=3), "err.request.bad", "total_count"),
        (lambda b: b["header"].update(is_msg_encrypted=True), "err.encryption.invalid", "encr"),
    ],
)
async def test_malformed_envelopes(
    c: httpx.AsyncClient, full: dict[str, str], mutate: Any, code: str, named: str
) -> None:
    body = envelope(idtype("HOUSEHOLD_ID", 1))
    mutate(body)
    r = await post(c, full["token"], body)
    assert r.status_code == 400, r.text
    validate("HttpErrorResponse", r.json())
    error = r.json()["errors"][0]
    assert error["code"] == code, error
    assert named in error["message"], error


async def test_body_that_is_not_json(c: httpx.AsyncClient, full: dict[str, str]) -> None:
    headers = {**bearer(full["token"]), "content-type": "application/json"}
    r = await c.post(SEARCH, content=b'{"header": ', headers=headers)
    assert r.status_code == 400
    validate("HttpErrorResponse", r.json())
    assert r.json()["errors"][0]["code"] == "err.request.bad"


@pytest.mark.parametrize("token", [None, "not-a-jwt", "eyJhbGciOiJIUzI1NiJ9.e30.x"])
async def test_no_or_bad_token_is_unauthorized(
    c: httpx.AsyncClient, token: str | None, conn: asyncpg.Connection
) -> None:
    before = await _audit_rows(conn)
    for path in (SEARCH, STATUS):
        r = await post(c, token, envelope(idtype("HOUSEHOLD_ID", 1)), path)
        assert r.status_code == 401, r.text
        validate("HttpErrorResponse", r.json())
        assert r.json()["errors"][0]["code"] == "err.request.unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert await _audit_rows(conn) == before


# -- the agreement ------------------------------------------------------------------------

HOUSEHOLD_BASE = {
    "household_id", "address", "province", "division", "district", "tehsil",
    "union_council", "pmt_score", "poverty_band", "members",
}  # fmt: skip
MEMBER_BASE = {"member_id", "cnic", "name", "gender", "age", "relationship", "marital_status"}


def as_nser(group: dict[str, Any]) -> dict[str, Any]:
    """The beneficiary list's document of a Group record (the mapping read backwards)."""
    address = group["address"]
    doc: dict[str, Any] = {
        "household_id": group["group_identifier"][0]["identifier_value"],
        "address": address["address_line1"],
        "province": address["region_code"],
        "division": address["division_code"],
        "district": address["sub_region_code"],
        "tehsil": address["tehsil_code"],
        "union_council": address["union_council_code"],
        "pmt_score": group["poverty_score"],
        "poverty_band": group["poverty_band"],
        "members": [],
    }
    assert group["group_size"] == len(group["member_list"])
    for a in group["additional_attributes"]:
        doc[a["attribute_name"]] = a["attribute_value"]
    for m in group["member_list"]:
        person = m["demographic_info"]
        member: dict[str, Any] = {
            "member_id": m["member_identifier"][0]["identifier_value"],
            "cnic": person["identifier"][0]["identifier_value"] if person["identifier"] else None,
            "name": person["name"]["full_name"],
            "gender": person["sex"],
            "relationship": "head" if m["relationship_head"] == "self" else m["relationship_head"],
            "marital_status": m["marital_status"],
        }
        if "disability_info" in m:
            member["disability"] = [d["disability_type"] for d in m["disability_info"]] or None
        if "employment_status" in m:
            member["employment"] = m["employment_status"]
        if "education_level" in m:
            member["education"] = m["education_level"]
        for a in m["additional_attributes"]:
            member[a["attribute_name"]] = a["attribute_value"]
        doc["members"].append(member)
    return doc


async def test_limited_agreement_through_every_query_type(
    c: httpx.AsyncClient, limited: dict[str, str], conn: asyncpg.Connection, district: str
) -> None:
    inside = await conn.fetchrow(
        "SELECT m.cnic, h.id FROM members m JOIN households h ON h.id = m.household_id "
        "WHERE h.district_code = $1 AND m.cnic IS NOT NULL AND m.deceased_on IS NULL LIMIT 1",
        district,
    )
    outside = await conn.fetchrow(
        "SELECT m.cnic, h.id FROM members m JOIN households h ON h.id = m.household_id "
        "WHERE h.district_code <> $1 AND m.cnic IS NOT NULL AND m.deceased_on IS NULL LIMIT 1",
        district,
    )
    assert inside is not None
    assert outside is not None
    token = limited["token"]
    body = await search(
        c,
        token,
        idtype("CNIC", inside["cnic"]),
        idtype("CNIC", outside["cnic"]),
        idtype("HOUSEHOLD_ID", outside["id"]),
    )
    a, b, d = body["message"]["search_response"]
    assert household_ids(a) == [inside["id"]]
    assert household_ids(b) == []
    assert household_ids(d) == []
    everything = await walk(c, token, expression({"poverty_score": {"$le": 100}}))
    by_predicate = await walk(c, token, predicate({"expression1": cond("age", "ge", 0)}))
    in_district = await sql_ids(conn, "h.district_code = $1", district)
    assert ids_of(everything) == in_district
    assert ids_of(by_predicate) == in_district
    # The fields: the list's base, the unlocked dimensions, and the two granted; no other.
    allowed_household = HOUSEHOLD_BASE | {
        "poverty_level", "area_location", "household_composition", "toilet_type",
    }  # fmt: skip
    allowed_member = MEMBER_BASE | {"age_bracket", "employment"}
    docs = [as_nser(g) for g in everything + a["data"]["reg_records"]]
    for doc in docs:
        assert doc["district"] == district
        assert set(doc) == allowed_household, set(doc) ^ allowed_household
        for member in doc["members"]:
            assert set(member) == allowed_member, set(member) ^ allowed_member
    # A district outside the agreement, named in a query, is refused as the list refuses it.
    other = await conn.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 LIMIT 1", district
    )
    r = await post(c, token, envelope(expression({"district": {"$eq": other}})))
    assert r.status_code == 403, r.text
    validate("HttpErrorResponse", r.json())
    assert r.json()["errors"][0]["code"] == "err.request.forbidden"


async def test_same_households_and_fields_as_the_beneficiary_list(
    c: httpx.AsyncClient,
    full: dict[str, str],
    limited: dict[str, str],
    district: str,
) -> None:
    for partner, dims in (
        (full, "poverty_level,area_location,household_composition,gender,relationship,"
         "age_bracket,marital_status,education,room_count"),
        (limited, "poverty_level,area_location,household_composition,gender,relationship,"
         "age_bracket,marital_status,employment,toilet_type"),
    ):  # fmt: skip
        crit = expression({"district": {"$eq": district}, "poverty_score": {"$le": 35}})
        dci = [as_nser(g) for g in await walk(c, partner["token"], crit)]
        params = {"district": district, "score_max": 35, "dimensions": dims, "limit": 1000}
        r = await c.get(
            "/v1/partner/beneficiaries", params=params, headers=bearer(partner["token"])
        )
        assert r.status_code == 200, r.text
        listed = r.json()["items"]
        assert r.json()["next_cursor"] is None
        assert listed
        assert dci == listed


async def test_records_are_the_mapping_of_the_list_documents(
    c: httpx.AsyncClient, url: str, district: str
) -> None:
    """PostgreSQL builds the Group records a search answers: with every dimension an
    agreement may hold (all but one locked), each is what ``records.group`` makes of the
    beneficiary list's document of the household, field for field."""
    granted = [d for d in sharing_rules.LOCKED if d != "land"]
    p = create_partner(url, categories="iv,v", dimensions=granted)
    token = await get_token(c, p["client_id"], p["client_secret"])
    crit = expression({"district": {"$eq": district}})
    dci = await walk(c, token, crit, size=1000)
    dims = ",".join(d for d in sharing_rules.DIMENSIONS if d != "land")
    r = await c.get(
        "/v1/partner/beneficiaries",
        params={"district": district, "dimensions": dims, "limit": 1000},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    listed = r.json()["items"]
    assert r.json()["next_cursor"] is None
    members = [m for doc in listed for m in doc["members"]]
    assert any(m["disability"] for m in members)
    assert any(m["disability"] is None or m["disability"] == [] for m in members)
    assert any(m["cnic"] is None for m in members)
    assert dci == [records.group(doc) for doc in listed]


# -- transactions and the audit log --------------------------------------------------------


def status_request(kind: str, value: object, txn_type: str = "search") -> dict[str, Any]:
    body = {
        "header": {
            "version": "1.0.0",
            "message_id": uuid.uuid4().hex,
            "message_ts": TS,
            "action": "txn-status",
            "sender_id": "spmis.example.org",
            "total_count": 1,
        },
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "txnstatus_request": {
                "reference_id": "status-1",
                "txn_type": txn_type,
                "attribute_type": kind,
                "attribute_value": value,
            },
        },
    }
    validate("TxnStatusEnvelope", body)
    return body


async def test_txn_status_of_known_and_unknown_transactions(
    c: httpx.AsyncClient, full: dict[str, str], limited: dict[str, str]
) -> None:
    txn = f"txn-{uuid.uuid4().hex}"
    body = await search(
        c,
        full["token"],
        idtype("HOUSEHOLD_ID", 1),
        expression({"age": {"$lt": 1}}),
        transaction_id=txn,
        refs=["a-1", "a-2"],
    )
    correlation = body["message"]["correlation_id"]
    for kind, value in (
        ("transaction_id", txn),
        ("correlation_id", correlation),
        ("reference_id_list", ["a-2"]),
    ):
        r = await post(c, full["token"], status_request(kind, value), STATUS)
        assert r.status_code == 200, r.text
        reply = r.json()
        validate("TxnOnStatusEnvelope", reply)
        assert reply["header"]["action"] == "txn-on-status"
        status = reply["message"]["txnstatus_response"]["txn_status"]
        assert status["transaction_id"] == txn
        assert status["correlation_id"] == correlation
        refs = [s["reference_id"] for s in status["search_response"]]
        assert refs == (["a-2"] if kind == "reference_id_list" else ["a-1", "a-2"])
        for s in status["search_response"]:
            assert s["status"] == "succ"
            assert "data" not in s
    # A rejected search is recorded as rejected.
    bad = envelope(expression({"colour": {"$eq": 1}}), transaction_id=f"{txn}-bad")
    assert (await post(c, full["token"], bad)).status_code == 400
    r = await post(c, full["token"], status_request("transaction_id", f"{txn}-bad"), STATUS)
    assert r.status_code == 200
    (rejected,) = r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"]
    assert rejected["status"] == "rjct"
    assert rejected["status_reason_code"] == "rjct.filter.invalid"
    # Unknown, and another client's: not found, alike.
    for token, value in ((full["token"], "no-such-txn"), (limited["token"], txn)):
        r = await post(c, token, status_request("transaction_id", value), STATUS)
        assert r.status_code == 404, r.text
        validate("HttpErrorResponse", r.json())
        assert r.json()["errors"][0]["code"] == "err.request.not_found"


async def test_every_search_is_in_the_audit_log(
    c: httpx.AsyncClient, full: dict[str, str], conn: asyncpg.Connection, district: str
) -> None:
    txn = f"audit-{uuid.uuid4().hex}"
    body = await search(
        c, full["token"], expression({"district": {"$eq": district}}), transaction_id=txn
    )
    item = body["message"]["search_response"][0]
    row = await conn.fetchrow(
        "SELECT * FROM audit_log WHERE filters ->> 'dci_transaction_id' = $1", txn
    )
    assert row is not None
    assert row["endpoint"] == "/dci/registry/sync/search (page)"
    assert row["client_id"] == full["client_id"]
    assert row["households"] == len(item["data"]["reg_records"])
    assert row["members"] == sum(len(g["member_list"]) for g in item["data"]["reg_records"])
    assert "education" in row["dimensions"]


async def test_openapi_lists_the_dci_routes(c: httpx.AsyncClient) -> None:
    document = (await c.get("/openapi.json")).json()
    search_op = document["paths"][SEARCH]["post"]
    assert {"200", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(
        search_op["responses"]
    )
    assert search_op["security"] == [{"bearerAuth": []}]
    assert set(search_op["responses"]["401"]["content"]) == {"application/json"}
    assert "404" in document["paths"][STATUS]["post"]["responses"]
    # The txn-on-status answer: one variant per txn_type (search, subscribe, unsubscribe).
    ok = document["paths"][STATUS]["post"]["responses"]["200"]["content"]["application/json"]
    schemas = document["components"]["schemas"]
    reply = schemas[ok["schema"]["$ref"].rsplit("/", 1)[1]]
    message = schemas[reply["properties"]["message"]["$ref"].rsplit("/", 1)[1]]
    variants = message["properties"]["txnstatus_response"]
    assert set(variants["discriminator"]["mapping"]) == {
        "search",
        "receipt",
        "subscribe",
        "unsubscribe",
    }
    assert len(variants["oneOf"]) == 3
