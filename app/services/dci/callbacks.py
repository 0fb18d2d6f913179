"""Durable DCI callbacks: an outbox in PostgreSQL (``dci_callbacks``), delivered by the workers.

**Enqueue.** :func:`enqueue` inserts the callback in the caller's transaction, so a
callback exists if and only if its cause committed. Its URL must lie under the agreement's
registered callback base URL (app.services.dci.registration); its payload is the envelope
without a signature (``{"header": {...}, "message": {...}}``), signed when it is sent.

**Delivery.** :func:`run_delivery` (beside the ingest workers: NSER_IN_PROCESS_WORKERS in
the service, and ``nser worker``) claims due rows, at most NSER_DCI_CALLBACK_CONCURRENCY
per agreement in flight over every worker (the claims are serialised by an advisory lock,
so the count is exact) and NSER_DCI_CALLBACK_WORKERS per process. Each claim is a lease:
a worker that dies leaves its rows to be claimed again once the lease has run out, so a
callback is delivered at least once. Each attempt:

1. checks the URL against the agreement's base URL as it is now;
2. resolves the host and refuses it if any address is private, loopback, link-local,
   multicast, reserved or unspecified (unless NSER_DCI_ALLOW_PRIVATE_CALLBACKS), then
   connects to the very address it checked (the URL's host goes in ``Host`` and, for https,
   in the TLS SNI and certificate check), so DNS cannot change between check and connect;
3. signs the envelope with NSER's current DCI key (app.services.dci.signing) and POSTs it
   as JSON, following no redirect, within NSER_DCI_CALLBACK_TIMEOUT_SECONDS in all;
4. a 2xx is ``delivered``; anything else (3xx included) is retried after a back-off that
   doubles from NSER_DCI_CALLBACK_BACKOFF_SECONDS up to NSER_DCI_CALLBACK_BACKOFF_MAX_SECONDS
   (each delay drawn between half and all of it), and after NSER_DCI_CALLBACK_MAX_ATTEMPTS
   attempts the row is ``dead``; staff list dead letters and retry them.

**Order.** Rows with an ordering key are delivered one at a time per (agreement, key), in
the order they were enqueued: a row is not claimed while an earlier row of its key is
pending (being sent, or waiting for a retry). A dead row no longer holds the later ones
back. :func:`enqueue` takes a transaction-scoped advisory lock on the key, so rows of one
key are committed in the order of their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson

from app import metrics
from app.db import server_settings
from app.errors import Conflict, NotFound
from app.services.audit import trail as audit
from app.services.dci import registration, signing
from app.settings import Settings

log = logging.getLogger("nser.dci")

STATES = ("pending", "delivered", "dead")
MAX_KIND = 32
MAX_ORDERING_KEY = 200
# Kept in last_error: enough to say what happened, never a response body.
MAX_ERROR = 300
# The lease on a claimed row beyond the attempt's own time limit.
LEASE_MARGIN_SECONDS = 10.0
# Delivered rows are deleted once this old, a batch at a time, by the delivery loop.
RETENTION_SECONDS = 7 * 86_400
PURGE_EVERY_SECONDS = 600.0
PURGE_BATCH = 5000
_CLAIM_LOCK = 0x6E736572_63626B  # "nsercbk"
_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    OSError,
)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class CallbackRefused(ValueError):
    """A callback that may not be enqueued; the message says why (for the caller's answer)."""


def _check_kind(kind: str) -> None:
    if not (
        isinstance(kind, str)
        and 0 < len(kind) <= MAX_KIND
        and kind[0].isalpha()
        and all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in kind)
    ):
        raise CallbackRefused(f"kind: 1 to {MAX_KIND} ASCII letters, digits, '-', '_', '.'")


async def enqueue(
    conn: asyncpg.Connection,
    *,
    settings: Settings,
    agreement_id: uuid.UUID,
    url: str,
    kind: str,
    payload: dict[str, Any],
    ordering_key: str | None = None,
) -> int:
    """Store a callback to ``url`` in the caller's transaction; its id.

    ``payload`` is the envelope to send without its signature: a ``header`` and a
    ``message``, both objects, that JSON can carry exactly (see signing.canonical).
    ``ordering_key``: callbacks of one agreement and key are delivered one at a time, in
    the order enqueued (the key's lock is held until the caller's transaction ends).
    CallbackRefused when the agreement has no DCI registration, the URL is not under its
    base URL or breaks the URL rules, or the payload is not a signable envelope.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("enqueue runs inside the transaction of the callback's cause")
    _check_kind(kind)
    if ordering_key is not None and not (0 < len(ordering_key) <= MAX_ORDERING_KEY):
        raise CallbackRefused(f"ordering_key: 1 to {MAX_ORDERING_KEY} characters")
    if not isinstance(payload, dict) or set(payload) != {"header", "message"}:
        raise CallbackRefused("payload: exactly a header and a message")
    try:
        signing.canonical(payload["header"], payload["message"])
        if not isinstance(payload["header"], dict) or not isinstance(payload["message"], dict):
            raise ValueError("the header and the message are objects")
    except ValueError as exc:
        raise CallbackRefused(f"payload: {exc}") from exc
    base = await conn.fetchval(
        "SELECT callback_base_url FROM dci_registrations WHERE agreement_id = $1", agreement_id
    )
    if base is None:
        raise CallbackRefused("the agreement has no DCI callback registration")
    try:
        registration.check_callback_url(url, base, settings)
    except registration.UrlRefused as exc:
        raise CallbackRefused(str(exc)) from exc
    if ordering_key is not None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"dci-callback:{agreement_id}:{ordering_key}",
        )
    ident: int = await conn.fetchval(
        """INSERT INTO dci_callbacks (agreement_id, kind, url, ordering_key, payload)
           VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id""",
        agreement_id,
        kind,
        url,
        ordering_key,
        orjson.dumps(payload).decode(),
    )
    return ident


# --- claiming ------------------------------------------------------------------------

# Per registered agreement: how many of its rows are being sent now, and its due rows that
# no earlier pending row of their ordering key holds back, oldest first, as many as its
# bound leaves room for; of those, the oldest ``$4`` over every agreement.
_CLAIM = """
WITH picked AS (
    SELECT c.id
      FROM dci_registrations r
     CROSS JOIN LATERAL (
           SELECT count(*) AS n FROM dci_callbacks f
            WHERE f.agreement_id = r.agreement_id AND f.state = 'pending'
              AND f.claimed_until IS NOT NULL AND f.claimed_until > now()) i
     CROSS JOIN LATERAL (
           SELECT c.id, c.next_attempt_at FROM dci_callbacks c
            WHERE c.agreement_id = r.agreement_id AND c.state = 'pending'
              AND c.next_attempt_at <= now()
              AND (c.claimed_until IS NULL OR c.claimed_until <= now())
              AND (c.ordering_key IS NULL OR NOT EXISTS (
                     SELECT 1 FROM dci_callbacks e
                      WHERE e.agreement_id = c.agreement_id
                        AND e.ordering_key = c.ordering_key
                        AND e.state = 'pending' AND e.id < c.id))
            ORDER BY c.next_attempt_at, c.id
            LIMIT greatest($3 - i.n, 0)) c
     ORDER BY c.next_attempt_at, c.id
     LIMIT $4)
UPDATE dci_callbacks c
   SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2),
       attempts = c.attempts + 1
  FROM picked p
 WHERE c.id = p.id
RETURNING c.id, c.agreement_id, c.kind, c.url, c.payload, c.attempts,
          (SELECT r.callback_base_url FROM dci_registrations r
            WHERE r.agreement_id = c.agreement_id) AS base
"""


@dataclass(frozen=True)
class Claimed:
    id: int
    agreement_id: uuid.UUID
    kind: str
    url: str
    payload: dict[str, Any]
    attempts: int
    base: str | None


async def claim(
    conn: asyncpg.Connection,
    worker: str,
    *,
    lease_seconds: float,
    per_receiver: int,
    limit: int,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows for ``worker`` (a lease of ``lease_seconds``), at most
    ``per_receiver`` in flight per agreement counting every worker's."""
    if limit <= 0:
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
        rows = await conn.fetch(_CLAIM, worker, lease_seconds, per_receiver, limit)
    return [
        Claimed(
            r["id"],
            r["agreement_id"],
            r["kind"],
            r["url"],
            orjson.loads(r["payload"]),
            r["attempts"],
            r["base"],
        )
        for r in rows
    ]


def backoff_seconds(attempts: int, settings: Settings, rng: random.Random | None = None) -> float:
    """The wait before the next attempt after ``attempts`` failed ones: base × 2^(n-1),
    capped, drawn uniformly between half of it and all of it (jitter)."""
    ceiling = min(
        settings.dci_callback_backoff_max_seconds,
        settings.dci_callback_backoff_seconds * 2.0 ** min(max(attempts - 1, 0), 60),
    )
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# --- sending -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int | None = None
    error: str | None = None


def _failed(error: str, status: int | None = None) -> Outcome:
    return Outcome(False, status, error[:MAX_ERROR])


Resolver = Callable[[str, int], Coroutine[Any, Any, list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (TCP), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _address(host: str, port: int, settings: Settings, resolver: Resolver) -> str:
    """The address to connect to: every address of ``host`` checked, the first taken."""
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        addresses = await resolver(host, port)
    if not addresses:
        raise registration.UrlRefused(f"{host} has no address")
    if not settings.dci_allow_private_callbacks:
        for text in addresses:
            reason = registration.address_refused(ipaddress.ip_address(text.split("%")[0]))
            if reason is not None:
                raise registration.UrlRefused(f"{host} resolves to {reason}: refused")
    return addresses[0]


async def send(
    client: httpx.AsyncClient,
    settings: Settings,
    row: Claimed,
    signature: Callable[[dict[str, Any]], str],
    *,
    resolver: Resolver = resolve,
) -> Outcome:
    """One attempt to deliver ``row``; never raises."""
    if row.base is None:
        return _failed("the agreement has no DCI callback registration")
    try:
        parts = registration.check_callback_url(row.url, row.base, settings)
        host = parts.hostname or ""
        port = parts.port or registration.DEFAULT_PORTS[parts.scheme.lower()]
        async with asyncio.timeout(settings.dci_callback_timeout_seconds):
            address = await _address(host, port, settings, resolver)
            envelope = {"signature": signature(row.payload), **row.payload}
            target = f"[{address}]" if ":" in address else address
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            request = client.build_request(
                "POST",
                f"{parts.scheme.lower()}://{target}:{port}{path}",
                content=orjson.dumps(envelope),
                headers={
                    "Host": parts.netloc.rsplit("@", 1)[-1],
                    "Content-Type": "application/json",
                    "User-Agent": "nser-dci-callbacks",
                },
                extensions={"sni_hostname": host} if parts.scheme.lower() == "https" else {},
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()  # the body is not read: only the status counts
    except registration.UrlRefused as exc:
        return _failed(f"refused: {exc}")
    except TimeoutError:
        return _failed(f"no answer within {settings.dci_callback_timeout_seconds:g} s")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return _failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code)
    if response.is_redirect or 300 <= response.status_code < 400:
        status = response.status_code
        return _failed(f"HTTP {status}: a redirect, not followed", status)
    return _failed(f"HTTP {response.status_code}", response.status_code)


_DELIVERED = """
UPDATE dci_callbacks
   SET state = 'delivered', delivered_at = now(), claimed_by = NULL, claimed_until = NULL,
       last_status = $3, last_error = NULL
 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'
RETURNING id
"""
_RETRY = """
UPDATE dci_callbacks
   SET next_attempt_at = now() + make_interval(secs => $5), claimed_by = NULL,
       claimed_until = NULL, last_status = $3, last_error = $4
 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'
RETURNING id
"""
_DEAD = """
UPDATE dci_callbacks
   SET state = 'dead', dead_at = now(), claimed_by = NULL, claimed_until = NULL,
       last_status = $3, last_error = $4
 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'
RETURNING id
"""


async def record(
    conn: asyncpg.Connection, settings: Settings, worker: str, row: Claimed, outcome: Outcome
) -> str | None:
    """Store an attempt's outcome (only while ``worker`` still holds the row); the row's
    new state (``delivered``, ``pending`` for a retry, ``dead``), None if the lease was lost."""
    if outcome.delivered:
        done = await conn.fetchval(_DELIVERED, row.id, worker, outcome.status)
        if done is not None:
            metrics.dci_callback("delivered")
            return "delivered"
        return None
    if row.attempts >= settings.dci_callback_max_attempts:
        done = await conn.fetchval(_DEAD, row.id, worker, outcome.status, outcome.error)
        state = "dead"
    else:
        delay = backoff_seconds(row.attempts, settings)
        done = await conn.fetchval(_RETRY, row.id, worker, outcome.status, outcome.error, delay)
        state = "pending"
    if done is None:
        return None
    metrics.dci_callback("failed")
    if state == "dead":
        metrics.dci_callback("dead")
        log.warning(
            "DCI callback dead",
            extra={"callback_id": row.id, "agreement_id": str(row.agreement_id)},
        )
    return state


def http_client(settings: Settings, *, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The client every delivery uses: no redirects, no proxies from the environment, no
    connection kept between attempts (each connects to the address it has just checked).
    ``verify``: the trusted certificates (the system's by default)."""
    timeout = settings.dci_callback_timeout_seconds
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
    )


async def run_delivery(
    dsn: str,
    *,
    settings: Settings,
    host: str | None = None,
    stop: asyncio.Event | None = None,
    resolver: Resolver = resolve,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Deliver due callbacks until ``stop`` is set; survives database restarts.
    ``resolver`` and ``verify`` (the name lookup, the trusted certificates) are for tests."""
    stop = stop or asyncio.Event()
    worker = worker_name()
    slots = settings.dci_callback_workers
    lease = settings.dci_callback_timeout_seconds + LEASE_MARGIN_SECONDS
    signer = signing.Signer(settings)
    inflight: set[asyncio.Task[None]] = set()
    wake = asyncio.Event()
    pool: asyncpg.Pool | None = None
    purged_at = 0.0

    async def deliver(
        pool: asyncpg.Pool, key: signing.SigningKey, row: Claimed, client: httpx.AsyncClient
    ) -> None:
        try:
            outcome = await send(
                client, settings, row, lambda env: signer.sign(key, env), resolver=resolver
            )
            async with pool.acquire() as conn:
                await record(conn, settings, worker, row, outcome)
        except Exception:  # the lease runs out and the row is sent again: nothing is lost
            log.exception("DCI callback not recorded", extra={"callback_id": row.id})
        finally:
            wake.set()

    async with http_client(settings, verify=verify) as client:
        while not stop.is_set():
            wake.clear()
            claimed = 0
            try:
                if pool is None:
                    pool = await asyncpg.create_pool(
                        dsn,
                        host=host,
                        min_size=1,
                        max_size=4,
                        server_settings=server_settings("nser-dci-callbacks"),
                    )
                free = slots - len(inflight)
                if free > 0:
                    async with pool.acquire() as conn:
                        rows = await claim(
                            conn,
                            worker,
                            lease_seconds=lease,
                            per_receiver=settings.dci_callback_concurrency,
                            limit=free,
                        )
                        key = await signer.current(conn) if rows else None
                    for row in rows:
                        assert key is not None
                        task = asyncio.create_task(deliver(pool, key, row, client))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    claimed = len(rows)
                if time.monotonic() - purged_at > PURGE_EVERY_SECONDS:
                    purged_at = time.monotonic()
                    await purge(pool)
            except _DB_ERRORS as exc:
                log.warning("database unavailable; retrying", extra={"error": str(exc)})
            except Exception:
                log.exception("DCI delivery loop error; retrying")
            if claimed and claimed == free:
                await asyncio.sleep(0)  # maybe more due: claim again at once
                continue
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            await asyncio.wait(
                waits,
                timeout=settings.dci_callback_poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiting in waits:
                waiting.cancel()
        if inflight:  # a few seconds to finish; a row cut short is sent again after its lease
            await asyncio.wait(inflight, timeout=min(5.0, settings.dci_callback_timeout_seconds))
            for task in inflight:
                task.cancel()
    if pool is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), timeout=5)


async def purge(pool: asyncpg.Pool) -> int:
    """Delete delivered rows older than RETENTION_SECONDS (a batch); how many."""
    result: str = await pool.execute(
        """DELETE FROM dci_callbacks WHERE id IN (
               SELECT id FROM dci_callbacks
                WHERE state = 'delivered'
                  AND delivered_at < now() - make_interval(secs => $1)
                LIMIT $2)""",
        float(RETENTION_SECONDS),
        PURGE_BATCH,
    )
    return int(result.rsplit(" ", 1)[-1])


def runner(
    settings: Settings,
) -> Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]]:
    """The delivery loop with the service's settings, run beside the ingest workers."""

    def run(dsn: str, host: str | None, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return run_delivery(dsn, settings=settings, host=host, stop=stop)

    return run


# --- staff: dead letters -------------------------------------------------------------

PAGE = 50
MAX_PAGE = 500
_COLUMNS = """id, agreement_id, kind, url, state, attempts, created_at, next_attempt_at,
              delivered_at, dead_at, last_status, last_error"""


def _item(row: asyncpg.Record) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row["id"],
        "agreement_id": str(row["agreement_id"]),
        "kind": row["kind"],
        "url": row["url"],
        "state": row["state"],
        "attempts": row["attempts"],
        "created_at": when(row["created_at"]),
        "next_attempt_at": when(row["next_attempt_at"]) if row["state"] == "pending" else None,
        "delivered_at": when(row["delivered_at"]),
        "dead_at": when(row["dead_at"]),
        "last_status": row["last_status"],
        "last_error": row["last_error"],
    }


async def list_deliveries(
    conn: asyncpg.Connection,
    staff: audit.Caller,
    *,
    state: str,
    agreement_id: uuid.UUID | None = None,
    before: int | None = None,
    limit: int = PAGE,
) -> dict[str, Any]:
    """Callbacks in ``state``, newest first, a page at a time (keyset: ``before`` an id);
    audited. The payloads are not shown: they may hold personal data."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM dci_callbacks
             WHERE state = $1 AND ($2::uuid IS NULL OR agreement_id = $2)
               AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4""",
        state,
        agreement_id,
        before,
        limit,
    )
    await audit.append_action(
        conn,
        staff,
        "GET /v1/staff/dci/deliveries",
        {"state": state, "agreement": agreement_id, "before": before},
    )
    items = [_item(row) for row in rows]
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


async def retry(conn: asyncpg.Connection, staff: audit.Caller, callback_id: int) -> dict[str, Any]:
    """A dead callback made due again with a fresh count of attempts; audited. 404 if there
    is no such callback, 409 if it is not dead."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE dci_callbacks
                   SET state = 'pending', attempts = 0, next_attempt_at = now(),
                       dead_at = NULL, claimed_by = NULL, claimed_until = NULL
                 WHERE id = $1 AND state = 'dead'
             RETURNING {_COLUMNS}""",
            callback_id,
        )
        if row is None:
            state = await conn.fetchval(
                "SELECT state FROM dci_callbacks WHERE id = $1", callback_id
            )
            if state is None:
                raise NotFound("no such callback")
            raise Conflict(f"the callback is {state}, not dead", extra={"state": state})
        await audit.append_action(
            conn,
            staff,
            "POST /v1/staff/dci/deliveries/{id}/retry",
            {"callback": callback_id, "agreement": row["agreement_id"]},
        )
    return _item(row)
