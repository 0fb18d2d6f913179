"""The durable queue over ``update_batches``: claim with a lease, process in chunks, finish.

A worker claims one batch with ``FOR UPDATE SKIP LOCKED`` and stamps ``claimed_at``; each
chunk renews the lease in the same transaction that writes the chunk, so a worker that
dies (SIGKILL, lost connection) stops renewing and another worker reclaims the batch once
the lease has expired. Positions that already have a result are skipped and the unique
``(batch_id, position)`` key makes a second outcome impossible: no record applies twice.

A partner's batch runs under its agreement as it is when each chunk commits: records are
matched inside the agreement's geography only (``apply.Context.scope``), and every chunk
proves, in its own transaction and with a share lock on the agreement row, that the
agreement is still active. A batch whose agreement was suspended, revoked or expired
before (or while) it ran stops: every record without an outcome is rejected with the
reason, the batch is ``done`` with ``stopped`` saying why, and nothing more is applied.
Every chunk, dry runs included, writes its audit row in the transaction that stores its
outcomes: the kinds and outcomes counted and the households and members matched.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.transaction import Transaction

from app.auth.partner import check_agreement
from app.db import asyncpg_target, server_settings
from app.errors import Forbidden
from app.services.audit import trail as audit
from app.services.ingest import apply as apply_service
from app.services.ingest import rules
from app.services.ingest import state as state_service
from app.services.pmt import model as pmt_service
from app.services.sharing.rules import readable_dimensions
from app.services.targeting import simulation as simulation_service

log = logging.getLogger("nser.ingest")

# Records per transaction: fewer, larger chunks cost fewer commits and per-chunk queries.
CHUNK = 2000
# A pipelined batch: up to two chunks writing, one being applied, one loading.
PIPELINE_CONNECTIONS = 4
MAX_WRITING = 2
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
RETURNING b.id, b.client_id, b.dry_run, b.update_kinds, b.body, b.attempts, b.source,
          b.agreement_id, b.organization_id
"""
# Renews the lease (and proves this worker still owns the batch): between transactions.
_RENEW = """
UPDATE update_batches SET claimed_at = now()
 WHERE id = $1 AND claimed_by = $2 AND status = 'processing' RETURNING id
"""
# Proves, inside a chunk's transaction, that this worker still owns the batch, and holds a
# share lock on it until commit: a reclaim (FOR UPDATE) cannot slip in between, while the
# chunks this worker writes at the same time do not wait for each other. The agreement row
# is share-locked too: a suspension (which locks it FOR UPDATE) waits for the chunk's
# commit, and the next chunk sees it.
_OWNED = """
WITH b AS (SELECT id, agreement_id FROM update_batches
            WHERE id = $1 AND claimed_by = $2 AND status = 'processing' FOR SHARE)
SELECT b.id, a.id AS agreement_id, a.status, a.valid_from, a.valid_to
  FROM b LEFT JOIN LATERAL (SELECT id, status, valid_from, valid_to FROM agreements
                             WHERE id = b.agreement_id FOR SHARE) a ON true
"""
_AGREEMENT = """
SELECT id AS agreement_id, status, valid_from, valid_to, geo_codes, categories, dimensions
  FROM agreements WHERE id = $1
"""
# The audit log's name for a chunk of an update batch processed (its outcomes disclose
# whether the records matched the registry).
AUDIT_ENDPOINT = "POST /v1/partner/updates (processed)"


class LeaseLost(Exception):
    """Another worker reclaimed the batch; stop without writing."""


class AgreementStopped(Exception):
    """The batch's agreement is no longer active: stop applying, reject what is left."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _agreement_problem(row: asyncpg.Record | None) -> str | None:
    """Why a partner batch may not run under this agreement now (None: it may)."""
    if row is None or row["agreement_id"] is None:
        return "the agreement no longer exists"
    try:
        check_agreement(row)
    except Forbidden as exc:
        return exc.detail
    return None


async def _owned(conn: asyncpg.Connection, batch: Batch, worker: str) -> None:
    """Inside a chunk's transaction: the lease is ours and the agreement still active."""
    row = await conn.fetchrow(_OWNED, batch.id, worker)
    if row is None:
        raise LeaseLost(str(batch.id))
    if batch.source == "partner" and (problem := _agreement_problem(row)):
        raise AgreementStopped(problem)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Batch:
    id: uuid.UUID
    client_id: str
    dry_run: bool
    update_kinds: frozenset[str]
    records: list[Any]
    # ``staff``: a registry staff batch (a grievance's re-survey); else a partner's.
    source: str = "partner"
    agreement_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None


async def claim(conn: asyncpg.Connection, worker: str, lease_seconds: float) -> Batch | None:
    row = await conn.fetchrow(_CLAIM, worker, lease_seconds)
    if row is None:
        return None
    doc = orjson.loads(row["body"])
    return Batch(
        row["id"],
        row["client_id"],
        row["dry_run"],
        frozenset(row["update_kinds"]),
        doc["records"],
        row["source"],
        row["agreement_id"],
        row["organization_id"],
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
        "unchanged": outcome.unchanged or outcome.outcome == "unchanged",
    }


# Errors after which the connection (or the lease) is gone: the worker reconnects and the
# batch resumes from its stored results. Any other database error refuses one chunk, which
# is then redone one record at a time.
_FATAL: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    OSError,
    LeaseLost,
    AgreementStopped,
)


async def _rollback(tx: Transaction) -> None:
    """Roll back if still open; a broken connection is the worker loop's to handle."""
    try:
        await tx.rollback()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass


@dataclass
class Step:
    """One chunk between its load and its commit: an open transaction holding the locks on
    the chunk's households, the registry slice it read, and (once applied) its results."""

    conn: asyncpg.Connection
    tx: Transaction
    positions: Sequence[int]
    parsed: list[tuple[int, Any, apply_service.Outcome | None]]
    wanted: state_service.Wanted
    state: state_service.State
    household_ids: list[int]
    member_ids: list[int]
    model: pmt_service.PmtModel | None
    rows: state_service.Flush | None = None
    audit: audit.AuditRecord | None = None


def depends(wanted: state_service.Wanted, earlier: state_service.State) -> bool:
    """Whether a chunk loaded while ``earlier`` was still uncommitted may have read stale rows.

    Households are safe: the later chunk locks them ``FOR UPDATE``, which waits for the
    earlier chunk's commit and then reads the committed row, and reads their members after
    that. What it looks up without a lock can be stale: which member holds a CNIC (a member
    moved, a CNIC issued or registered by the earlier chunk), where a member id lives, and
    which form numbers are taken. The earlier chunk holds every CNIC, member and form
    number it read or wrote, so no overlap with those means nothing stale was read.
    """
    return (
        not wanted.cnics.isdisjoint(earlier.cnic_owner)
        or not wanted.form_numbers.isdisjoint(earlier.form_numbers)
        or any(m in earlier.members or m in earlier.stray_members for m in wanted.member_ids)
    )


class BatchRun:
    """Processes one claimed batch, ``chunk`` records per transaction.

    With ``PIPELINE_CONNECTIONS`` connections (``conn`` and the ``spares``), chunks are
    pipelined: while earlier chunks are written and committed, chunk N is applied in
    Python (its households locked by its own open transaction) and chunk N+1 is loaded, so
    PostgreSQL and Python work at the same time (see :meth:`_pipelined`). A chunk that may
    have read something an uncommitted earlier chunk changes (see :func:`depends`) is
    re-read once that one has committed, so every record still sees the effect of every
    earlier record, as if the batch ran one record at a time.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        batch: Batch,
        worker: str,
        geo: rules.Geography,
        *,
        chunk: int = CHUNK,
        spares: Sequence[asyncpg.Connection] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.conn = conn
        self.lease_seconds = lease_seconds
        self.renewed_at = time.monotonic()  # claimed just now
        # The pipeline's connections (the first is ``conn``, for everything done alone).
        self.conns = (conn, *spares)
        self.batch = batch
        self.worker = worker
        self.geo = geo
        self.chunk_size = max(chunk, 1)
        self.today = datetime.now(UTC).date()
        # A dry run changes nothing, so its simulated state carries across chunks.
        self.dry_state = state_service.State() if batch.dry_run else None
        self.reloads = 0
        # A partner's batch: its agreement's geography and what it may read (set by
        # :meth:`run`); a staff batch has neither limit.
        self.scope: frozenset[str] = frozenset()
        self.readable: frozenset[str] | None = None

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

    async def _begin(self, conn: asyncpg.Connection, positions: Sequence[int]) -> Step:
        """Open the chunk's transaction, lock and read what its records name, allocate ids."""
        parsed = [(p, *self._parse(p, self.batch.records[p])) for p in positions]
        records = [rec for _, rec, early in parsed if early is None]
        n_households = sum(1 for r in records if r.kind == "new_household")
        n_members = sum(
            len(r.household.members) if r.kind == "new_household" else 1
            for r in records
            if r.kind in ("new_household", "member_birth")
        )
        dry = self.batch.dry_run
        wanted = apply_service.wanted(records)
        state = self.dry_state if self.dry_state is not None else state_service.State()
        if time.monotonic() - self.renewed_at > self.lease_seconds / 4:
            # Between transactions, so no chunk's transaction holds the row while waiting.
            self.renewed_at = time.monotonic()
            if not await conn.fetchval(_RENEW, self.batch.id, self.worker):
                raise LeaseLost(str(self.batch.id))
        tx = conn.transaction()
        await tx.start()
        try:
            await state_service.load(conn, wanted, state, lock=not dry)
            household_ids = (
                [] if dry else await state_service.allocate_ids(conn, "households", n_households)
            )
            member_ids = [] if dry else await state_service.allocate_ids(conn, "members", n_members)
            model = None if dry else await pmt_service.current_model(conn)
        except BaseException:
            await _rollback(tx)
            raise
        return Step(conn, tx, positions, parsed, wanted, state, household_ids, member_ids, model)

    async def _reload(self, step: Step) -> None:
        """Read the chunk's slice again (same transaction, locks kept) after the chunk it
        depends on has committed."""
        self.reloads += 1
        step.state = state_service.State()
        await state_service.load(step.conn, step.wanted, step.state, lock=True)

    async def _apply(self, step: Step) -> None:
        """Apply the chunk's records in order to its in-memory slice, re-score, and build
        the rows to write (pure CPU)."""
        ctx = apply_service.Context(
            state=step.state,
            geography=self.geo,
            today=self.today,
            batch_id=str(self.batch.id),
            actor=self.batch.client_id,
            ref="",
            new_household_ids=step.household_ids,
            new_member_ids=step.member_ids,
            dry_run=self.batch.dry_run,
            history_source="staff" if self.batch.source == "staff" else "partner_batch",
            scope=self.scope,
            readable=self.readable,
        )
        results = []
        for i, (position, rec, early) in enumerate(step.parsed, 1):
            raw = self.batch.records[position]
            if early is None:
                ctx.ref = rec.ref
                early = apply_service.apply(ctx, rec)
            results.append(_result(position, raw, early))
            if i % state_service.SLICE == 0:
                await asyncio.sleep(0)
        if self.batch.dry_run:
            step.state.clear_writes()
        step.audit = self._audit_record(ctx, results)
        step.rows = await state_service.prepare(step.state, results, str(self.batch.id), step.model)

    def _audit_record(
        self, ctx: apply_service.Context, results: list[state_service.Row]
    ) -> audit.AuditRecord:
        """The chunk's audit row: what was sent (kinds), what it was told (outcomes) and
        which households and members its records were matched to."""
        kinds = Counter(str(r["kind"]) for r in results)
        outcomes = Counter(str(r["outcome"]) for r in results)
        return audit.AuditRecord(
            actor_type="staff" if self.batch.source == "staff" else "partner",
            client_id=self.batch.client_id,
            agreement_id=self.batch.agreement_id,
            organization_id=self.batch.organization_id,
            endpoint=AUDIT_ENDPOINT,
            filters={
                "batch_id": str(self.batch.id),
                "dry_run": str(self.batch.dry_run).lower(),
                "positions": f"{results[0]['position']}-{results[-1]['position']}",
                "kinds": [f"{k}={n}" for k, n in sorted(kinds.items())],
                "outcomes": [f"{k}={n}" for k, n in sorted(outcomes.items())],
                "households": sorted(ctx.matched_households),
                "members": sorted(ctx.matched_members),
            },
            dimensions=[],
            households=len(ctx.matched_households),
            members=len(ctx.matched_members),
            request_id=None,
        )

    async def _finish(self, step: Step) -> None:
        """Prove the lease, write the chunk and its results, commit (PostgreSQL only)."""
        assert step.rows is not None
        try:
            await _owned(step.conn, self.batch, self.worker)
            await state_service.flush(step.conn, step.rows)
            if step.audit is not None:
                # Last before the commit: the audit log's lock is held only until then.
                await audit.append(step.conn, step.audit)
            await step.tx.commit()
        except BaseException:
            await _rollback(step.tx)
            raise
        if not gc.isenabled():
            # See _quiet_gc: what is alive now (the next chunk's slice, in a pipeline) is
            # moved out of the collector's sight; refcounting still frees it.
            gc.freeze()

    async def chunk(self, positions: Sequence[int]) -> None:
        """Apply these records and store their results in one transaction."""
        step = await self._begin(self.conn, positions)
        try:
            await self._apply(step)
        except BaseException:
            await _rollback(step.tx)
            raise
        await self._finish(step)

    async def reject_alone(self, position: int, exc: Exception) -> None:
        raw = self.batch.records[position]
        outcome = apply_service.Outcome(
            "rejected", [f"the registry refused the change: {getattr(exc, 'message', str(exc))}"]
        )
        async with self.conn.transaction():
            await _owned(self.conn, self.batch, self.worker)
            await state_service.write(
                self.conn,
                state_service.State(),
                [_result(position, raw, outcome)],
                str(self.batch.id),
            )

    async def run(self) -> None:
        if self.batch.source == "partner":
            agreement = await self.conn.fetchrow(_AGREEMENT, self.batch.agreement_id)
            if problem := _agreement_problem(agreement):
                await self._stop(problem)
                return
            assert agreement is not None
            self.scope = frozenset(agreement["geo_codes"])
            self.readable = readable_dimensions(agreement["categories"], agreement["dimensions"])
        try:
            await self._run_chunks()
        except AgreementStopped as exc:
            await self._stop(exc.reason)
            return
        await self.conn.execute(
            """UPDATE update_batches SET status = 'done', finished_at = now()
                WHERE id = $1 AND claimed_by = $2""",
            self.batch.id,
            self.worker,
        )

    async def _done_positions(self) -> set[int]:
        return {
            r["position"]
            for r in await self.conn.fetch(
                "SELECT position FROM update_results WHERE batch_id = $1", self.batch.id
            )
        }

    async def _run_chunks(self) -> None:
        done = await self._done_positions()
        todo = [p for p in range(len(self.batch.records)) if p not in done]
        size = self.chunk_size
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        if len(self.conns) >= PIPELINE_CONNECTIONS and not self.batch.dry_run and len(chunks) > 1:
            await self._pipelined(chunks)
        else:
            for positions in chunks:
                await self._serial(positions)

    async def _stop(self, reason: str) -> None:
        """End a batch whose agreement stopped: every record still without an outcome is
        rejected with the reason (none of it was applied), the batch is done and says
        why. Records already applied stay applied."""
        log.warning("batch stopped", extra={"batch_id": str(self.batch.id), "reason": reason})
        why = f"not applied: {reason}; the batch was stopped before this record"
        async with self.conn.transaction():
            if not await self.conn.fetchval(
                "SELECT id FROM update_batches WHERE id = $1 AND claimed_by = $2"
                " AND status = 'processing' FOR UPDATE",
                self.batch.id,
                self.worker,
            ):
                raise LeaseLost(str(self.batch.id))
            done = await self._done_positions()
            outcome = apply_service.Outcome("rejected", [why])
            results = [
                _result(p, raw, outcome)
                for p, raw in enumerate(self.batch.records)
                if p not in done
            ]
            rows = await state_service.prepare(
                state_service.State(), results, str(self.batch.id), None
            )
            await state_service.flush(self.conn, rows)
            await self.conn.execute(
                """UPDATE update_batches SET status = 'done', finished_at = now(),
                          stopped_reason = $3
                    WHERE id = $1 AND claimed_by = $2""",
                self.batch.id,
                self.worker,
                reason,
            )

    async def _serial(self, positions: Sequence[int]) -> None:
        try:
            await self.chunk(positions)
        except _FATAL:
            raise
        except asyncpg.PostgresError as exc:
            # One record the database refuses (e.g. a CNIC registered meanwhile by another
            # batch) must not block the others: redo this chunk one record at a time.
            log.warning("chunk failed, retrying record by record", extra={"error": str(exc)})
            await self._one_by_one(positions)

    @staticmethod
    async def _settled(pending: asyncio.Future[None]) -> bool:
        """Wait for a chunk's commit; False if the database refused the chunk (its
        transaction is rolled back; the caller redoes it record by record once no other
        transaction is open)."""
        try:
            await pending
            return True
        except _FATAL:
            raise
        except asyncpg.PostgresError as exc:
            log.warning("chunk failed, retrying record by record", extra={"error": str(exc)})
            return False

    def _load(
        self, positions: Sequence[int], busy: Sequence[Step | None]
    ) -> asyncio.Future[Step | None]:
        """Start loading a chunk on a connection no other chunk in flight is using."""
        taken = {id(s.conn) for s in busy if s is not None}
        conn = next(c for c in self.conns if id(c) not in taken)

        async def begin() -> Step | None:
            try:
                return await self._begin(conn, positions)
            except _FATAL:
                raise
            except asyncpg.PostgresError as exc:
                # E.g. a lock wait the database broke as a deadlock: the caller redoes the
                # chunk alone.
                log.warning("chunk load failed, retrying alone", extra={"error": str(exc)})
                return None

        return asyncio.ensure_future(begin())

    @staticmethod
    async def _discard(loading: asyncio.Future[Step | None], *, cancel: bool = False) -> None:
        """Drop a chunk loaded ahead: its transaction rolled back, its locks released.

        ``cancel`` only on the way out with an error (the worker then drops its
        connections); otherwise the load is let finish, so its connection stays clean."""
        if cancel and not loading.done():
            loading.cancel()
        try:
            step = await loading
        except (asyncio.CancelledError, Exception):
            return  # the load's own handler rolled its transaction back
        if step is not None:
            await _rollback(step.tx)

    async def _pipelined(self, chunks: list[list[int]]) -> None:
        """Chunk N+1 loading, chunk N applied in Python, chunks N-1 and N-2 writing.

        Each iteration waits for chunk N's load, starts N+1's, applies N once nothing it
        read can still change (:meth:`_apply_when_ready`), keeps at most ``MAX_WRITING``
        writes in flight, and starts N's. Two chunks writing
        at once never touch the same household, CNIC or form number: the later one would
        have waited for the earlier one's locks when it loaded, or have been re-read after
        its commit; so their commit order does not matter (a crash leaves any subset
        committed, and the rest is redone on resume).
        """
        writing: list[tuple[asyncio.Future[None], Step]] = []
        ahead: tuple[asyncio.Future[Step | None], list[Step]] | None = None
        k = 0
        try:
            while k < len(chunks):
                if ahead is None:
                    busy = [s for _, s in writing]
                    ahead = (self._load(chunks[k], busy), busy)
                loading, stale_wrt = ahead
                ahead = None
                step = await loading
                if step is not None and k + 1 < len(chunks):
                    # Uncommitted while the next load runs: this chunk and the writing.
                    busy = [*(s for _, s in writing), step]
                    ahead = (self._load(chunks[k + 1], busy), busy)
                try:
                    failed = (
                        []
                        if step is None
                        else await self._apply_when_ready(step, writing, stale_wrt)
                    )
                    failed += await self._drain(writing, MAX_WRITING - 1)
                except BaseException:
                    if step is not None:
                        await _rollback(step.tx)
                    raise
                if failed or step is None:
                    # A refused chunk goes record by record once nothing else is open; this
                    # chunk is then read again (it may have read rows the refused one held).
                    if step is not None:
                        await _rollback(step.tx)
                    if ahead is not None:
                        await self._discard(ahead[0])
                        ahead = None
                    failed += await self._drain(writing, 0)
                    for refused in failed:
                        await self._one_by_one(refused.positions)
                    if step is None and not failed:
                        await self._serial(chunks[k])
                        k += 1
                    continue
                writing.append((asyncio.ensure_future(self._finish(step)), step))
                k += 1
            for refused in await self._drain(writing, 0):
                await self._one_by_one(refused.positions)
        except AgreementStopped:
            # Let the writes in flight end by themselves (each commits, or finds the
            # agreement stopped too and rolls back), so every connection is clean for
            # :meth:`_stop`.
            await asyncio.gather(*(f for f, _ in writing), return_exceptions=True)
            writing.clear()
            if ahead is not None:
                await self._discard(ahead[0])
                ahead = None
            raise
        finally:
            for future, _ in writing:
                future.cancel()
            await asyncio.gather(*(f for f, _ in writing), return_exceptions=True)
            if ahead is not None:
                await self._discard(ahead[0], cancel=True)

    async def _apply_when_ready(
        self,
        step: Step,
        writing: list[tuple[asyncio.Future[None], Step]],
        stale_wrt: Sequence[Step],
    ) -> list[Step]:
        """Apply a loaded chunk once nothing it read can still change under it; returns
        the chunks the database refused meanwhile (then this one is not applied).

        A household it shares with a chunk still writing was read after that chunk's
        transaction ended (the lock waited for it): if that chunk was refused, this one read
        the state before it, so it waits to know (the write is over already: no cost). If
        it may have read something stale (:func:`depends`) from a chunk uncommitted when
        its load started, it waits for every write in flight and reads again.
        """
        shared = [
            i
            for i, (_, s) in enumerate(writing)
            if not step.state.households.keys().isdisjoint(s.state.households)
        ]
        refused = await self._drain(writing, len(writing) - shared[-1] - 1) if shared else []
        if not refused and any(depends(step.wanted, s.state) for s in stale_wrt):
            refused = await self._drain(writing, 0)
            if not refused:
                await self._reload(step)
        if not refused:
            await self._apply(step)
        return refused

    async def _drain(
        self, writing: list[tuple[asyncio.Future[None], Step]], keep: int
    ) -> list[Step]:
        """Wait for the oldest writes until at most ``keep`` are in flight; returns the
        chunks the database refused (rolled back, to redo record by record)."""
        refused: list[Step] = []
        while len(writing) > keep:
            future, step = writing[0]
            ok = await self._settled(future)
            writing.pop(0)
            if not ok:
                refused.append(step)
        return refused

    async def _one_by_one(self, positions: Sequence[int]) -> None:
        if self.dry_state is not None:
            self.dry_state = state_service.State()
        for p in positions:
            try:
                await self.chunk([p])
            except _FATAL:
                raise
            except asyncpg.PostgresError as exc:
                await self.reject_alone(p, exc)


_gc_holders = 0


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """No cyclic GC while a batch runs.

    The parsed body (up to 100,000 records) and the chunk states are large and acyclic:
    automatic passes re-scanned them over and over (a fifth of the processing time), and
    even an explicit young-generation pass after each chunk cost 30 ms, since the next
    chunk's slice is alive by then. Refcounting frees all of it; the objects alive at the
    end of each chunk are frozen out of the GC's sight instead (``gc.freeze`` is O(1)).
    The cyclic garbage a chunk leaves is a few dozen objects (asyncio's futures and
    exceptions; measured on the 100,000-record bench), collected once the batch ends and
    the GC is back on. Reentrant across in-process workers: the first in disables, the
    last out restores.
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


async def process_one(
    conn: asyncpg.Connection,
    worker: str,
    lease_seconds: float,
    *,
    chunk: int = CHUNK,
    spares: Sequence[asyncpg.Connection] = (),
) -> bool:
    """Claim and finish one batch; False when the queue is empty."""
    with _quiet_gc():
        batch = await claim(conn, worker, lease_seconds)
        if batch is None:
            return False
        gc.freeze()  # the parsed body too
        log.info("batch claimed", extra={"batch_id": str(batch.id), "records": len(batch.records)})
        geo = await load_geography(conn)
        run = BatchRun(
            conn, batch, worker, geo, chunk=chunk, spares=spares, lease_seconds=lease_seconds
        )
        await run.run()
    log.info("batch done", extra={"batch_id": str(batch.id), "reloads": run.reloads})
    return True


async def run_worker(
    dsn: str,
    *,
    host: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    poll_seconds: float = 0.5,
    stop: asyncio.Event | None = None,
    exit_when_idle: bool = False,
    chunk: int = CHUNK,
    pipeline: bool = True,
) -> None:
    """Process batches until ``stop`` is set; survives database restarts by reconnecting.

    ``pipeline``: a second connection, so that one chunk is read and applied while the one
    before it is written (see :class:`BatchRun`).
    """
    stop = stop or asyncio.Event()
    worker = worker_name()
    conns: list[asyncpg.Connection] = []

    def drop() -> None:
        for c in conns:
            c.terminate()
        conns.clear()

    while not stop.is_set():
        try:
            if not conns or any(c.is_closed() for c in conns):
                drop()
                for _ in range(PIPELINE_CONNECTIONS if pipeline else 1):
                    conn = await asyncpg.connect(
                        dsn, host=host, server_settings=server_settings("nser-worker")
                    )
                    conns.append(conn)
                    await state_service.open_connection(conn)
            if await process_one(conns[0], worker, lease_seconds, chunk=chunk, spares=conns[1:]):
                continue
            readers = conns[1 : simulation_service.READERS]
            reporter = conns[-1] if len(conns) > simulation_service.READERS else None
            if await simulation_service.process_one(conns[0], worker, readers, reporter):
                continue  # a what-if simulation (app.services.targeting), when no batch waits
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
            drop()
        except LeaseLost as exc:
            log.warning(
                "lease lost; batch taken over by another worker", extra={"batch_id": str(exc)}
            )
            drop()  # a chunk may have been cut short on either connection: start clean
        except Exception:
            log.exception("worker error; retrying")
            drop()
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
        except TimeoutError:
            pass
    for c in conns:
        await c.close()


@dataclass
class InProcessWorkers:
    """Workers running inside the service (NSER_IN_PROCESS_WORKERS), stopped with it; with
    them, the refresher of the public products (app.services.products.cube) and the DCI
    callbacks' delivery loop (app.services.dci.callbacks)."""

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
    url: str,
    count: int,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    *,
    chunk: int = CHUNK,
    pipeline: bool = True,
    refresh: Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]] | None = None,
    deliver: Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]] | None = None,
) -> InProcessWorkers:
    """``count`` workers, and beside them (when there are workers) ``refresh(dsn, host,
    stop)`` and ``deliver(dsn, host, stop)`` (the DCI callbacks' delivery loop)."""
    target = asyncpg_target(url)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            run_worker(
                target.dsn,
                host=target.host,
                lease_seconds=lease_seconds,
                stop=stop,
                chunk=chunk,
                pipeline=pipeline,
            ),
            name=f"nser-ingest-worker-{i}",
        )
        for i in range(max(count, 0))
    ]
    if refresh is not None and count > 0:
        tasks.append(
            asyncio.create_task(
                refresh(target.dsn, target.host, stop), name="nser-products-refresher"
            )
        )
    if deliver is not None and count > 0:
        tasks.append(
            asyncio.create_task(deliver(target.dsn, target.host, stop), name="nser-dci-callbacks")
        )
    return InProcessWorkers(tasks, stop)
