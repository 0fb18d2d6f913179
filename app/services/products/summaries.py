"""Summary tables (category i): households and members by area, band, gender, age bracket.

Public (no credentials): down to districts, cached in the process by (query, registry data
version) for ``version.MAX_AGE_SECONDS``; the answer carries a strong ETag over the version
and the body. Partners (``summaries:read``): down to union councils within the agreement's
geography, any dimension the agreement grants, audited, and checked against the
agreement's earlier queries for differencing (app.services.products.differencing).

Every table is one GROUP BY for its interior cells, ``with_margins`` for the margins and
``protect`` for suppression and rounding: ``rows`` are the interior cells, ``margins`` the
totals (null for each dimension totalled over), all published by the same ``protect`` call.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.services.audit import trail as audit
from app.services.disclosure.policy import Policy
from app.services.products import aggregate, differencing
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries import check_geography
from app.services.sharing.beneficiaries_sql import Filters
from app.settings import Settings

ENDPOINT = "GET /v1/partner/summaries"
PUBLIC_GEO_LEVELS = ("province", "division", "district")
COUNTS = ("households", "members")


def policy_of(settings: Settings) -> Policy:
    """The disclosure policy of the service's settings."""
    return Policy(
        threshold=settings.suppress_below, rounding_base=settings.disclosure_rounding_base
    )


_PUBLIC = Principal(client_id="public", kind="public", scopes=frozenset())


async def public_summary(
    pool: asyncpg.Pool | asyncpg.Connection,
    group_by: list[str],
    geo: dict[str, list[str]],
    policy: Policy,
    version: int | None = None,
) -> dict[str, Any]:
    """The public table, uncached: ``{"rows", "margins", "suppressed_below", "disclosure",
    "registry_version"}``. ``geo`` holds province/division/district codes (ANDed)."""
    dims = aggregate.parse_group_by(group_by, granted=None)
    f = Filters(
        province=list(geo.get("province", [])),
        division=list(geo.get("division", [])),
        district=list(geo.get("district", [])),
    )
    if version is None:
        version = await registry_version.data_version(pool)
    await check_geography(pool, _PUBLIC, f)  # 422 for an unknown code
    cells = aggregate.full_table(dims, await aggregate.interior_cells(pool, dims, f))
    table = await aggregate.protect_table(dims, cells, policy, COUNTS)
    return {
        "rows": table.rows,
        "margins": table.margins,
        "suppressed_below": policy.threshold,
        "disclosure": table.disclosure.as_json(),
        "registry_version": version,
    }


def entity_tag(version: int, body: bytes) -> str:
    """Strong: the same registry version and body give the same tag on every replica."""
    digest = hashlib.blake2b(f"{version}\n".encode() + body, digest_size=16).hexdigest()
    return f'"{digest}"'


@dataclass(frozen=True)
class Answer:
    body: bytes
    etag: str


Key = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], int]


class SummaryCache:
    """Answers by (normalized query, registry data version), each kept ``ttl`` seconds.

    The version moves with every change to households or members, so a new version is a
    new key; the TTL bounds what a version read before a slow commit can serve. Concurrent
    misses of one key share one computation. At most ``max_entries``, least recent first out.
    """

    def __init__(
        self, ttl: float = registry_version.MAX_AGE_SECONDS, max_entries: int = 512
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, tuple[float, Answer]] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[Answer]] = {}

    def get(self, key: Key) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: Key, answer: Answer) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_compute(self, key: Key, compute: Callable[[], Awaitable[Answer]]) -> Answer:
        found = self.get(key)
        if found is not None:
            return found
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(answer)
        self.put(key, answer)
        return answer


def normalized_query(group_by: Sequence[str], geo: dict[str, list[str]], version: int) -> Key:
    dims = tuple(aggregate.ALIASES.get(d, d) for d in aggregate.split_values(group_by))
    places = tuple(
        (level, tuple(sorted(set(geo[level])))) for level in PUBLIC_GEO_LEVELS if geo.get(level)
    )
    return dims, places, version


async def cached_public_summary(
    cache: SummaryCache,
    pool: asyncpg.Pool,
    group_by: list[str],
    geo: dict[str, list[str]],
    policy: Policy,
) -> Answer:
    """The public answer as bytes with its ETag, from the cache when it holds it."""
    version = await registry_version.data_version(pool)
    key = normalized_query(group_by, geo, version)

    async def compute() -> Answer:
        answer = await public_summary(pool, group_by, geo, policy, version)
        body = orjson.dumps(answer)
        return Answer(body, entity_tag(version, body))

    return await cache.get_or_compute(key, compute)


async def partner_summary(
    pool: asyncpg.Pool, p: Principal, group_by: list[str], f: Filters, policy: Policy
) -> dict[str, Any]:
    """A partner's table: checked against the agreement (403/422) and its earlier queries
    (409); counted, logged and audited in one transaction, then protected."""
    dims = aggregate.parse_group_by(group_by, granted=p.dimensions)
    await check_geography(pool, p, f)
    assert p.agreement_id is not None
    async with pool.acquire() as conn, conn.transaction():
        await differencing.lock_agreement(conn, p.agreement_id)
        version = await registry_version.data_version(conn)
        overlap = await differencing.check_overlap(conn, p, f, policy.threshold)
        interior = await aggregate.interior_cells(conn, dims, f, p.geo_codes)
        cells = aggregate.full_table(dims, interior)
        query_id = await differencing.log_query(conn, p, "summaries", dims, overlap)
        await audit.append(
            conn,
            audit.AuditRecord.of(
                p,
                endpoint=ENDPOINT,
                filters=f.as_audit(),
                dimensions=dims,
                households=overlap.households,
                members=cells[-1].members,  # the grand total, last
            ),
        )
    table = await aggregate.protect_table(dims, cells, policy, COUNTS)
    return {
        "query_id": query_id,
        "rows": table.rows,
        "margins": table.margins,
        "suppressed_below": policy.threshold,
        "disclosure": table.disclosure.as_json(),
        "registry_version": version,
    }
