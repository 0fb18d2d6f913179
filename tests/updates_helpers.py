"""Helpers for the updates-back tests: a partner allowed every kind, batches, waiting."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
from partner_helpers import create_partner, get_token

from app.schemas.updates import UPDATE_KINDS


async def updates_partner(url: str, client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """A partner whose agreement allows every record kind; returns its ids and a token."""
    partner = create_partner(url, name=name, update_kinds="member_birth")
    conn = await asyncpg.connect(url)
    try:
        # The CLI's kind list may lag behind the kinds the ingest service supports.
        await conn.execute(
            "UPDATE agreements SET update_kinds = $1 WHERE id = $2::uuid",
            list(UPDATE_KINDS),
            partner["agreement_id"],
        )
    finally:
        await conn.close()
    token = await get_token(client, partner["client_id"], partner["client_secret"])
    return {**partner, "token": token}


def headers(partner: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {partner['token']}",
        "Idempotency-Key": key or uuid.uuid4().hex,
    }


async def wait_done(
    client: httpx.AsyncClient, partner: dict[str, str], batch_id: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await client.get(f"/v1/partner/updates/{batch_id}", headers=headers(partner))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] == "done":
            return body
        assert asyncio.get_running_loop().time() < deadline, body["status"]
        await asyncio.sleep(0.1)


async def send(
    client: httpx.AsyncClient,
    partner: dict[str, str],
    records: list[dict[str, Any]],
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """POST a batch and wait for every outcome."""
    r = await client.post(
        "/v1/partner/updates",
        json={"dry_run": dry_run, "records": records},
        headers=headers(partner),
    )
    assert r.status_code == 202, r.text
    return await wait_done(client, partner, r.json()["batch_id"])


async def checksum(conn: asyncpg.Connection) -> str:
    """One digest over every registry table an update can touch."""
    parts = []
    for table in ("households", "members", "household_history"):
        parts.append(
            await conn.fetchval(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t"
            )
        )
    return ":".join(parts)
