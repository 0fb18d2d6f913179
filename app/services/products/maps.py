"""Hex-bin maps (§4.2.4 vii): households, poverty rate or mean PMT score per H3 hexagon.

A map is a one-dimensional count table over ``h3`` (the hexagon id) whose margin is the total
over the map, protected by ``app.services.disclosure`` like every published aggregate: a
hexagon of fewer than ``suppress_below`` households (or withheld by any other rule) has a
null value and null households; published counts are rounded to the base.

The work of a map, in order:

1. one ``COPY ... (FORMAT binary)`` of three float8 per household in scope (lat, lon,
   score; NaN for NULL), read straight into numpy: the cheapest way to bring a million
   points out of PostgreSQL;
2. each located household's H3 cell (``latlng_to_cell`` on the exact coordinates: h3 has no
   vectorized form, so a tight loop over the integer API), counts, score sums and
   households below the cut-off per cell with ``np.unique``/``np.bincount``;
3. ``protect`` over ``with_margins(["h3"], ...)``, then the GeoJSON text (hexagon outlines
   from ``cell_to_boundary``, memoized: a cell's outline never changes).

Steps 2-3 are CPU-bound and run in a worker thread so the event loop keeps serving. A
partner's map is cached in-process (:class:`MapCache`), keyed by the normalized query and
the registry's ``data_version``, for ``version.MAX_AGE_SECONDS``; concurrent requests for a
map being computed wait for that one computation. The public map is not counted here: it
is summed from the public cube (app.services.products.public) and published by the same
:func:`publish`; :func:`compute` is the reference it is tested against.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import Any, Literal

import asyncpg
import h3
import h3.api.basic_int as h3i
import numpy as np
import numpy.typing as npt
import orjson

from app.auth.partner import Principal
from app.replicas import Reads
from app.services.audit import trail as audit
from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import (
    PRIMARY,
    Disclosure,
    Published,
    protect,
    round_half_up,
)
from app.services.disclosure.table import Cell, with_margins
from app.services.products import copystream, differencing
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries import check_geography
from app.services.sharing.beneficiaries_sql import Filters, Query, household_where

Measure = Literal["households", "poverty_rate", "mean_pmt_score"]
Format = Literal["geojson", "png"]
MEASURES: tuple[Measure, ...] = ("households", "poverty_rate", "mean_pmt_score")
PUBLIC_MAX_RESOLUTION = 5
PARTNER_MAX_RESOLUTION = 7
DEFAULT_CUT_OFF = 32.0
PARTNER_ENDPOINT = "/v1/partner/maps"
GEOJSON = "application/geo+json"
PNG = "image/png"
# A caller who is nobody: the public map checks codes, never an agreement's scope.
PUBLIC = Principal(client_id="public", kind="public", scopes=frozenset())


@dataclass(frozen=True)
class MapQuery:
    measure: Measure
    resolution: int
    cut_off: float
    filters: Filters
    scope: tuple[str, ...] = ()  # the agreement's geography (empty: none, or the public)

    def key(self) -> tuple[object, ...]:
        """The query, normalized: the same map asked in another order is the same key."""
        f = self.filters
        return (
            self.measure,
            self.resolution,
            self.cut_off if self.measure == "poverty_rate" else None,
            tuple((level, tuple(sorted(set(codes)))) for level, codes in f.geo().items()),
            f.score_min,
            f.score_max,
            tuple(sorted(set(f.poverty_band))),
            tuple(sorted(set(f.member_type))),
            tuple(sorted(set(self.scope))),
        )


# -- fetching the points ------------------------------------------------------------------

_ROW = copystream.row_dtype([("lat", ">f8"), ("lon", ">f8"), ("score", ">f8")])


@dataclass
class Located:
    """The households in scope: the H3 cell and score (NaN: none) of each located one."""

    cells: npt.NDArray[np.uint64]
    score: npt.NDArray[np.float64]
    total: int  # households in scope, located or not

    @property
    def without_location(self) -> int:
        return self.total - len(self.cells)


def cells_of(lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], res: int) -> Any:
    """The H3 cell (as uint64) of each point at resolution ``res``: a tight loop, h3 has
    no vectorized ``latlng_to_cell``."""
    return np.fromiter(
        map(h3i.latlng_to_cell, lat.tolist(), lon.tolist(), repeat(res, len(lat))),
        dtype=np.uint64,
        count=len(lat),
    )


def locate(rows: npt.NDArray[Any], res: int) -> tuple[npt.NDArray[np.uint64], Any, int]:
    """One batch of COPY rows: (cells, scores) of the located ones, and the row count."""
    if not copystream.layout_ok(rows):
        raise ValueError("unexpected COPY row layout")
    lat = rows["lat"].astype(np.float64)
    lon = rows["lon"].astype(np.float64)
    located = ~(np.isnan(lat) | np.isnan(lon))
    score = rows["score"].astype(np.float64)[located]
    return cells_of(lat[located], lon[located], res), score, len(rows)


async def fetch_located(conn: asyncpg.Connection, q: MapQuery) -> Located:
    """Every household in scope, read as (lat, lon, pmt_score) float8 (NaN for NULL), and
    the H3 cell of each located one at the query's resolution."""
    sql_q = Query()
    where = household_where(sql_q, q.filters, q.scope, None)
    sql = (
        "SELECT coalesce(h.lat, 'NaN'::float8), coalesce(h.lon, 'NaN'::float8), "
        "coalesce(h.pmt_score::float8, 'NaN'::float8) "
        f"FROM households h WHERE {where}"
    )
    batches: list[asyncio.Future[tuple[npt.NDArray[np.uint64], Any, int]]] = []

    async def located(rows: npt.NDArray[Any]) -> None:
        # H3 in a worker thread while the rest streams in (the scan and the loop overlap).
        batches.append(asyncio.ensure_future(asyncio.to_thread(locate, rows, q.resolution)))

    reader = copystream.BinaryRows(_ROW, located)
    try:
        await conn.copy_from_query(sql, *sql_q.params, output=reader, format="binary")
        await reader.finish()
    except BaseException:
        for task in batches:
            task.cancel()
        raise
    parts = [await task for task in batches]
    return Located(
        cells=np.concatenate([c for c, _, _ in parts] or [np.empty(0, np.uint64)]),
        score=np.concatenate([s for _, s, _ in parts] or [np.empty(0, np.float64)]),
        total=sum(n for _, _, n in parts),
    )


# -- hexagons --------------------------------------------------------------------------------


def outline(cell: str) -> list[tuple[float, float]]:
    """The hexagon's closed ring as ``(lon, lat)`` positions, counter-clockwise."""
    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
    ring.append(ring[0])
    return ring


@lru_cache(maxsize=100_000)
def ring_json(cell: str) -> bytes:
    """The hexagon's closed ring as GeoJSON positions ``[lon,lat]`` (6 decimals, about
    0.1 m), counter-clockwise as RFC 7946 wants; memoized: a cell's outline never changes."""
    points = [f"[{lng:.6f},{lat:.6f}]" for lat, lng in h3.cell_to_boundary(cell)]
    points.append(points[0])
    return ("[" + ",".join(points) + "]").encode()


@dataclass
class Table:
    """Per-cell sums of the located households (cells as H3 strings, in id order)."""

    cells: list[str]
    households: list[int]
    score_sum: list[float | None]
    below: list[int | None]


def aggregate(located: Located, cut_off: float) -> Table:
    cells, inverse, counts = np.unique(located.cells, return_inverse=True, return_counts=True)
    score = located.score
    scored = ~np.isnan(score)
    n = len(cells)
    unscored = np.bincount(inverse, weights=~scored, minlength=n)
    # Scores have two decimals: summed in hundredths, exactly (whole numbers well below
    # 2**53 add up exactly in float64), so every way of counting gives the same sum.
    cents = np.bincount(inverse, weights=np.rint(np.where(scored, score, 0.0) * 100), minlength=n)
    below = np.bincount(inverse, weights=scored & (score < cut_off), minlength=n)
    # A cell with a household of unknown score has an unknown mean and share.
    return Table(
        cells=[h3.int_to_str(c) for c in cells.tolist()],
        households=counts.tolist(),
        score_sum=[
            None if u else c / 100 for u, c in zip(unscored.tolist(), cents.tolist(), strict=True)
        ],
        below=[
            None if u else round(b) for u, b in zip(unscored.tolist(), below.tolist(), strict=True)
        ],
    )


# -- the answer -------------------------------------------------------------------------------


@dataclass
class MapResult:
    """A finished map: what was published, its GeoJSON text, and what the audit records."""

    query: MapQuery
    version: int
    features: list[tuple[str, float | int | None, int | None]]  # (h3, value, households)
    body: bytes  # the GeoJSON FeatureCollection
    households_in_scope: int  # true count (located or not), for the audit row only
    created: float = field(default_factory=time.monotonic)
    _png: bytes | None = None

    def etag(self, fmt: Format) -> str:
        payload = self.png() if fmt == "png" else self.body
        digest = hashlib.blake2b(str(self.version).encode() + b"\0" + payload, digest_size=16)
        return f'"{digest.hexdigest()}"'

    @property
    def size(self) -> int:
        """What the cache counts: the GeoJSON body (a PNG is a fraction of it)."""
        return len(self.body)

    def png(self) -> bytes:
        """The rendered picture (see :func:`rendered`, which renders off the event loop)."""
        if self._png is None:
            self._png = render_png(self)
        return self._png


async def rendered(result: MapResult) -> MapResult:
    """``result`` with its PNG rendered (in a worker thread the first time)."""
    if result._png is None:
        result._png = await asyncio.to_thread(render_png, result)
    return result


def _value(measure: Measure, cell: Published) -> float | int | None:
    if cell.suppressed is not None:
        return None
    if measure == "households":
        return cell.households
    if measure == "poverty_rate":
        return cell.share_below
    return cell.mean_pmt_score


def publish_count(n: int, policy: Policy) -> int | None:
    """A lone count as every published count: null below the threshold, else rounded."""
    return None if n < policy.threshold else round_half_up(n, policy.rounding_base)


_FEATURE = b'{"type":"Feature","geometry":{"type":"Polygon","coordinates":['


def build(q: MapQuery, located: Located, version: int, policy: Policy) -> MapResult:
    """The protected map of the located households (CPU only: run it off the event loop)."""
    return publish(
        q, aggregate(located, q.cut_off), located.total, located.without_location, version, policy
    )


def publish(
    q: MapQuery,
    table: Table,
    in_scope: int,
    without_location: int,
    version: int,
    policy: Policy,
    stamp: dict[str, Any] | None = None,
    protector: Callable[..., tuple[list[Published], Disclosure]] = protect,
) -> MapResult:
    """The protected map of per-hexagon sums (CPU only: run it off the event loop).
    ``stamp``: members written after ``registry_version`` (the public map's ``as_of``);
    ``protector``: ``protect`` or a function that gives what it gives."""
    interior = [
        Cell({"h3": cell}, n, 0, s, b)
        for cell, n, s, b in zip(
            table.cells, table.households, table.score_sum, table.below, strict=True
        )
    ]
    if interior:
        # Only hexagons holding a household are listed: each withheld one holds at least one.
        published, disclosure = protector(
            ["h3"], with_margins(["h3"], interior), policy, {"h3": table.cells}
        )
    else:  # nothing located in scope: an empty map, its total withheld like any zero
        published = [Published({"h3": None}, None, None, None, None, PRIMARY)]
        disclosure = Disclosure(
            suppressed_below=policy.threshold,
            rounding_base=policy.rounding_base,
            dominance=policy.dominance,
            suppressed_cells=1,
            rules={PRIMARY: 1},
            method="No household in scope has a location: there is nothing to publish.",
        )
    by_cell = {p.key["h3"]: p for p in published}
    total = by_cell.pop(None)
    features: list[tuple[str, float | int | None, int | None]] = []
    parts: list[bytes] = []
    for cell in table.cells:
        p = by_cell[cell]
        value = _value(q.measure, p)
        households = None if p.suppressed is not None else p.households
        features.append((cell, value, households))
        properties = orjson.dumps({"h3": cell, "value": value, "households": households})
        parts.append(_FEATURE + ring_json(cell) + b']},"properties":' + properties + b"}")
    head: dict[str, Any] = {
        "type": "FeatureCollection",
        "measure": q.measure,
        "resolution": q.resolution,
        **({"cut_off": q.cut_off} if q.measure == "poverty_rate" else {}),
        "registry_version": version,
        **(stamp or {}),
        "total": {
            "households": None if total.suppressed is not None else total.households,
            "value": _value(q.measure, total),
        },
        "households_without_location": publish_count(without_location, policy),
        "disclosure": disclosure.as_json(),
    }
    prefix = orjson.dumps(head)[:-1] + b',"features":['
    body = prefix + b",".join(parts) + b"]}"
    return MapResult(q, version, features, body, in_scope)


# -- the cache -----------------------------------------------------------------------------


def _retrieve(task: asyncio.Task[MapResult]) -> None:
    """Mark a computation's failure as seen when every caller has gone away."""
    if not task.cancelled():
        task.exception()


class MapCache:
    """Finished maps by (normalized query, data_version), each for ``ttl`` seconds.

    Bounded by the bytes of the bodies it holds (least recently used out first). A map
    being computed is shared: a second request for it awaits the first computation.
    """

    def __init__(
        self,
        ttl: float = registry_version.MAX_AGE_SECONDS,
        max_bytes: int = 128 * 2**20,
        concurrency: int = 2,
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._done: OrderedDict[tuple[object, ...], MapResult] = OrderedDict()
        self._running: dict[tuple[object, ...], asyncio.Task[MapResult]] = {}
        self._slots = asyncio.Semaphore(concurrency)

    def get(self, key: tuple[object, ...]) -> MapResult | None:
        hit = self._done.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit.created >= self.ttl:
            self._drop(key)
            return None
        self._done.move_to_end(key)
        return hit

    def _drop(self, key: tuple[object, ...]) -> None:
        self.bytes -= self._done.pop(key).size

    def _keep(self, key: tuple[object, ...], result: MapResult) -> None:
        if key in self._done:
            self._drop(key)
        self._done[key] = result
        self.bytes += result.size
        # A map's key names the registry's version, so under updates the maps of every
        # earlier version would stay until the byte bound pushed them out: the memory a
        # process holds would climb to that bound. Those past their time go now.
        now = time.monotonic()
        for old in [k for k, kept in self._done.items() if now - kept.created >= self.ttl]:
            self._drop(old)
        while self.bytes > self.max_bytes and len(self._done) > 1:
            self._drop(next(iter(self._done)))

    async def get_or_compute(
        self, key: tuple[object, ...], compute: Callable[[], Awaitable[MapResult]]
    ) -> MapResult:
        """The cached map, else the one being computed, else a new computation.

        A computation is a task of its own: a caller who goes away (a closed connection)
        does not cancel it for the others, and its result is still cached. At most
        ``concurrency`` computations run at once (each holds a connection and a thread).
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(key, compute))
            task.add_done_callback(_retrieve)
            self._running[key] = task
        return await asyncio.shield(task)

    async def _run(
        self, key: tuple[object, ...], compute: Callable[[], Awaitable[MapResult]]
    ) -> MapResult:
        try:
            async with self._slots:
                result = await compute()
        finally:
            self._running.pop(key, None)
        self._keep(key, result)
        return result

    def clear(self) -> None:
        self._done.clear()
        self.bytes = 0


async def compute(
    pool: asyncpg.Pool | Reads, q: MapQuery, version: int, policy: Policy
) -> MapResult:
    """The map counted from the registry now (partners'; and the reference the public
    map's answers from the cube must equal); on a read replica when ``pool`` has one."""
    located = await Reads.of(pool).run(lambda conn: fetch_located(conn, q))
    return await asyncio.to_thread(build, q, located, version, policy)


async def partner_map(
    reads: Reads, cache: MapCache, p: Principal, q: MapQuery, policy: Policy
) -> MapResult:
    """A partner's map within its agreement's geography: checked against the agreement's
    earlier aggregate queries (409 for a population a few households away from one, as for
    summaries and analysis), logged with them, and audited. Counted on a read replica when
    the service has one; checked, logged and audited on the primary."""
    await check_geography(reads, p, q.filters)
    assert p.agreement_id is not None
    mine = await reads.run(lambda conn: differencing.selection(conn, q.filters, p.geo_codes))
    async with reads.primary.acquire() as conn, conn.transaction():
        await differencing.lock_agreement(conn, p.agreement_id)
        overlap = await differencing.check_selection(conn, p, q.filters, mine, policy.threshold)
        await differencing.log_query(conn, p, "maps", [f"h3:{q.resolution}"], overlap)
    version = await registry_version.data_version(reads.primary)
    key = ("partner", *q.key(), version)
    result = await cache.get_or_compute(key, lambda: compute(reads, q, version, policy))
    filters: dict[str, object] = {
        **q.filters.as_audit(),
        "resolution": q.resolution,
        "cut_off": q.cut_off if q.measure == "poverty_rate" else None,
    }
    await audit.append_with_pool(
        reads.primary,
        audit.AuditRecord.of(
            p,
            endpoint=f"{PARTNER_ENDPOINT}/{q.measure}",
            filters=filters,
            dimensions=[],
            households=result.households_in_scope,
            members=0,
        ),
    )
    return result


# -- the picture ------------------------------------------------------------------------------

SIZE = 800
_MARGIN = 40
_TITLE_BAND = 56
_LEGEND_BAND = 70
# A colour ramp from light yellow to dark purple (viridis-like, reversed for "more").
RAMP = (
    (253, 231, 37),
    (122, 209, 81),
    (34, 168, 132),
    (42, 120, 142),
    (65, 68, 135),
    (68, 1, 84),
)
SUPPRESSED_FILL = (200, 200, 200)
SUPPRESSED_HATCH = (150, 150, 150)
_TITLES = {
    "households": "Households per hexagon",
    "poverty_rate": "Share of households below PMT {cut_off:g}",
    "mean_pmt_score": "Mean PMT score per hexagon",
}


def _colour(t: float) -> tuple[int, int, int]:
    """A point ``t`` in [0, 1] along the ramp, linearly interpolated."""
    t = min(max(t, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(t), len(RAMP) - 2)
    f = t - i
    a, b = RAMP[i], RAMP[i + 1]
    return (
        round(a[0] + (b[0] - a[0]) * f),
        round(a[1] + (b[1] - a[1]) * f),
        round(a[2] + (b[2] - a[2]) * f),
    )


def _fmt(value: float, measure: Measure) -> str:
    if measure == "poverty_rate":
        return f"{value * 100:.0f}%"
    if measure == "households":
        return f"{value:,.0f}"
    return f"{value:.1f}"


def render_png(result: MapResult) -> bytes:
    """A small choropleth: hexagons on a colour ramp, withheld ones grey and hatched."""
    from PIL import Image, ImageDraw, ImageFont

    q = result.query
    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    title = _TITLES[q.measure].format(cut_off=q.cut_off)
    draw.text((_MARGIN, 14), title, fill=(0, 0, 0), font=font)
    draw.text(
        (_MARGIN, 32),
        f"H3 resolution {q.resolution} - registry version {result.version} - "
        "grey hatched: withheld (disclosure control)",
        fill=(90, 90, 90),
        font=font,
    )
    rings = [(cell, outline(cell), value, n) for cell, value, n in result.features]
    top, bottom = _TITLE_BAND, SIZE - _LEGEND_BAND
    if rings:
        lons = [x for _, ring, _, _ in rings for x, _ in ring]
        lats = [y for _, ring, _, _ in rings for _, y in ring]
        west, east, south, north = min(lons), max(lons), min(lats), max(lats)
        # Equirectangular, shrunk east-west by the cosine of the middle latitude.
        k = math.cos(math.radians((south + north) / 2))
        width = max((east - west) * k, 1e-9)
        height = max(north - south, 1e-9)
        scale = min((SIZE - 2 * _MARGIN) / width, (bottom - top - 10) / height)
        x0 = (SIZE - width * scale) / 2
        y0 = top + 5 + (bottom - top - 10 - height * scale) / 2

        def project(ring: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
            return [
                (x0 + (lon - west) * k * scale, y0 + (north - lat) * scale) for lon, lat in ring
            ]

        values = [v for _, _, v, _ in rings if v is not None]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        span = (high - low) or 1.0
        hatch = Image.new("RGB", (SIZE, SIZE), SUPPRESSED_FILL)
        hatch_draw = ImageDraw.Draw(hatch)
        for offset in range(-SIZE, SIZE, 6):
            hatch_draw.line([(offset, 0), (offset + SIZE, SIZE)], fill=SUPPRESSED_HATCH)
        mask = Image.new("L", (SIZE, SIZE), 0)
        mask_draw = ImageDraw.Draw(mask)
        for _, ring, value, _ in rings:
            xy = project(ring)
            if value is None:
                mask_draw.polygon(xy, fill=255)
                draw.polygon(xy, outline=(170, 170, 170))
            else:
                draw.polygon(xy, fill=_colour((float(value) - low) / span), outline=(255, 255, 255))
        image.paste(hatch, (0, 0), mask)
        _legend(draw, font, q.measure, float(low), float(high), bool(values))
    else:
        draw.text((_MARGIN, SIZE // 2), "No located household in scope", fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _legend(draw: Any, font: Any, measure: Measure, low: float, high: float, any_: bool) -> None:
    y = SIZE - _LEGEND_BAND + 18
    x, width = _MARGIN, 300
    for i in range(width):
        draw.line([(x + i, y), (x + i, y + 14)], fill=_colour(i / (width - 1)))
    if any_:
        draw.text((x, y + 18), _fmt(low, measure), fill=(0, 0, 0), font=font)
        right = _fmt(high, measure)
        draw.text((x + width - 6 * len(right), y + 18), right, fill=(0, 0, 0), font=font)
    draw.rectangle([(x + width + 40, y), (x + width + 60, y + 14)], fill=SUPPRESSED_FILL)
    draw.text((x + width + 68, y + 2), "withheld", fill=(0, 0, 0), font=font)


__all__ = [
    "DEFAULT_CUT_OFF",
    "GEOJSON",
    "MEASURES",
    "PARTNER_MAX_RESOLUTION",
    "PNG",
    "PUBLIC_MAX_RESOLUTION",
    "MapCache",
    "MapQuery",
    "MapResult",
    "partner_map",
    "publish",
    "rendered",
]
