"""Asynchronous DCI requests: accepted at once, run later by the workers, answered by callback.

``POST /dci/registry/search`` and ``POST /dci/registry/txn/status`` check a message as
their sync twins do (the same code, the same errors, the signature when the agreement
registered a key), check where the answer is to go, and store the request as a job
(``dci_jobs``) before they acknowledge it (``ack_status: ACK`` with the correlation id the
answer will carry). Nothing more happens in the request.

**Where the answer goes.** ``header.sender_uri``, which must lie under the agreement's
registered callback base URL (app.services.dci.registration's rules); without one, the base
URL itself. An agreement with no DCI registration cannot make asynchronous requests. Both
refusals are ``err.sender_uri.invalid``.

**Once per message.** A job is keyed by the client and its ``header.message_id``: the same
message sent again (a client retrying after a lost answer) is acknowledged with the same
correlation id and runs once; another message under a used id is refused.

**The run.** The workers (:func:`run_jobs`, beside the callbacks' delivery loop: in the
service with NSER_IN_PROCESS_WORKERS, and in ``nser worker``) claim one due job at a time
with a lease. The caller's agreement is read again (an agreement suspended since gets every
request ``rjct``); the search runs through the sync search's own code
(app.services.dci.search: the same authorisation, pages, records and audit rows, the rows
naming ``/dci/registry/search``), the status look-up through the sync status's. Then, in
one transaction, the transaction's status moves from ``pdng`` to ``succ`` or ``rjct``
(``dci_transactions``), the ``on-search`` / ``txn-on-status`` callback is stored
(app.services.dci.callbacks, which signs and delivers it), and the job is marked done and
its request cleared. A worker that dies leaves its job to be claimed again after the lease;
a job that keeps failing is answered ``rjct`` after :data:`MAX_ATTEMPTS` tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app import metrics
from app.auth.partner import Principal, load_principal
from app.db import server_settings
from app.errors import AppError
from app.replicas import Reads
from app.services.dci import callbacks, envelope, registration
from app.services.dci import search as dci_search
from app.services.dci.envelope import DciError, Header
from app.settings import Settings

log = logging.getLogger("nser.dci")

KINDS = ("search", "txn-status")
SEARCH_ENDPOINT = "/dci/registry/search"
STATUS_ENDPOINT = "/dci/registry/txn/status"
# A claimed job is the worker's this long; one that dies leaves it to the next after that.
LEASE_SECONDS = 120.0
# Tries before a job that keeps failing is answered rjct instead.
MAX_ATTEMPTS = 5
RETRY_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0
# Finished jobs (and so the message ids they hold for deduplication) are kept this long.
RETENTION_SECONDS = 7 * 86_400
PURGE_EVERY_SECONDS = 600.0
# How often a job loop reads the pending jobs for the metrics (and after each job it runs).
PENDING_EVERY_SECONDS = 5.0
# A job's outcome as the metrics count it (process's return value).
OUTCOMES = {"done": "done", "failed": "failed", "pending": "retried", None: "lost"}
PURGE_BATCH = 5000
MAX_ERROR = 300
_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    OSError,
)


# --- accepting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """An acknowledged request: the correlation id its callback carries; ``duplicate`` when
    the message had been accepted before."""

    correlation_id: str
    duplicate: bool


def digest(kind: str, body: Mapping[str, Any]) -> bytes:
    """What tells a repeated message from another one under the same id: its action and its
    message object (keys sorted), hashed."""
    message = orjson.dumps(body.get("message"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(kind.encode() + b"\0" + message).digest()


async def callback_url(
    conn: asyncpg.Connection | asyncpg.Pool,
    settings: Settings,
    agreement_id: uuid.UUID,
    sender_uri: object,
) -> str:
    """Where the answer goes: ``sender_uri`` under the agreement's registered base URL, or
    the base URL itself; 400 ``err.sender_uri.invalid`` otherwise."""
    base = await conn.fetchval(
        "SELECT callback_base_url FROM dci_registrations WHERE agreement_id = $1", agreement_id
    )
    if base is None:
        raise DciError(
            400,
            envelope.SENDER_URI_INVALID,
            "the agreement has no DCI callback registration: asynchronous requests need one",
        )
    if sender_uri is None:
        return str(base)
    try:
        registration.check_callback_url(sender_uri, base, settings)
    except registration.UrlRefused as exc:
        raise DciError(400, envelope.SENDER_URI_INVALID, f"header.sender_uri: {exc}") from None
    return str(sender_uri)


def _pending(items: list[dci_search.Item]) -> list[dict[str, Any]]:
    return [
        {"reference_id": item.reference_id, "timestamp": envelope.now(), "status": "pdng"}
        for item in items
    ]


async def accept(
    reads: Reads, settings: Settings, p: Principal, body: Mapping[str, Any], *, kind: str
) -> Accepted:
    """Check an asynchronous ``kind`` message as its sync route does, and store it as a job
    (a search's transaction recorded ``pdng``); DciError when it cannot be taken."""
    assert kind in KINDS
    items: list[dci_search.Item] = []
    header: Header
    if kind == "search":
        header, transaction_id, items = dci_search.parse_search(body)
    else:
        query = dci_search.parse_txn_status(body)
        header, transaction_id = query.header, query.transaction_id
    if p.agreement_id is None:
        raise DciError(403, envelope.FORBIDDEN, "asynchronous DCI requests are for partners")
    pool = reads.primary
    await envelope.verify_signature(pool, p.agreement_id, body)
    if kind == "search":
        await dci_search.authorize(reads, p, items)
    url = await callback_url(pool, settings, p.agreement_id, body["header"].get("sender_uri"))
    fingerprint = digest(kind, body)
    correlation_id = envelope.new_id()
    request = orjson.dumps({"header": body["header"], "message": body["message"]})
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO dci_jobs (client_id, agreement_id, kind, message_id, digest,
                   transaction_id, correlation_id, callback_url, scopes, request)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (client_id, message_id) DO NOTHING RETURNING id""",
            p.client_id,
            p.agreement_id,
            kind,
            header.message_id,
            fingerprint,
            transaction_id,
            correlation_id,
            url,
            " ".join(sorted(p.scopes)),
            request,
        )
        if inserted is None:
            earlier = await conn.fetchrow(
                """SELECT kind, digest, correlation_id FROM dci_jobs
                    WHERE client_id = $1 AND message_id = $2""",
                p.client_id,
                header.message_id,
            )
            if earlier is None:  # purged between the two statements: as good as new
                raise DciError(
                    503, envelope.UNAVAILABLE, "try the message again", {"Retry-After": "1"}
                )
            if earlier["kind"] != kind or bytes(earlier["digest"]) != fingerprint:
                raise envelope.bad(
                    "header.message_id was already used for another message of this client"
                )
            return Accepted(earlier["correlation_id"], duplicate=True)
        if kind == "search":
            await dci_search.record_transaction(
                conn, p, transaction_id, correlation_id, header, "pdng", _pending(items)
            )
    return Accepted(correlation_id, duplicate=False)


def ack(accepted: Accepted) -> dict[str, Any]:
    """The standard's acknowledgement (its ``Response``): ``ACK``, when, and the
    correlation id the callback will carry."""
    return {
        "message": {
            "ack_status": "ACK",
            "timestamp": envelope.now(),
            "correlation_id": accepted.correlation_id,
        }
    }


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    client_id: str
    agreement_id: uuid.UUID
    kind: str
    transaction_id: str
    correlation_id: str
    callback_url: str
    scopes: str
    request: dict[str, Any]
    attempts: int


_CLAIM = """
UPDATE dci_jobs j
   SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2),
       attempts = j.attempts + 1
 WHERE j.id = (SELECT id FROM dci_jobs
                WHERE state = 'pending' AND next_attempt_at <= now()
                  AND (claimed_until IS NULL OR claimed_until <= now())
                ORDER BY next_attempt_at, id
                LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING j.id, j.client_id, j.agreement_id, j.kind, j.transaction_id, j.correlation_id,
          j.callback_url, j.scopes, j.request, j.attempts
"""


async def claim(
    conn: asyncpg.Connection, worker: str, *, lease_seconds: float = LEASE_SECONDS
) -> Job | None:
    """The oldest due job, claimed for ``worker`` for ``lease_seconds``; None when none."""
    row = await conn.fetchrow(_CLAIM, worker, lease_seconds)
    if row is None:
        return None
    return Job(
        row["id"],
        row["client_id"],
        row["agreement_id"],
        row["kind"],
        row["transaction_id"],
        row["correlation_id"],
        row["callback_url"],
        row["scopes"],
        orjson.loads(row["request"]),
        row["attempts"],
    )


def _stub(job: Job) -> Principal:
    """The caller as the transaction's row records it (client and agreement only)."""
    return Principal(
        client_id=job.client_id, kind="partner", scopes=frozenset(), agreement_id=job.agreement_id
    )


def txn_rejected(query: dci_search.TxnQuery, correlation_id: str, message: str) -> dict[str, Any]:
    """A ``txn-on-status`` envelope that answers nothing: ``header.status: rjct`` with the
    reason (no such transaction of the client, an agreement no longer active), and the
    ``txn_status`` of the kind asked for, empty (an unsubscribe's ``rjct`` with the reason
    and no codes)."""
    head = envelope.reply_header(
        "txn-on-status", "rjct", query.header, total=1, completed=0, reason_message=message
    )
    txn_type = query.answered_type
    status = dci_search.txn_status_body(
        txn_type,
        # The ids asked for, where the question named one (nothing was found).
        query.key if query.kind == "transaction_id" and query.key else "",
        query.key if query.kind == "correlation_id" and query.key else "",
        [],
    )
    if txn_type == "unsubscribe":
        status["status_reason_message"] = message[:999]
    return {
        "header": head,
        "message": {
            "transaction_id": query.transaction_id,
            "correlation_id": correlation_id,
            "txnstatus_response": {"txn_type": txn_type, "txn_status": status},
        },
    }


@dataclass
class Answer:
    """A job's answer: the callback's envelope and, for a search, its outcome."""

    kind: str
    payload: dict[str, Any]
    outcome: dci_search.Outcome | None = None
    header: Header | None = None


def _refusal(job: Job, message: str) -> Answer:
    """The answer of a job that is not run: every request ``rjct`` for ``message``."""
    if job.kind == "search":
        header, transaction_id, items = dci_search.parse_search(job.request)
        outcome = dci_search.refused(items, message)
        payload = dci_search.on_search(header, transaction_id, job.correlation_id, outcome)
        return Answer("on-search", payload, outcome, header)
    query = dci_search.parse_txn_status(job.request)
    return Answer("txn-on-status", txn_rejected(query, job.correlation_id, message))


async def _principal(pool: asyncpg.Pool, job: Job) -> Principal | str:
    """The caller as its agreement stands now, or why it may no longer be answered."""
    claims = {"sub": job.client_id, "agreement_id": str(job.agreement_id), "scope": job.scopes}
    try:
        async with pool.acquire() as conn:
            return await load_principal(conn, claims)
    except AppError as exc:
        return exc.detail


async def answer(pool: asyncpg.Pool, job: Job) -> Answer:
    """Run ``job`` through the sync routes' code, for the caller as it stands now."""
    p = await _principal(pool, job)
    if isinstance(p, str):
        return _refusal(job, p)
    reads = Reads.of(pool)
    if job.kind == "search":
        header, transaction_id, items = dci_search.parse_search(job.request)
        token = dci_search.AUDIT_ENDPOINT.set(SEARCH_ENDPOINT)
        try:
            outcome = await dci_search.answer_search(reads, p, transaction_id, items)
        except DciError as exc:  # the agreement no longer lets it read what it asked
            outcome = dci_search.refused(items, exc.message)
        finally:
            dci_search.AUDIT_ENDPOINT.reset(token)
        payload = dci_search.on_search(header, transaction_id, job.correlation_id, outcome)
        return Answer("on-search", payload, outcome, header)
    query = dci_search.parse_txn_status(job.request)
    try:
        reply = await dci_search.answer_txn_status(pool, p, query, job.correlation_id)
    except DciError as exc:
        return Answer("txn-on-status", txn_rejected(query, job.correlation_id, exc.message))
    return Answer("txn-on-status", reply.body)


async def finish(
    pool: asyncpg.Pool, settings: Settings, worker: str, job: Job, result: Answer
) -> str | None:
    """In one transaction: the search transaction's status, the callback, the job done.
    The job's new state (``done``, or ``failed`` when the callback was refused: the
    registration changed since); None when ``worker`` no longer holds the job."""
    # JSON as it will be sent (a record built by PostgreSQL may be a raw fragment).
    payload = orjson.loads(orjson.dumps(result.payload))
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchval(
            """SELECT id FROM dci_jobs WHERE id = $1 AND claimed_by = $2 AND state = 'pending'
                FOR UPDATE""",
            job.id,
            worker,
        )
        if held is None:
            return None
        if result.outcome is not None and result.header is not None:
            await dci_search.record_transaction(
                conn,
                _stub(job),
                job.transaction_id,
                job.correlation_id,
                result.header,
                result.outcome.status,
                result.outcome.answers,
            )
        state, error, callback_id = "done", None, None
        try:
            async with conn.transaction():
                callback_id = await callbacks.enqueue(
                    conn,
                    settings=settings,
                    agreement_id=job.agreement_id,
                    url=job.callback_url,
                    kind=result.kind,
                    payload=payload,
                )
        except callbacks.CallbackRefused as exc:
            state, error = "failed", f"callback refused: {exc}"[:MAX_ERROR]
            log.warning("DCI job's callback refused", extra={"job_id": job.id, "error": error})
        await conn.execute(
            """UPDATE dci_jobs
                  SET state = $2, done_at = now(), request = NULL, callback_id = $3,
                      last_error = $4, claimed_by = NULL, claimed_until = NULL
                WHERE id = $1""",
            job.id,
            state,
            callback_id,
            error,
        )
    return state


async def release(pool: asyncpg.Pool, worker: str, job: Job, error: str) -> None:
    """Give a job that failed back, due again after a back-off that doubles per attempt."""
    delay = min(RETRY_MAX_SECONDS, RETRY_SECONDS * 2.0 ** min(job.attempts - 1, 20))
    await pool.execute(
        """UPDATE dci_jobs
              SET claimed_by = NULL, claimed_until = NULL, last_error = $3,
                  next_attempt_at = now() + make_interval(secs => $4)
            WHERE id = $1 AND claimed_by = $2 AND state = 'pending'""",
        job.id,
        worker,
        error[:MAX_ERROR],
        delay,
    )


async def give_up(pool: asyncpg.Pool, worker: str, job: Job, error: str) -> None:
    """End a job without an answer (``failed``, the error kept for the operator)."""
    await pool.execute(
        """UPDATE dci_jobs
              SET state = 'failed', done_at = now(), request = NULL, last_error = $3,
                  claimed_by = NULL, claimed_until = NULL
            WHERE id = $1 AND claimed_by = $2 AND state = 'pending'""",
        job.id,
        worker,
        error[:MAX_ERROR],
    )


async def process(pool: asyncpg.Pool, settings: Settings, worker: str, job: Job) -> str | None:
    """Run a claimed job and store its answer; a job tried :data:`MAX_ATTEMPTS` times
    already is answered ``rjct`` without running again. An error other than the database's
    gives the job back for a later try; the database's leave it to its lease. Counted in
    ``nser_dci_jobs_total`` (a database error is not: the job is still pending)."""
    state = await _process(pool, settings, worker, job)
    metrics.dci_job(job.kind, OUTCOMES[state])
    return state


async def _process(pool: asyncpg.Pool, settings: Settings, worker: str, job: Job) -> str | None:
    if job.attempts > MAX_ATTEMPTS:
        try:
            result = _refusal(job, "NSER could not run this request; send it again")
        except Exception as exc:  # not even a refusal can be built: give up, unanswered
            await give_up(pool, worker, job, f"{type(exc).__name__}: {exc}")
            return "failed"
        return await finish(pool, settings, worker, job, result)
    try:
        return await finish(pool, settings, worker, job, await answer(pool, job))
    except _DB_ERRORS:
        raise
    except Exception as exc:
        log.exception("DCI job failed; it will be tried again", extra={"job_id": job.id})
        await release(pool, worker, job, f"{type(exc).__name__}: {exc}")
        return "pending"


async def observe_pending(pool: asyncpg.Pool) -> None:
    """Set the pending-jobs gauges from ``dci_jobs`` (one read of its pending index)."""
    row = await pool.fetchrow(
        """SELECT count(*) AS n,
                  coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
             FROM dci_jobs WHERE state = 'pending'"""
    )
    assert row is not None
    metrics.dci_jobs_pending(int(row["n"]), max(0.0, float(row["age"])))


async def purge(pool: asyncpg.Pool) -> int:
    """Delete finished jobs older than RETENTION_SECONDS (a batch); how many."""
    result: str = await pool.execute(
        """DELETE FROM dci_jobs WHERE id IN (
               SELECT id FROM dci_jobs
                WHERE state <> 'pending' AND done_at < now() - make_interval(secs => $1)
                LIMIT $2)""",
        float(RETENTION_SECONDS),
        PURGE_BATCH,
    )
    return int(result.rsplit(" ", 1)[-1])


async def run_jobs(
    dsn: str,
    *,
    settings: Settings,
    host: str | None = None,
    stop: asyncio.Event | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> None:
    """Run due jobs, one at a time, until ``stop`` is set; survives database restarts."""
    stop = stop or asyncio.Event()
    worker = callbacks.worker_name()
    pool: asyncpg.Pool | None = None
    purged_at = observed_at = 0.0
    while not stop.is_set():
        busy = False
        try:
            if pool is None:
                pool = await asyncpg.create_pool(
                    dsn,
                    host=host,
                    min_size=1,
                    max_size=4,
                    server_settings=server_settings("nser-dci-jobs"),
                )
            if time.monotonic() - observed_at > PENDING_EVERY_SECONDS:
                observed_at = time.monotonic()
                await observe_pending(pool)
            async with pool.acquire() as conn:
                job = await claim(conn, worker, lease_seconds=lease_seconds)
            if job is not None:
                busy = True
                await process(pool, settings, worker, job)
                observed_at = time.monotonic()
                await observe_pending(pool)
            if time.monotonic() - purged_at > PURGE_EVERY_SECONDS:
                purged_at = time.monotonic()
                await purge(pool)
        except _DB_ERRORS as exc:
            busy = False
            log.warning("database unavailable; retrying", extra={"error": str(exc)})
        except Exception:
            busy = False
            log.exception("DCI job loop error; retrying")
        if busy:
            await asyncio.sleep(0)  # maybe more due: claim again at once
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.dci_callback_poll_seconds)
    if pool is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), timeout=5)


def runner(
    settings: Settings,
) -> Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]]:
    """The DCI work the service's in-process workers run: the callbacks' delivery loop and
    the asynchronous requests' job loop, side by side until ``stop``."""

    async def both(dsn: str, host: str | None, stop: asyncio.Event) -> None:
        await asyncio.gather(
            callbacks.run_delivery(dsn, settings=settings, host=host, stop=stop),
            run_jobs(dsn, settings=settings, host=host, stop=stop),
        )

    def run(dsn: str, host: str | None, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return both(dsn, host, stop)

    return run
