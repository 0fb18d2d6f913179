"""Reads on read replicas: the public look-up, lists, exports, eligibility, products and
the website read a streaming standby when ``NSER_READ_DATABASE_URL`` names one or more.

Everything else (writes, the audit append, tokens and the principal behind them, the
ingest queue, staff work) stays on the primary. :class:`Reads` is what the read paths hold
instead of the primary's pool; with no replica configured every call goes to the primary
pool exactly as before.

**Which replica.** Round robin over the replicas that are *usable*: answering, a standby
(``pg_is_in_recovery()``), at this release's migrations, and no further behind the primary
than ``NSER_READ_MAX_LAG_SECONDS``. A background check (every ``NSER_READ_CHECK_SECONDS``)
decides that. How far behind: each check samples the primary's flushed WAL position; a
replica that has replayed up to the sample taken at ``t`` holds every change the primary
had committed at ``t``, so its lag is the age of the newest sample it has reached
(:func:`staleness`). A replica that reached no sample yet counts as lagging.

**Fallback.** A read meant for a replica goes to the primary when no replica is usable, or
when its replica fails under it (the connection refused or cut, the server shutting down,
a recovery conflict cancelling the statement): the read is re-run on the primary before
anything was sent to the client, the replica is marked down until a check finds it well,
and ``nser_db_read_fallbacks_total{reason}`` counts it. A stream already flowing from a
replica that fails ends early, as it would if the primary failed.

**Lag rule.** A read that must see at least some state — the continuation of a list whose
cursor carries the WAL position its previous page was read at, an as-of list whose instant
the primary declared final at a position — names that position (``after``): a replica
that has not replayed it yet is waited for, up to ``NSER_READ_WAIT_SECONDS``, then the
primary answers (reason ``behind``). So a cursor never continues on an older state than the
page it came from, and an as-of list and its snapshot id never mix two states.

Positions are LSNs as integers: a standby's ``pg_last_wal_replay_lsn()``, the primary's
``pg_current_wal_flush_lsn()`` (a committed change is flushed before anyone sees it, with
the default ``synchronous_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import asyncpg

from app import metrics
from app.db import asyncpg_target, close_pool, keep_session, server_settings
from app.errors import DATABASE_UNAVAILABLE
from app.services.audit import trail as audit
from app.settings import Settings

log = logging.getLogger("nser.replicas")

T = TypeVar("T")

# The service's connections name themselves, so pg_stat_activity tells reads from the rest.
PRIMARY_APPLICATION_NAME = "nser"
READ_APPLICATION_NAME = "nser-read"
# A replica that does not accept a connection within this many seconds is down (a primary
# connection keeps asyncpg's default).
CONNECT_TIMEOUT = 3.0

REPLAY_SQL = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
FLUSH_SQL = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
# The position of whichever server answers: evaluated after the statement's snapshot, so
# the state that snapshot shows is at or before it.
POSITION_SQL = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_flush_lsn() END - '0/0'::pg_lsn)::bigint"
)
_CHECK_SQL = """
SELECT pg_is_in_recovery() AS standby,
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replay,
       ARRAY(SELECT version_num FROM alembic_version ORDER BY 1) AS heads
"""

# A replica failing under a read: the read is re-run on the primary.
FAILURES: tuple[type[Exception], ...] = (
    *DATABASE_UNAVAILABLE,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.SerializationError,
)
# Of those, what cancels one statement on a healthy standby (a recovery conflict: replay
# needed rows the statement's snapshot still saw): the replica stays in use.
_CONFLICTS: tuple[type[Exception], ...] = (asyncpg.SerializationError, asyncpg.QueryCanceledError)

State = Literal["ok", "lagging", "down", "unfit", "starting"]
Reason = Literal["down", "lagging", "unfit", "behind", "conflict", "starting"]

_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+asyncpg)?://", re.IGNORECASE)


def replica_name(url: str) -> str:
    """A replica's name in /readyz, logs and metrics: host(s), port and database, never the
    user or password."""
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    hosts = parts.netloc.rpartition("@")[2]
    query_host = re.search(r"(?:^|&)host=([^&]+)", parts.query)
    if not hosts and query_host:
        hosts = query_host.group(1)
    return f"{hosts}{parts.path}"


def staleness(samples: Sequence[tuple[float, int]], replay: int, now: float) -> tuple[float, bool]:
    """How far behind the primary a standby that replayed up to ``replay`` is: the age of the
    newest primary sample ``(time, position)`` at or before ``replay`` (the standby holds
    every change the primary had committed then), and True. When the standby reached no
    sample, a lower bound (the age of the oldest sample, or infinity) and False."""
    for at, position in reversed(samples):
        if position <= replay:
            return max(0.0, now - at), True
    if not samples:
        return math.inf, False
    return max(0.0, now - samples[0][0]), False


@dataclass
class Replica:
    """One read replica: its pool and what the last check (or a failed read) found."""

    name: str
    pool: asyncpg.Pool
    state: State = "starting"
    lag: float | None = None
    replay: int | None = None
    detail: str | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "state": self.state}
        out["lag_seconds"] = None if self.lag is None else round(self.lag, 3)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Lease:
    """A connection lent for a read: on a replica (``replica`` set) or on the primary."""

    conn: asyncpg.Connection
    replica: Replica | None
    pool: asyncpg.Pool


def _describe(exc: BaseException) -> str:
    return type(exc).__name__


class Reads:
    """The read paths' database: round robin over usable replicas, else the primary.

    ``primary`` is the primary's pool, for what a read path writes (the audit row, a logged
    query). With no replica, every method is the primary pool's own.
    """

    def __init__(
        self,
        primary: asyncpg.Pool,
        replicas: Sequence[Replica] = (),
        *,
        max_lag: float = 5.0,
        wait: float = 0.5,
        check_every: float = 1.0,
        expected_heads: frozenset[str] | None = None,
    ) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.max_lag = max_lag
        self.wait = wait
        self.check_every = check_every
        self.expected_heads = expected_heads
        self._usable: list[Replica] = []
        self._turn = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._primary_answered = False
        self._checker: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, source: Reads | asyncpg.Pool) -> Reads:
        """``source`` itself, or a pool as reads without replicas."""
        return source if isinstance(source, Reads) else cls(source)

    @property
    def configured(self) -> bool:
        """Whether any replica is configured (else everything reads the primary)."""
        return bool(self.replicas)

    # -- choosing ----------------------------------------------------------------------------

    def _fallback(self, reason: Reason) -> None:
        metrics.read_fallback(reason)

    def _no_replica_reason(self) -> Reason:
        states = {replica.state for replica in self.replicas}
        for state in ("lagging", "starting", "unfit"):
            if state in states:
                return state
        return "down"

    def _rotation(self) -> list[Replica]:
        """The usable replicas, starting with the next one's turn."""
        usable = self._usable
        if not usable:
            return []
        self._turn = (self._turn + 1) % len(usable)
        return usable[self._turn :] + usable[: self._turn]

    def _next(self) -> Replica | None:
        usable = self._usable
        if not usable:
            if self.replicas:
                self._fallback(self._no_replica_reason())
            return None
        self._turn = (self._turn + 1) % len(usable)
        return usable[self._turn]

    def _set_state(self, replica: Replica, state: State, detail: str | None = None) -> None:
        if replica.state != state:
            level = logging.INFO if state == "ok" else logging.WARNING
            log.log(
                level,
                "read replica %s: %s",
                replica.name,
                state,
                extra={"replica": replica.name, "state": state, "detail": detail},
            )
        replica.state = state
        replica.detail = detail
        self._usable = [r for r in self.replicas if r.state == "ok"]
        metrics.replica_state(replica.name, state == "ok", replica.lag)

    def _failed(self, replica: Replica, exc: BaseException) -> Reason:
        """A read failed on ``replica``: down (until a check finds it well) unless a
        recovery conflict cancelled the read. The reason, for the fallback it causes."""
        if isinstance(exc, _CONFLICTS):
            log.info("read on replica %s cancelled (%s)", replica.name, _describe(exc))
            return "conflict"
        self._set_state(replica, "down", _describe(exc))
        return "down"

    # -- single statements (retried on the primary) ------------------------------------------

    async def _one(self, method: str, query: str, *args: Any) -> Any:
        """``method`` (fetchrow, fetch or fetchval) on a replica's pool, or on the primary
        when no replica is usable or the replica fails."""
        replica = self._next()
        if replica is not None:
            try:
                return await getattr(replica.pool, method)(query, *args)
            except FAILURES as exc:
                self._fallback(self._failed(replica, exc))
        return await getattr(self.primary, method)(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._one("fetchrow", query, *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        return await self._one("fetch", query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._one("fetchval", query, *args)

    # -- connections ----------------------------------------------------------------------------

    async def _caught_up(self, conn: asyncpg.Connection, after: int | None) -> bool | None:
        """Whether the standby behind ``conn`` replayed ``after``, waiting up to ``wait``
        seconds; None when it is no standby (promoted, or a primary named as a replica)."""
        position = await conn.fetchval(REPLAY_SQL)
        if position is None:
            return None
        if after is None or position >= after:
            return True
        deadline = time.monotonic() + self.wait
        pause = 0.002
        while time.monotonic() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)
            position = await conn.fetchval(REPLAY_SQL)
            if position is not None and position >= after:
                return True
        return False

    async def _lease(self, after: int | None) -> Lease:
        """A connection on a usable replica that replayed ``after`` (checked on it, which
        also finds a connection the replica cut), else on the primary."""
        if self.replicas:
            rotation = self._rotation()
            reason = "down" if rotation else self._no_replica_reason()
            for replica in rotation:
                try:
                    conn = await replica.pool.acquire()
                except FAILURES as exc:
                    reason = self._failed(replica, exc)
                    continue
                try:
                    caught_up = await self._caught_up(conn, after)
                except FAILURES as exc:
                    await self._release(replica.pool, conn)
                    reason = self._failed(replica, exc)
                    continue
                except BaseException:
                    await self._release(replica.pool, conn)
                    raise
                if caught_up:
                    return Lease(conn, replica, replica.pool)
                await self._release(replica.pool, conn)
                if caught_up is None:
                    self._set_state(replica, "unfit", "not a standby")
                    reason = "unfit"
                    continue
                reason = "behind"  # one wait is enough: the primary has it now
                break
            self._fallback(reason)
        conn = await self.primary.acquire()
        return Lease(conn, None, self.primary)

    @staticmethod
    async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        try:
            await pool.release(conn)
        except FAILURES:  # a connection the server cut: the pool replaces it
            conn.terminate()

    @contextlib.asynccontextmanager
    async def acquire(self, *, after: int | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A connection for a read that holds it (a stream): on a replica that replayed
        ``after``, else the primary. A failure inside is not retried (the caller may have
        sent data); it marks the replica down."""
        lease = await self._lease(after)
        try:
            yield lease.conn
        except FAILURES as exc:
            if lease.replica is not None:
                self._failed(lease.replica, exc)
            raise
        finally:
            await self._release(lease.pool, lease.conn)

    async def run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, after: int | None = None
    ) -> T:
        """``work(conn)`` (reads only) on a replica that replayed ``after``, else on the
        primary; re-run on the primary if the replica fails under it."""
        lease = await self._lease(after)
        try:
            return await work(lease.conn)
        except FAILURES as exc:
            if lease.replica is None:
                raise
            self._fallback(self._failed(lease.replica, exc))
        finally:
            await self._release(lease.pool, lease.conn)
        async with self.primary.acquire() as conn:
            return await work(conn)

    async def run_at(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, after: int | None = None
    ) -> tuple[T, int]:
        """As :meth:`run`, and the position of the state ``work`` read (for a cursor: the
        next page must see at least it)."""

        async def with_position(conn: asyncpg.Connection) -> tuple[T, int]:
            value = await work(conn)
            position: int = await conn.fetchval(POSITION_SQL)
            return value, max(position, after or 0)

        return await self.run(with_position, after=after)

    async def primary_position(self) -> int:
        """The primary's flushed WAL position now."""
        position: int = await self.primary.fetchval(FLUSH_SQL)
        return position

    async def audited(
        self,
        read: Callable[[asyncpg.Connection], Awaitable[T]],
        record: Callable[[T], audit.AuditRecord],
        *,
        after: int | None = None,
        also: Callable[[asyncpg.Connection, T], Awaitable[object]] | None = None,
    ) -> T:
        """A read of personal data and its audit row, the row always on the primary.

        On the primary (no replica, or a fallback), read and row share one transaction, as
        without replicas; on a replica the row is appended on the primary after the read.
        Either way nothing is answered unless the row was written. ``also`` writes what
        else the read leaves behind (a DCI transaction's record) on the primary, in the
        audit row's transaction: one commit for both.
        """
        if not self.replicas:
            return await self._audited_on(self.primary, read, record, also)
        lease = await self._lease(after)
        if lease.replica is None:  # a fallback: as without replicas, on this connection
            try:
                async with lease.conn.transaction():
                    value = await read(lease.conn)
                    await audit.append(lease.conn, record(value))
                    if also is not None:
                        await also(lease.conn, value)
                return value
            finally:
                await self._release(lease.pool, lease.conn)
        try:
            value = await read(lease.conn)
        except FAILURES as exc:
            failed: Reason | None = self._failed(lease.replica, exc)
        else:
            failed = None
        finally:
            await self._release(lease.pool, lease.conn)
        if failed is not None:
            self._fallback(failed)
            return await self._audited_on(self.primary, read, record, also)
        if also is None:
            await audit.append_with_pool(self.primary, record(value))
        else:
            async with self.primary.acquire() as conn, conn.transaction():
                await audit.append(conn, record(value))
                await also(conn, value)
        return value

    @staticmethod
    async def _audited_on(
        pool: asyncpg.Pool,
        read: Callable[[asyncpg.Connection], Awaitable[T]],
        record: Callable[[T], audit.AuditRecord],
        also: Callable[[asyncpg.Connection, T], Awaitable[object]] | None = None,
    ) -> T:
        async with pool.acquire() as conn, conn.transaction():
            value = await read(conn)
            await audit.append(conn, record(value))
            if also is not None:
                await also(conn, value)
        return value

    # -- health ----------------------------------------------------------------------------------

    def report(self) -> dict[str, Any] | None:
        """What /readyz says of the reads (None without replicas)."""
        if not self.replicas:
            return None
        return {
            "on": "replicas" if self._usable else "primary",
            "replicas": [replica.report() for replica in self.replicas],
        }

    async def _sample_primary(self) -> None:
        try:
            position = await asyncio.wait_for(self.primary.fetchval(FLUSH_SQL), CONNECT_TIMEOUT)
        except FAILURES:
            self._primary_answered = False
            return
        now = time.monotonic()
        self._samples.append((now, int(position)))
        self._primary_answered = True
        keep = max(60.0, 4 * self.max_lag) + self.check_every
        while self._samples and now - self._samples[0][0] > keep:
            self._samples.popleft()

    async def _check_replica(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                row = await replica.pool.fetchrow(_CHECK_SQL)
        except (*FAILURES, asyncpg.PostgresError) as exc:
            replica.lag = None
            self._set_state(replica, "down", _describe(exc))
            return
        if not row["standby"] or row["replay"] is None:
            replica.lag = None
            self._set_state(replica, "unfit", "not a standby (pg_is_in_recovery() is false)")
            return
        heads = frozenset(row["heads"])
        if self.expected_heads is not None and heads != self.expected_heads:
            self._set_state(
                replica,
                "unfit",
                f"migrations at {sorted(heads)}, expected {sorted(self.expected_heads)}",
            )
            return
        replica.replay = int(row["replay"])
        if not self._primary_answered and replica.state in ("ok", "lagging"):
            # The primary does not answer: nothing newer can be committed; keep the verdict.
            self._set_state(replica, replica.state, replica.detail)
            return
        lag, known = staleness(self._samples, replica.replay, time.monotonic())
        replica.lag = None if math.isinf(lag) else lag
        if known and lag <= self.max_lag:
            self._set_state(replica, "ok")
        else:
            self._set_state(replica, "lagging", "behind by more than NSER_READ_MAX_LAG_SECONDS")

    async def check(self) -> None:
        """Sample the primary, then check every replica (at once)."""
        await self._sample_primary()
        await asyncio.gather(*(self._check_replica(replica) for replica in self.replicas))

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            try:
                await self.check()
            except Exception:  # a bug here must not stop the checks
                log.exception("read replica check failed")

    async def start(self) -> None:
        """The first check (before serving), then the periodic one."""
        if not self.replicas:
            return
        await self.check()
        self._checker = asyncio.create_task(self._check_forever(), name="nser-replica-check")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        for replica in self.replicas:
            await close_pool(replica.pool)


async def create_replica_pool(
    url: str, max_size: int, *, statement_cache: bool = True
) -> asyncpg.Pool:
    """A replica's pool: opens no connection yet, so a replica that is down at start-up
    does not stop the service (its first check marks it down). ``statement_cache`` off
    behind a transaction pooler, as for the primary (NSER_DB_STATEMENT_CACHE)."""
    target = asyncpg_target(url)
    pool = await asyncpg.create_pool(
        dsn=target.dsn,
        host=target.host,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=60,
        server_settings=server_settings(READ_APPLICATION_NAME),
        reset=keep_session,
        **({} if statement_cache else {"statement_cache_size": 0}),
    )
    assert pool is not None
    return pool


async def open_reads(primary: asyncpg.Pool, settings: Settings) -> Reads:
    """The read paths' database for ``settings``: the primary alone without
    NSER_READ_DATABASE_URL; else its replicas, checked once before this returns."""
    if not settings.read_database_url:
        return Reads(primary)
    from app.services.registry.health import expected_heads

    for position, url in enumerate(settings.read_database_url, start=1):
        if not _SCHEME.match(url):
            raise ValueError(
                f"NSER_READ_DATABASE_URL: replica {position} is not a "
                "postgresql://user:password@host:port/database URL"
            )
    replicas = [
        Replica(
            replica_name(url),
            await create_replica_pool(
                url, settings.db_pool_size, statement_cache=settings.db_statement_cache
            ),
        )
        for url in settings.read_database_url
    ]
    reads = Reads(
        primary,
        replicas,
        max_lag=settings.read_max_lag_seconds,
        wait=settings.read_wait_seconds,
        check_every=settings.read_check_seconds,
        expected_heads=expected_heads(settings.migrations_dir),
    )
    await reads.start()
    return reads
