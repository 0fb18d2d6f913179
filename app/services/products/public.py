"""Public summaries and maps answered from the public cube, never from the registry.

A visitor's request costs what its answer costs: it reads the current refresh (one row of
``public_refreshes``), then its finished answer from this process's memory, else from
``public_answers`` (the answers the worker pre-rendered with the refresh, and those other
processes computed), else computes it from the cube (app.services.products.cube: a few
hundred to a few thousand rows, whatever the registry's size), protects it with the same
``protect`` as every published aggregate and keeps it. No statement here touches
``households`` or ``members``.

Every answer is tied to one refresh: its ``registry_version`` and ``as_of`` are the
refresh's, its strong ETag is a BLAKE2b of the refresh id and the body, and its key in
``public_answers`` and in memory is (refresh id, normalized query, disclosure policy).
A computed answer is written to ``public_answers`` only when it names at most one place
(and, for a map, takes the default cut-off): what the website and most visitors ask;
rarer ones stay in the memory of the process that computed them, so no visitor can fill
the table. Before the first refresh exists the answer is :class:`NotReady` (503).

Protection of a table whose cells did not change since a previous refresh is not solved
again: ``protect`` is a pure function of its input, so its result is kept by input
(:class:`ProtectMemo`), which makes the pre-rendering after an incremental refresh cost
little more than reading the cube.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import h3
import numpy as np
import orjson

from app.auth.partner import Principal
from app.errors import ServiceUnavailable
from app.replicas import Reads
from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import Disclosure, Published, protect
from app.services.disclosure.table import Cell
from app.services.products import aggregate
from app.services.products import maps as map_service
from app.services.products.cube import BINS
from app.services.products.maps import GEOJSON, PNG, MapQuery, MapResult
from app.services.sharing.beneficiaries import check_geography
from app.services.sharing.beneficiaries_sql import Filters

log = logging.getLogger("nser.products")

PUBLIC_GEO_LEVELS = ("province", "division", "district")
COUNTS = ("households", "members")
RETRY_AFTER_SECONDS = 60
# The website's map page offers these resolutions and asks resolution 0 for area totals.
WEB_RESOLUTIONS = (3, 4, 5)
AREA_RESOLUTION = 0
JSON = "application/json"
_PUBLIC = Principal(client_id="public", kind="public", scopes=frozenset())
_COLUMN = {
    "province": "province_code",
    "division": "division_code",
    "district": "district_code",
    "poverty_band": "poverty_band",
    "gender": "gender",
    "age_bracket": "age_bracket",
}


class NotReady(ServiceUnavailable):
    """No refresh exists yet: the worker is counting the registry for the first time."""

    def __init__(self) -> None:
        super().__init__(
            "the public statistics are being counted for the first time; try again in a minute",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@dataclass(frozen=True)
class Refresh:
    """The refresh an answer describes."""

    id: int
    registry_version: int
    as_of: datetime

    def stamp(self) -> dict[str, Any]:
        """What an answer says of it besides ``registry_version``."""
        return {"as_of": self.as_of.isoformat()}


async def current(conn: asyncpg.Connection | asyncpg.Pool) -> Refresh | None:
    """The latest refresh (None before the first)."""
    row = await conn.fetchrow(
        "SELECT id, registry_version, as_of FROM public_refreshes ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return None
    return Refresh(row["id"], row["registry_version"], row["as_of"])


def entity_tag(refresh_id: int, body: bytes) -> str:
    """Strong: the same refresh and body give the same tag in every process and replica."""
    digest = hashlib.blake2b(f"{refresh_id}\n".encode() + body, digest_size=16).hexdigest()
    return f'"{digest}"'


@dataclass
class Answer:
    """A finished answer: its bytes, tag and media type (its JSON parsed on demand)."""

    body: bytes
    etag: str
    media_type: str
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            self._json = orjson.loads(self.body)
        return self._json


# -- normalized queries -------------------------------------------------------------------


def _policy(policy: Policy) -> str:
    return f"t{policy.threshold}r{policy.rounding_base}d{policy.dominance}"


def _places(geo: Mapping[str, Sequence[str]]) -> str:
    return ";".join(
        f"{level}={','.join(sorted(set(geo[level])))}"
        for level in PUBLIC_GEO_LEVELS
        if geo.get(level)
    )


def _place_count(geo: Mapping[str, Sequence[str]]) -> int:
    return sum(len(set(codes)) for codes in geo.values())


def summary_key(dims: Sequence[str], geo: Mapping[str, Sequence[str]], policy: Policy) -> str:
    return f"summary|{_policy(policy)}|{','.join(dims)}|{_places(geo)}"


def map_key(q: MapQuery, fmt: str, policy: Policy) -> str:
    cut = f"{q.cut_off:g}" if q.measure == "poverty_rate" else ""
    return (
        f"map|{_policy(policy)}|{q.measure}|{q.resolution}|{cut}|{_places(q.filters.geo())}|{fmt}"
    )


def _media(key: str) -> str:
    if key.startswith("summary|"):
        return JSON
    return PNG if key.endswith("|png") else GEOJSON


# -- protection, memoized -------------------------------------------------------------------


class ProtectMemo:
    """``protect``'s results by input, least recently used out first: a table whose cells
    did not change gives what it gave (``protect`` is pure), without solving again."""

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self._kept: OrderedDict[tuple[Any, ...], tuple[list[Published], Disclosure]] = OrderedDict()
        self._lock = threading.Lock()  # called from worker threads

    @staticmethod
    def key(
        dims: Sequence[str], cells: Sequence[Cell], policy: Policy, present: dict[str, list[str]]
    ) -> tuple[Any, ...]:
        return (
            tuple(dims),
            tuple(
                (tuple(c.key.items()), c.households, c.members, c.score_sum, c.below) for c in cells
            ),
            policy,
            tuple((d, tuple(v)) for d, v in sorted(present.items())),
        )

    def get(self, key: tuple[Any, ...]) -> tuple[list[Published], Disclosure] | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: tuple[list[Published], Disclosure]) -> None:
        with self._lock:
            self._kept[key] = value
            self._kept.move_to_end(key)
            while len(self._kept) > self.max_entries:
                self._kept.popitem(last=False)

    def __call__(
        self,
        dims: Sequence[str],
        cells: Sequence[Cell],
        policy: Policy,
        present: dict[str, list[str]],
    ) -> tuple[list[Published], Disclosure]:
        key = self.key(dims, cells, policy, present)
        found = self.get(key)
        if found is None:
            found = protect(dims, cells, policy, present)
            self.put(key, found)
        return found


MEMO = ProtectMemo()

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    """At most two answers computed at once per event loop (CPU: linear programs)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(aggregate.PROTECTING_AT_ONCE)
    return gate


# -- answers from the cube -------------------------------------------------------------------

# Reads the cube (inside a snapshot) and returns the CPU part, run off the event loop.
Finish = Callable[[], bytes]


def _geo_where(geo: Mapping[str, Sequence[str]], params: list[Any]) -> list[str]:
    where = []
    for level in PUBLIC_GEO_LEVELS:
        codes = geo.get(level)
        if codes:
            params.append(sorted(set(codes)))
            where.append(f"{level}_code = ANY(${len(params)}::text[])")
    return where


async def summary_reads(
    conn: asyncpg.Connection,
    dims: Sequence[str],
    geo: Mapping[str, Sequence[str]],
    policy: Policy,
    refresh: Refresh,
) -> Finish:
    """The public table of ``dims`` (already checked) over the cube, as a closure that
    protects and serializes it. Unknown codes: 422."""
    await check_geography(
        conn,
        _PUBLIC,
        Filters(
            province=list(geo.get("province", [])),
            division=list(geo.get("division", [])),
            district=list(geo.get("district", [])),
        ),
    )
    params: list[Any] = []
    where = _geo_where(geo, params)
    where.append("gender <> ''" if "gender" in dims else "gender = ''")
    where.append("age_bracket <> ''" if "age_bracket" in dims else "age_bracket = ''")
    cols = ", ".join(f"{_COLUMN[d]} AS d{i}" for i, d in enumerate(dims))
    keys = ", ".join(f"d{i}" for i in range(len(dims)))
    rows = await conn.fetch(
        f"""SELECT {cols}, sum(households)::bigint AS households,
                   sum(members)::bigint AS members
              FROM public_cube WHERE {" AND ".join(where)}
             GROUP BY {keys} ORDER BY {keys}""",
        *params,
    )
    interior = [
        Cell({d: row[f"d{i}"] for i, d in enumerate(dims)}, row["households"], row["members"])
        for row in rows
    ]
    cells = aggregate.full_table(dims, interior)  # 422 above the cell limit

    def finish() -> bytes:
        published, disclosure = MEMO(dims, cells, policy, aggregate.present(dims, cells))
        rows_out: list[dict[str, Any]] = []
        margins: list[dict[str, Any]] = []
        for p in published:
            out: dict[str, Any] = dict(p.key)
            out["households"] = p.households
            out["members"] = p.members
            (margins if any(v is None for v in p.key.values()) else rows_out).append(out)
        return orjson.dumps(
            {
                "rows": rows_out,
                "margins": margins,
                "suppressed_below": policy.threshold,
                "disclosure": disclosure.as_json(),
                "registry_version": refresh.registry_version,
                **refresh.stamp(),
            }
        )

    return finish


async def map_reads(
    conn: asyncpg.Connection, q: MapQuery, policy: Policy, refresh: Refresh
) -> Callable[[], MapResult]:
    """The public map ``q`` (whole-number cut-off) over the cube, as a closure that
    protects it and writes its GeoJSON. Unknown codes: 422."""
    await check_geography(conn, _PUBLIC, q.filters)
    geo = q.filters.geo()
    params: list[Any] = [q.resolution]
    where = ["resolution = $1", *_geo_where(geo, params)]
    rows = await conn.fetch(
        f"""SELECT h3, households, unscored, score_cents, bins FROM public_map_cube
             WHERE {" AND ".join(where)}""",
        *params,
    )
    params = []
    scope = _geo_where(geo, params)
    totals = await conn.fetchrow(
        f"""SELECT coalesce(sum(households), 0)::bigint AS households,
                   coalesce(sum(unlocated), 0)::bigint AS unlocated
              FROM public_districts {"WHERE " + " AND ".join(scope) if scope else ""}""",
        *params,
    )
    assert totals is not None
    cut = int(q.cut_off)

    def finish() -> MapResult:
        table = map_table(rows, cut)
        return map_service.publish(
            q,
            table,
            totals["households"],
            totals["unlocated"],
            refresh.registry_version,
            policy,
            refresh.stamp(),
            MEMO,
        )

    return finish


def map_table(rows: Sequence[asyncpg.Record], cut: int) -> map_service.Table:
    """Per-hexagon sums over the districts' rows, hexagons in index order (as the live
    map's ``np.unique`` orders them); households below ``cut`` from the histogram."""
    if not rows:
        return map_service.Table([], [], [], [])
    cells = np.array([r["h3"] for r in rows], dtype=np.int64).astype(np.uint64)
    uniq, inverse = np.unique(cells, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = len(uniq)
    households = np.bincount(inverse, weights=[r["households"] for r in rows], minlength=n)
    unscored = np.bincount(inverse, weights=[r["unscored"] for r in rows], minlength=n)
    cents = np.bincount(inverse, weights=[r["score_cents"] for r in rows], minlength=n)
    bins = np.frombuffer(b"".join(r["bins"] for r in rows), dtype="<i4").reshape(-1, BINS)
    below = np.bincount(inverse, weights=bins[:, :cut].sum(axis=1), minlength=n)
    return map_service.Table(
        cells=[h3.int_to_str(c) for c in uniq.tolist()],
        households=[round(x) for x in households.tolist()],
        score_sum=[
            None if u else c / 100 for u, c in zip(unscored.tolist(), cents.tolist(), strict=True)
        ],
        below=[
            None if u else round(b) for u, b in zip(unscored.tolist(), below.tolist(), strict=True)
        ],
    )


def features_of(answer: Answer) -> list[tuple[str, float | int | None, int | None]]:
    """A GeoJSON answer's hexagons as (h3, value, households)."""
    return [
        (f["properties"]["h3"], f["properties"]["value"], f["properties"]["households"])
        for f in answer.json()["features"]
    ]


def png_of(q: MapQuery, geojson: Answer) -> bytes:
    """The picture of a map answer (CPU: off the event loop)."""
    version = geojson.json()["registry_version"]
    return map_service.render_png(MapResult(q, version, features_of(geojson), geojson.body, 0))


# -- the cache in front --------------------------------------------------------------------


def _retrieve(task: asyncio.Task[Answer]) -> None:
    if not task.cancelled():
        task.exception()


class PublicCache:
    """Finished answers by (refresh id, key) in this process, least recently used out
    first within ``max_bytes``; a key being loaded or computed is awaited, not redone. The
    refresh id is in the key, so nothing here ever needs expiring; once a newer refresh's
    answer comes in, the answers of refreshes before the previous one are dropped (no
    request asks for them again; one refresh back is kept for a replica that has not
    replayed the newest yet). Without that, every refresh added a generation of dead
    answers until ``max_bytes``: the soak (bench/soak.py) saw each process grow by 100 MB
    over ten minutes of refreshes."""

    def __init__(self, max_bytes: int = 128 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.newest = 0  # the newest refresh id answered from here
        self._done: OrderedDict[tuple[int, str], Answer] = OrderedDict()
        self._running: dict[tuple[int, str], asyncio.Task[Answer]] = {}

    def get(self, key: tuple[int, str]) -> Answer | None:
        hit = self._done.get(key)
        if hit is not None:
            self._done.move_to_end(key)
        return hit

    def put(self, key: tuple[int, str], answer: Answer) -> None:
        if key[0] > self.newest:
            for stale in [k for k in self._done if k[0] < self.newest]:
                self.bytes -= len(self._done.pop(stale).body)
            self.newest = key[0]
        old = self._done.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._done[key] = answer
        self.bytes += len(answer.body)
        while self.bytes > self.max_bytes and len(self._done) > 1:
            _, dropped = self._done.popitem(last=False)
            self.bytes -= len(dropped.body)

    async def get_or_load(
        self, key: tuple[int, str], load: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        hit = self.get(key)
        if hit is not None:
            return hit
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(key, load))
            task.add_done_callback(_retrieve)
            self._running[key] = task
        return await asyncio.shield(task)

    async def _run(self, key: tuple[int, str], load: Callable[[], Awaitable[Answer]]) -> Answer:
        try:
            answer = await load()
        finally:
            self._running.pop(key, None)
        self.put(key, answer)
        return answer


# Compute an answer's bytes on a connection in a snapshot showing ``refresh``.
Compute = Callable[[asyncpg.Connection, Refresh], Awaitable[Callable[[], bytes]]]


async def _answer(
    reads: Reads, cache: PublicCache, key: str, compute: Compute, keep: bool
) -> Answer:
    if reads.configured:
        # On a read replica: the answer is then read where that refresh is replayed, so
        # a replica behind the one that named the refresh never answers for it.
        refresh, position = await reads.run_at(current)
    else:
        refresh, position = await current(reads.primary), None
    if refresh is None:
        raise NotReady()

    async def snapshot(conn: asyncpg.Connection) -> tuple[Refresh, Callable[[], bytes]]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            seen = await current(conn)  # this refresh, or one committed since
            assert seen is not None
            return seen, await compute(conn, seen)

    async def load() -> Answer:
        row = await reads.fetchrow(
            "SELECT etag, body FROM public_answers WHERE refresh_id = $1 AND key = $2",
            refresh.id,
            key,
        )
        if row is not None:
            return Answer(row["body"], row["etag"], _media(key))
        async with _gate():
            seen, finish = await reads.run(snapshot, after=position)
            body = await asyncio.to_thread(finish)
        answer = Answer(body, entity_tag(seen.id, body), _media(key))
        if keep:  # written on the primary, whichever server counted it
            await reads.primary.execute(
                """INSERT INTO public_answers (refresh_id, key, etag, body)
                   SELECT $1, $2, $3, $4
                    WHERE EXISTS (SELECT 1 FROM public_refreshes WHERE id = $1)
                   ON CONFLICT DO NOTHING""",
                seen.id,
                key,
                answer.etag,
                answer.body,
            )
        return answer

    return await cache.get_or_load((refresh.id, key), load)


async def public_summary(
    reads: Reads,
    cache: PublicCache,
    group_by: Sequence[str],
    geo: dict[str, list[str]],
    policy: Policy,
) -> Answer:
    """The public table (422 for a bad grouping before anything is read)."""
    dims = aggregate.parse_group_by(group_by, granted=None)

    async def compute(conn: asyncpg.Connection, refresh: Refresh) -> Callable[[], bytes]:
        return await summary_reads(conn, dims, geo, policy, refresh)

    key = summary_key(dims, geo, policy)
    return await _answer(reads, cache, key, compute, keep=_place_count(geo) <= 1)


async def public_map(
    reads: Reads, cache: PublicCache, q: MapQuery, fmt: str, policy: Policy
) -> Answer:
    """The public map (GeoJSON or PNG); its cut-off is a whole number (the router says)."""
    keep = _place_count(q.filters.geo()) <= 1 and q.cut_off == map_service.DEFAULT_CUT_OFF
    if fmt == "png":
        # The map first (outside the gate the picture's computation takes).
        geojson = await public_map(reads, cache, q, "geojson", policy)

        async def picture(conn: asyncpg.Connection, refresh: Refresh) -> Callable[[], bytes]:
            return lambda: png_of(q, geojson)

        return await _answer(reads, cache, map_key(q, fmt, policy), picture, keep)

    async def compute(conn: asyncpg.Connection, refresh: Refresh) -> Callable[[], bytes]:
        finish = await map_reads(conn, q, policy, refresh)
        return lambda: finish().body

    return await _answer(reads, cache, map_key(q, fmt, policy), compute, keep)


# -- pre-rendering, in the refresh's transaction ------------------------------------------


def map_query(measure: str, resolution: int, geo: dict[str, list[str]]) -> MapQuery:
    """A public map's query as the endpoint builds it (default cut-off), so the website,
    the pre-rendering and the API find the same stored answer."""
    return MapQuery(
        measure,  # type: ignore[arg-type]
        resolution,
        map_service.DEFAULT_CUT_OFF,
        Filters(
            province=geo.get("province", []),
            division=geo.get("division", []),
            district=geo.get("district", []),
        ),
    )


async def prerender(
    conn: asyncpg.Connection, policy: Policy, progress: Callable[[str, int, int], None]
) -> int:
    """Store the answers the website and most visitors ask for, built from the cube as
    this (uncommitted) refresh leaves it: the statistics page's tables (the country by
    province, each province by district, by poverty band), the province x band x gender
    table, country-wide maps of each measure at every public resolution, the map page's
    maps and pictures (the country and each province at its resolutions) and its area
    totals (each province and district at resolution 0). Returns how many."""
    refresh = await current(conn)
    assert refresh is not None
    units = await conn.fetch(
        "SELECT code, level FROM geo_units WHERE level IN ('province', 'district') ORDER BY code"
    )
    provinces = [u["code"] for u in units if u["level"] == "province"]
    districts = [u["code"] for u in units if u["level"] == "district"]
    summaries: list[tuple[list[str], dict[str, list[str]]]] = [
        (["province", "poverty_band"], {}),
        (["province", "poverty_band", "gender"], {}),
        *((["district", "poverty_band"], {"province": [p]}) for p in provinces),
    ]
    maps: list[MapQuery] = [
        *(
            map_query(m, r, {})
            for m in map_service.MEASURES
            for r in range(map_service.PUBLIC_MAX_RESOLUTION + 1)
        ),
        *(
            map_query(m, r, {"province": [p]})
            for m in map_service.MEASURES
            for r in WEB_RESOLUTIONS
            for p in provinces
        ),
        *(
            map_query(m, AREA_RESOLUTION, {level: [code]})
            for m in map_service.MEASURES
            for level, codes in (("province", provinces), ("district", districts))
            for code in codes
        ),
    ]
    # The map page's pictures: the country and each province, at the page's resolutions.
    pictures = [
        i for i, q in enumerate(maps) if q.resolution in WEB_RESOLUTIONS and not q.filters.district
    ]
    total = len(summaries) + len(maps) + len(pictures)
    done = 0
    stored: list[tuple[str, str, bytes]] = []
    for dims, geo in summaries:
        finish = await summary_reads(conn, dims, geo, policy, refresh)
        body = await asyncio.to_thread(finish)
        stored.append((summary_key(dims, geo, policy), entity_tag(refresh.id, body), body))
        done += 1
        progress("answers", done, total)
    geojson: list[Answer] = []
    for q in maps:
        result = await asyncio.to_thread(await map_reads(conn, q, policy, refresh))
        answer = Answer(result.body, entity_tag(refresh.id, result.body), GEOJSON)
        geojson.append(answer)
        stored.append((map_key(q, "geojson", policy), answer.etag, answer.body))
        done += 1
        progress("answers", done, total)
    for i in pictures:
        q = maps[i]
        png = await asyncio.to_thread(png_of, q, geojson[i])
        stored.append((map_key(q, "png", policy), entity_tag(refresh.id, png), png))
        done += 1
        progress("answers", done, total)
    await conn.copy_records_to_table(
        "public_answers",
        columns=["refresh_id", "key", "etag", "body"],
        records=[(refresh.id, key, etag, body) for key, etag, body in stored],
    )
    return len(stored)
