"""The durable queue over ``update_batches``: claim with a lease, process in chunks, finish.

A worker claims one batch with ``FOR UPDATE SKIP LOCKED`` and stamps ``claimed_at``; each
chunk renews the lease in the same transaction that writes the chunk, so a worker that
dies (SIGKILL, lost connection) stops renewing and another worker reclaims the batch once
the lease has expired. Positions that already have a result are skipped and the unique
``(batch_id, position)`` key makes a second outcome impossible: no record applies twice.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from app.db import asyncpg_target
from app.services import ingest_apply as apply_service
from app.services import ingest_rules as rules
from app.services import ingest_state as state_service

log = logging.getLogger("nser.ingest")

# Records per transaction: fewer, larger chunks cost fewer commits and per-chunk queries.
CHUNK = 2000
DEFAULT_LEASE_SECONDS = 60.0

_CLAIM = """
UPDATE update_batches b
   SET status = 'processing', claimed_by = $1, claimed_at = now(), attempts = b.attempts + 1
 WHERE b.id = (SELECT id FROM update_batches
                WHERE status = 'received'
                   OR (status = 'processing'
                       AND (claimed_by = $1 OR claimed_at < now() - make_interval(secs => $2)))
                ORDER BY received_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING b.id, b.client_id, b.dry_run, b.update_kinds, b.body, b.attempts
"""
# Renews the lease and proves this worker still owns the batch (row-locked until commit).
_RENEW = """
UPDATE update_batches SET claimed_at = now()
 WHERE id = $1 AND claimed_by = $2 AND status = 'processing' RETURNING id
"""


class LeaseLost(Exception):
    """Another worker reclaimed the batch; stop without writing."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Batch:
    id: uuid.UUID
    client_id: str
    dry_run: bool
    update_kinds: frozenset[str]
    records: list[Any]


async def claim(conn: asyncpg.Connection, worker: str, lease_seconds: float) -> Batch | None:
    row = await conn.fetchrow(_CLAIM, worker, lease_seconds)
    if row is None:
        return None
    doc = orjson.loads(row["body"])
    return Batch(
        row["id"], row["client_id"], row["dry_run"], frozenset(row["update_kinds"]), doc["records"]
    )


async def load_geography(conn: asyncpg.Connection) -> rules.Geography:
    rows = await conn.fetch("SELECT code, level, parent_code FROM geo_units")
    return rules.Geography(
        {r["code"]: rules.GeoUnit(r["code"], r["level"], r["parent_code"]) for r in rows}
    )


def _result(position: int, raw: Any, outcome: apply_service.Outcome) -> state_service.Row:
    ref = raw.get("ref") if isinstance(raw, dict) else None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    return {
        "position": position,
        "ref": str(ref)[:200] if ref is not None else None,
        "kind": str(kind)[:32] if kind is not None else None,
        "outcome": outcome.outcome,
        "reasons": outcome.reasons,
        "household_id": outcome.household_id,
        "member_id": outcome.member_id,
    }


class BatchRun:
    def __init__(
        self, conn: asyncpg.Connection, batch: Batch, worker: str, geo: rules.Geography
    ) -> None:
        self.conn = conn
        self.batch = batch
        self.worker = worker
        self.geo = geo
        self.today = datetime.now(UTC).date()
        # A dry run changes nothing, so its simulated state carries across chunks.
        self.dry_state = state_service.State() if batch.dry_run else None
        # Records of the next chunk parsed ahead (position -> parsed record or outcome).
        self.parsed: dict[int, tuple[Any, apply_service.Outcome | None]] = {}
        self.chunks = 0

    def _parse(self, position: int, raw: Any) -> tuple[Any, apply_service.Outcome | None]:
        rec, reasons = rules.parse_record(raw)
        if reasons:
            return None, apply_service.Outcome("rejected", reasons)
        if rec.kind not in self.batch.update_kinds:
            allowed = ", ".join(sorted(self.batch.update_kinds)) or "none"
            return None, apply_service.Outcome(
                "rejected",
                [f"kind {rec.kind!r} is not allowed by the agreement (allowed: {allowed})"],
            )
        return rec, None

    def _parse_ahead(self, positions: Sequence[int]) -> None:
        """Parse the next chunk's records (pure CPU) while the database works on this one."""
        self.parsed = {p: self._parse(p, self.batch.records[p]) for p in positions}

    async def chunk(self, positions: Sequence[int], next_positions: Sequence[int] = ()) -> None:
        """Apply these records and store their results in one transaction."""
        ahead, self.parsed = self.parsed, {}
        parsed = [(p, *(ahead.get(p) or self._parse(p, self.batch.records[p]))) for p in positions]
        records = [rec for _, rec, early in parsed if early is None]
        n_households = sum(1 for r in records if r.kind == "new_household")
        n_members = sum(
            len(r.household.members) if r.kind == "new_household" else 1
            for r in records
            if r.kind in ("new_household", "member_birth")
        )
        conn = self.conn
        async with conn.transaction():
            if not await conn.fetchval(_RENEW, self.batch.id, self.worker):
                raise LeaseLost(str(self.batch.id))
            state = self.dry_state if self.dry_state is not None else state_service.State()
            await state_service.load(
                conn, apply_service.wanted(records), state, lock=not self.batch.dry_run
            )
            dry = self.batch.dry_run
            ctx = apply_service.Context(
                state=state,
                geography=self.geo,
                today=self.today,
                batch_id=str(self.batch.id),
                actor=self.batch.client_id,
                ref="",
                new_household_ids=[]
                if dry
                else await state_service.allocate_ids(conn, "households", n_households),
                new_member_ids=[]
                if dry
                else await state_service.allocate_ids(conn, "members", n_members),
                dry_run=dry,
            )
            results = []
            for position, rec, early in parsed:
                raw = self.batch.records[position]
                if early is None:
                    ctx.ref = rec.ref
                    early = apply_service.apply(ctx, rec)
                results.append(_result(position, raw, early))
            if dry:
                state.clear_writes()
            await state_service.write(
                conn, state, results, str(self.batch.id), lambda: self._parse_ahead(next_positions)
            )
        if not gc.isenabled():
            # See _quiet_gc: what this chunk allocated and left alive, and now and then the
            # survivors of earlier passes too (the frozen body is never scanned).
            self.chunks += 1
            gc.collect(1 if self.chunks % 16 == 0 else 0)

    async def reject_alone(self, position: int, exc: Exception) -> None:
        raw = self.batch.records[position]
        outcome = apply_service.Outcome(
            "rejected", [f"the registry refused the change: {getattr(exc, 'message', str(exc))}"]
        )
        async with self.conn.transaction():
            if not await self.conn.fetchval(_RENEW, self.batch.id, self.worker):
                raise LeaseLost(str(self.batch.id))
            await state_service.write(
                self.conn,
                state_service.State(),
                [_result(position, raw, outcome)],
                str(self.batch.id),
            )

    async def run(self) -> None:
        done = {
            r["position"]
            for r in await self.conn.fetch(
                "SELECT position FROM update_results WHERE batch_id = $1", self.batch.id
            )
        }
        todo = [p for p in range(len(self.batch.records)) if p not in done]
        for start in range(0, len(todo), CHUNK):
            positions = todo[start : start + CHUNK]
            try:
                await self.chunk(positions, todo[start + CHUNK : start + 2 * CHUNK])
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, LeaseLost):
                raise
            except asyncpg.PostgresError as exc:
                # One record the database refuses (e.g. a CNIC registered meanwhile by another
                # batch) must not block the others: redo this chunk one record at a time.
                log.warning("chunk failed, retrying record by record", extra={"error": str(exc)})
                await self._one_by_one(positions)
        await self.conn.execute(
            """UPDATE update_batches SET status = 'done', finished_at = now()
                WHERE id = $1 AND claimed_by = $2""",
            self.batch.id,
            self.worker,
        )

    async def _one_by_one(self, positions: Sequence[int]) -> None:
        if self.dry_state is not None:
            self.dry_state = state_service.State()
        for p in positions:
            try:
                await self.chunk([p])
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, LeaseLost):
                raise
            except asyncpg.PostgresError as exc:
                await self.reject_alone(p, exc)


_gc_holders = 0


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """No automatic cyclic GC while a batch runs; an explicit pass after each chunk instead.

    The parsed body (up to 100,000 records) and the chunk states are large and acyclic:
    automatic passes re-scanned them over and over (a fifth of the processing time).
    Objects alive at the start are frozen out of the GC (refcounting still frees them) and
    ``BatchRun.chunk`` collects the young generations after each chunk (cheap: the chunk's
    state is already freed), so cyclic garbage stays bounded.
    Reentrant across in-process workers: the first in disables, the last out restores.
    """
    global _gc_holders
    if _gc_holders == 0:
        gc.disable()
    _gc_holders += 1
    gc.freeze()
    try:
        yield
    finally:
        _gc_holders -= 1
        if _gc_holders == 0:
            gc.unfreeze()
            gc.enable()


async def process_one(conn: asyncpg.Connection, worker: str, lease_seconds: float) -> bool:
    """Claim and finish one batch; False when the queue is empty."""
    with _quiet_gc():
        batch = await claim(conn, worker, lease_seconds)
        if batch is None:
            return False
        gc.freeze()  # the parsed body too
        log.info("batch claimed", extra={"batch_id": str(batch.id), "records": len(batch.records)})
        geo = await load_geography(conn)
        await BatchRun(conn, batch, worker, geo).run()
    log.info("batch done", extra={"batch_id": str(batch.id)})
    return True


async def run_worker(
    dsn: str,
    *,
    host: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    poll_seconds: float = 0.5,
    stop: asyncio.Event | None = None,
    exit_when_idle: bool = False,
) -> None:
    """Process batches until ``stop`` is set; survives database restarts by reconnecting."""
    stop = stop or asyncio.Event()
    worker = worker_name()
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    dsn, host=host, server_settings={"application_name": "nser-worker"}
                )
            if await process_one(conn, worker, lease_seconds):
                continue
            if exit_when_idle:
                break
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            OSError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
        ) as exc:
            log.warning("database unavailable; retrying", extra={"error": str(exc)})
            if conn is not None:
                conn.terminate()
            conn = None
        except LeaseLost as exc:
            log.warning(
                "lease lost; batch taken over by another worker", extra={"batch_id": str(exc)}
            )
        except Exception:
            log.exception("worker error; retrying")
            if conn is not None:
                conn.terminate()
            conn = None
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
        except TimeoutError:
            pass
    if conn is not None:
        await conn.close()


@dataclass
class InProcessWorkers:
    """Workers running inside the service (NSER_IN_PROCESS_WORKERS), stopped with it."""

    tasks: list[asyncio.Task[None]]
    stop_event: asyncio.Event

    async def stop(self) -> None:
        self.stop_event.set()
        if self.tasks:
            # A batch is left mid-way only at a chunk boundary; its lease lets another resume it.
            _, pending = await asyncio.wait(self.tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def start_in_process(
    url: str, count: int, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> InProcessWorkers:
    target = asyncpg_target(url)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_worker(target.dsn, host=target.host, lease_seconds=lease_seconds, stop=stop),
            name=f"nser-ingest-worker-{i}",
        )
        for i in range(max(count, 0))
    ]
    return InProcessWorkers(tasks, stop)
