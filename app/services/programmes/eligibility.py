"""Eligibility of one household by CNIC, and the programme's eligible list.

By CNIC: one indexed read (the member, its household) computes, in SQL, the clause that
decides and the cut-off that applies, with the same compiled rule as the list — the clause
can never disagree with the list. The list is ``/v1/partner/beneficiaries`` with the rule
as a ``Restriction``: its filters, cursor, streams, geography and dimension checks and its
audit are those of the beneficiary lists, unchanged.

Family unit (protocol §3.1): each ever-married woman of an eligible household is a
recipient; the list marks them (``recipient`` per member) and the answer by CNIC says
whether the holder is one and how many families the household holds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.logging import mask_cnic
from app.replicas import Reads
from app.services.audit import trail as audit
from app.services.programmes import rules
from app.services.programmes.store import Current
from app.services.sharing.beneficiaries_sql import Query, Restriction

LIST_ENDPOINT = "/v1/partner/programmes/{programme_id}/beneficiaries"
CHECK_ENDPOINT = "/v1/partner/programmes/{programme_id}/eligibility/{cnic}"
_FAMILIES = (
    f"(SELECT count(*) FROM members m WHERE m.household_id = h.id AND {rules.recipient_sql('m')})"
)
_SCOPE = """(cardinality({codes}::text[]) = 0 OR h.province_code = ANY({codes})
        OR h.division_code = ANY({codes}) OR h.district_code = ANY({codes})
        OR h.tehsil_code = ANY({codes}) OR h.union_council_code = ANY({codes})
        OR h.village_code = ANY({codes}))"""


def restriction(programme: Current) -> Restriction:
    """The programme's rule as a restriction of the beneficiary list."""
    rule = programme.rule
    family = rule.unit == "family"
    return Restriction(
        endpoint=LIST_ENDPOINT,
        where=lambda bind: rules.eligible_sql(rule, bind),
        audit={"programme": programme.id, "rule_version": programme.version},
        # Per member, in the members' own subquery: no second read of them per household.
        member_fields=(("recipient", rules.recipient_sql("m")),) if family else (),
    )


async def check(reads: Reads, p: Principal, programme: Current, cnic: str) -> dict[str, Any] | None:
    """Eligible or not and why, for the living member with this CNIC within the agreement's
    geography; None when there is none. Audited either way (on the primary; the household
    is read on a read replica when the service has one)."""
    rule = programme.rule
    q = Query()
    cnic_p = q.param(cnic)
    scope = _SCOPE.format(codes=q.param(list(p.geo_codes)))
    sql = f"""
        SELECT h.id, h.pmt_score::float8 AS pmt_score,
               {rules.clause_sql(rule, q.param)} AS clause,
               {rules.cut_off_sql(rule, q.param)}::float8 AS applicable,
               {rules.recipient_sql("me")} AS recipient,
               {_FAMILIES} AS families
          FROM members me JOIN households h ON h.id = me.household_id
         WHERE me.cnic = {cnic_p} AND me.deceased_on IS NULL AND {scope}"""

    async def read(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(sql, *q.params)

    def record(row: asyncpg.Record | None) -> audit.AuditRecord:
        return audit.AuditRecord.of(
            p,
            endpoint=CHECK_ENDPOINT,
            filters={
                "cnic": mask_cnic(cnic),
                "programme": programme.id,
                "rule_version": programme.version,
            },
            dimensions=[],
            households=1 if row else 0,
            members=1 if row else 0,
        )

    row = await reads.audited(read, record)
    if row is None:
        return None
    clause: str = row["clause"]
    return {
        "eligible": clause == "cut_off" or clause.startswith("raised_cut_off:"),
        "clause": clause,
        "pmt_score": row["pmt_score"],
        "cut_off": _cut_off(rule, clause, row["applicable"]),
        "programme_id": str(programme.id),
        "rule_version": programme.version,
        "unit": rule.unit,
        "household_id": str(row["id"]),
        "recipient": row["recipient"] if rule.unit == "family" else None,
        "families": row["families"] if rule.unit == "family" else None,
    }


def _cut_off(rule: rules.Rule, clause: str, applicable: float) -> float:
    """The cut-off that decided: the base or the raised one that admitted the household,
    else the highest that applies to it."""
    if clause == "cut_off":
        return float(rule.cut_off)
    for raised in rule.raised_cut_offs:
        if clause == f"raised_cut_off:{raised.when}":
            return float(raised.cut_off)
    return float(Decimal(str(applicable)))


__all__ = ["CHECK_ENDPOINT", "LIST_ENDPOINT", "check", "restriction"]
