"""The drill's clients: public look-ups, NDJSON exports and update batches, each recorded.

Every request is kept with its start and end (seconds on one monotonic clock), its status
(None when the connection failed) and what the drill checks afterwards: Retry-After on a
503, how an export's body ended, which update batches were acknowledged. The clients behave
as the API asks a client to: a look-up is simply asked again, an update batch is re-sent
with the same Idempotency-Key and the same bytes until it is acknowledged (202, or 200
for a batch already stored).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import httpx
import orjson

BENEFICIARIES = "/v1/partner/beneficiaries"
UPDATES = "/v1/partner/updates"


def now() -> float:
    return time.monotonic()


@dataclass
class Lookup:
    start: float
    end: float
    status: int | None
    retry_after: str | None
    error: str | None


@dataclass
class Export:
    start: float
    end: float
    status: int | None
    retry_after: str | None = None
    lines: int = 0
    households: int = 0  # distinct household ids among the lines
    clean_end: bool = False  # the body ended as HTTP framing says a complete body ends
    error: str | None = None


@dataclass
class Batch:
    key: str
    body: bytes
    households: list[int]
    phones: list[str]
    attempts: list[tuple[float, int | str]] = field(default_factory=list)
    batch_id: str | None = None
    acked_at: float | None = None


@dataclass
class Recorder:
    lookups: list[Lookup] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)


async def lookups(
    client: httpx.AsyncClient,
    cnics: Sequence[str],
    stop: asyncio.Event,
    out: list[Lookup],
    pause: float = 0.02,
) -> None:
    """GET /v1/public/scores/{cnic} in a loop until ``stop``."""
    rng = random.Random()
    while not stop.is_set():
        start = now()
        try:
            r = await client.get(f"/v1/public/scores/{rng.choice(cnics)}")
            out.append(Lookup(start, now(), r.status_code, r.headers.get("retry-after"), None))
        except httpx.HTTPError as exc:
            out.append(Lookup(start, now(), None, None, f"{type(exc).__name__}: {exc}"))
        await asyncio.sleep(pause)


async def export(
    client: httpx.AsyncClient,
    token: str,
    *,
    first_line: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
) -> Export:
    """One NDJSON export of every household of the partner's agreement.

    With ``hold``, the export stops reading after its first line (setting ``first_line``)
    until ``hold`` is set: the service is then blocked in the middle of the body, its
    snapshot open on the primary, as with a slow client.
    """
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"}
    record = Export(now(), 0.0, None)
    ids: set[object] = set()
    try:
        async with client.stream("GET", BENEFICIARIES, headers=headers) as r:
            record.status = r.status_code
            record.retry_after = r.headers.get("retry-after")
            if r.status_code != 200:
                await r.aread()
            else:
                async for line in r.aiter_lines():
                    record.lines += 1
                    ids.add(orjson.loads(line)["household_id"])
                    if hold is not None and not hold.is_set():
                        if first_line is not None:
                            first_line.set()
                        await hold.wait()
                record.clean_end = True
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    except orjson.JSONDecodeError as exc:  # a line cut in the middle
        record.error = f"JSONDecodeError: {exc}"
    record.households = len(ids)
    record.end = now()
    return record


async def exports(
    client: httpx.AsyncClient, token: str, stop: asyncio.Event, out: list[Export], pause: float
) -> None:
    while not stop.is_set():
        out.append(await export(client, token))
        await asyncio.sleep(pause)


_phones = itertools.count(1)


def phone_batch(households: Sequence[int]) -> Batch:
    """A batch of phone changes, one per household, each to a phone never used before."""
    phones = [f"+923{next(_phones):09d}" for _ in households]
    records = [
        {"ref": f"r{i}", "kind": "phone_change", "household_id": hid, "phone": phone}
        for i, (hid, phone) in enumerate(zip(households, phones, strict=True))
    ]
    body = orjson.dumps({"records": records})
    return Batch(uuid.uuid4().hex, body, list(households), phones)


async def send(client: httpx.AsyncClient, token: str, batch: Batch) -> None:
    """POST the batch until it is acknowledged, with the same key and bytes every time.

    503 (the registry unavailable) and 409 (the same key still being stored) are retried
    after their Retry-After (at most 1 s here), a failed connection after 0.5 s. Anything
    else ends the attempts and is left in ``batch.attempts`` for the drill to refuse.
    """
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": batch.key,
        "Content-Type": "application/json",
    }
    while True:
        try:
            r = await client.post(UPDATES, content=batch.body, headers=headers)
        except httpx.HTTPError as exc:
            batch.attempts.append((now(), type(exc).__name__))
            await asyncio.sleep(0.5)
            continue
        batch.attempts.append((now(), r.status_code))
        if r.status_code in (200, 202):
            batch.batch_id = r.json()["batch_id"]
            batch.acked_at = now()
            return
        if r.status_code not in (409, 503):
            return
        await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 1.0))


async def updates(
    client: httpx.AsyncClient,
    token: str,
    households: Sequence[int],
    stop: asyncio.Event,
    out: list[Batch],
    size: int,
    pause: float,
) -> None:
    """Batches of ``size`` phone changes over ``households``, one after the other (each
    acknowledged before the next is sent), until ``stop``."""
    rng = random.Random()
    while not stop.is_set():
        batch = phone_batch(rng.sample(list(households), size))
        out.append(batch)
        await send(client, token, batch)
        await asyncio.sleep(pause)


@dataclass(frozen=True)
class Window:
    first_failure: float  # when the first failed look-up was answered
    recovered: float  # when the first look-up after the last failure was answered 200

    @property
    def seconds(self) -> float:
        return self.recovered - self.first_failure


def failover_window(results: Sequence[Lookup]) -> Window | None:
    """From the first failed look-up to the first 200 after the last failure (None: no
    look-up failed, or none succeeded after the last failure)."""
    ordered = sorted(results, key=lambda r: r.end)
    failed = [r for r in ordered if r.status != 200]
    if not failed:
        return None
    last_failure = failed[-1].end
    after = [r for r in ordered if r.status == 200 and r.start >= last_failure]
    if not after:
        return None
    return Window(failed[0].end, after[0].end)


# -- the checks afterwards (the drill, tests/faults) -----------------------------------


async def export_open(url: str, exports: int = 1) -> bool:
    """Whether at least ``exports`` sessions on the primary are inside an export's snapshot
    (its cursor over the household documents declared, the transaction not yet ended)."""
    conn = await asyncpg.connect(url)
    try:
        open_now = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND xact_start IS NOT NULL AND query ILIKE '%::text FROM households h%'"
        )
        return bool(open_now >= exports)
    finally:
        await conn.close()


async def wait_applied(owner_url: str, batches: list[Batch]) -> float:
    """Seconds until every acknowledged batch is done."""
    ids = [b.batch_id for b in batches]
    assert all(ids), [b.attempts for b in batches if not b.batch_id]
    started = now()
    while True:
        try:
            conn = await asyncpg.connect(owner_url)
            try:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM update_batches WHERE id = ANY($1::uuid[])"
                    " AND status <> 'done'",
                    ids,
                )
            finally:
                await conn.close()
            if pending == 0:
                return now() - started
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        assert now() - started < 120, f"{pending} acknowledged batches not applied in 120 s"
        await asyncio.sleep(0.5)


async def check_batches(
    owner_url: str,
    batches: list[Batch],
    client_id: str,
    since: datetime,
    versions: dict[int, int],
) -> None:
    """Every acknowledged batch stored once under its id and applied exactly once (the
    batches of the client received ``since``)."""
    conn = await asyncpg.connect(owner_url)
    try:
        stored = await conn.fetch(
            """SELECT b.id::text AS id, b.idempotency_key AS key, b.status, b.record_count,
                      (SELECT count(*) FROM update_results r WHERE r.batch_id = b.id) AS results,
                      (SELECT count(DISTINCT position) FROM update_results r
                        WHERE r.batch_id = b.id) AS positions,
                      (SELECT count(*) FROM update_results r
                        WHERE r.batch_id = b.id AND r.outcome = 'applied') AS applied,
                      (SELECT count(*) FROM household_history h
                        WHERE h.batch_id = b.id::text) AS history
                 FROM update_batches b WHERE b.client_id = $1 AND b.received_at >= $2
                ORDER BY b.received_at""",
            client_id,
            since,
        )
        by_key = {r["key"]: r for r in stored}
        lost = [b.batch_id for b in batches if b.key not in by_key]
        assert not lost, f"{len(lost)} of {len(batches)} acknowledged batches lost: {lost}"
        # Nothing stored that was not acknowledged (the clients retry until it is).
        assert len(stored) == len(batches), (len(stored), len(batches))
        for b in batches:
            row = by_key[b.key]
            assert row["id"] == b.batch_id, (row["id"], b.batch_id)
            n = len(b.households)
            assert row["status"] == "done", dict(row)
            assert row["record_count"] == n, dict(row)
            assert row["results"] == row["positions"] == row["applied"] == n, dict(row)
            assert row["history"] == n, dict(row)
        # One version step per record; the last phone each household was sent.
        steps: Counter[int] = Counter()
        last_phone: dict[int, str] = {}
        order = {r["key"]: i for i, r in enumerate(stored)}
        for b in sorted(batches, key=lambda b: order[b.key]):
            steps.update(b.households)
            last_phone.update(zip(b.households, b.phones, strict=True))
        rows = await conn.fetch(
            "SELECT id, version, phone FROM households WHERE id = ANY($1::bigint[])",
            list(steps),
        )
        for r in rows:
            assert r["version"] == versions[r["id"]] + steps[r["id"]], dict(r)
            assert r["phone"] == last_phone[r["id"]], dict(r)
    finally:
        await conn.close()
