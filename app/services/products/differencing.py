r"""The differencing control of the partner aggregates (summaries, analyses, maps).

Suppression and rounding protect one table; two tables whose populations differ by one
household give that household away by subtraction (its band, its score through a mean).
So before a partner's aggregate query is answered, the households it selects (A: its
filters within the agreement's geography) are compared with every population the same
agreement was answered before (B), and the query is refused (409) when
``0 < |A Δ B| < threshold``. Nothing is forgotten: no window, no "latest N".

**What is compared.** Each answered query leaves its population's *signature* in
``aggregate_selections``: its size and a linear sketch of its households, one row per
distinct (normalized filters, population) of the agreement. So B is the population the
partner was actually given, as it was then: a query is compared with what the partner
holds, and a registry change between two queries cannot turn two populations a household
apart into "the same filters, now identical". The same filters asked again are answered
(nothing new is learnt beyond what a repeat of the earlier answer shows): a signature with
the new query's own filters is not compared, as before.

**The sketch.** A keyed 64-bit hash ``v = hashint8extended(id, seed)`` of every selected
household (``seed``: a random number the migration stored in ``differencing_key``; with
it unknown, nobody can pick households whose hashes cancel). Its low 12 bits put the
household in one of 4,096 fine groups; one pass over A's households gives each group's
count and sum of ``v``, and from them two partitions of 64 buckets each (the low and the
high 6 bits): per bucket, the households and their hashes' sum modulo 2^64. Both are sums
over the households, so for two populations the difference of their sketches is the
sketch of A \ B minus that of B \ A. In each bucket:

- a count that differs by ``c`` ≠ 0 means at least ``|c|`` households of A Δ B there;
- equal counts but different sums mean at least two (one on each side);
- equal counts and equal sums mean none, but with probability about 2^-57.

The sum over the buckets of one partition is a lower bound ``L ≤ |A Δ B|``, and so is the
larger of the two partitions' (``lower_bounds``). The rule refuses when ``0 < L <
threshold``: a true difference of 1 … threshold-1 always gives such an ``L``, so it is
always refused. ``L`` falls short of a larger difference only when three or more of its
households share a bucket in both partitions with mixed sides; a population that differs
by the threshold or a household more is then refused too, in under 0.1% of cases, and from
two more households on practically never.

**What it costs.** One pass over A's households (a hash and a 4,096-group aggregate per
household, no members unless ``member_type`` filters) — a fraction of what the product's
own count over the same households and their members costs — then one index range of
``aggregate_selections`` by (agreement, households): since ``|A Δ B| ≥ ||A| − |B||``, only
signatures whose size is within ``threshold`` of ``|A|`` can be near, and the others are
never read. Of those, the database sends the sketch only when the 8 coarse counts (the
first partition folded, a column of their own) differ by less than the threshold — any
partition's count differences are a lower bound too — and each sketch sent costs a
subtraction of two 2 KB vectors (numpy, all at once).
More than ``MAX_NEAR`` of them (thousands of distinct populations of the same size within
a few households: a sliding window, not a use) is refused too, rather than compared with
only some.

**The registry's staff.** The M&E team's analyses (staff with role ``me``) have no
agreement: the team is one recipient, its queries logged with ``agreement_id`` NULL and
compared with every earlier query of the team (of any of its members), as an agreement's
are with those of all its clients.

Queries of one agreement (or of the staff) are checked and logged one at a time (an
advisory lock), so two near-identical queries sent at once cannot both pass. Not covered:
the same filters asked before and after the registry changed by a few households, and
partners pooling their answers.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import orjson

from app.auth.partner import Principal
from app.errors import Conflict
from app.services.sharing.beneficiaries_sql import Filters, Query, household_where

log = logging.getLogger("nser.products")

# One pass groups the households by the low FINE_BITS of their hash; the sketch keeps two
# partitions of 2**PART_BITS buckets (the low and the high PART_BITS of those bits).
PART_BITS = 6
FINE_BITS = 2 * PART_BITS
BUCKETS = 1 << PART_BITS
WIDTH = 2 * BUCKETS  # buckets in a sketch, both partitions
# The first partition folded into COARSE buckets: stored apart, so that the database itself
# drops the earlier populations whose coarse counts alone are the threshold apart.
COARSE = 8
# Refused rather than compared with only some: more earlier populations than this within
# the threshold of the new query's size.
MAX_NEAR = 5_000
_OVERLAP_LOCK = 0x6E736571  # "nseq"; two-int advisory keys never meet the audit's bigint one
_MOD = 1 << 64


@dataclass(frozen=True)
class Sketch:
    """A population's signature: its size, and per bucket of both partitions the households
    and the sum of their hashes modulo 2^64."""

    households: int
    counts: np.ndarray  # int64, WIDTH
    sums: np.ndarray  # uint64, WIDTH

    @classmethod
    def of_groups(cls, groups: Iterable[tuple[int, int, int]]) -> Sketch:
        """From the pass's fine groups: ``(group, households, sum of hashes)``."""
        counts = np.zeros(1 << FINE_BITS, dtype=np.int64)
        sums = np.zeros(1 << FINE_BITS, dtype=np.uint64)
        for group, n, total in groups:
            counts[group] = n
            sums[group] = total % _MOD
        # group = high * BUCKETS + low: axis 0 sums out the high bits, axis 1 the low ones.
        c, s = counts.reshape(BUCKETS, BUCKETS), sums.reshape(BUCKETS, BUCKETS)
        return cls(
            int(counts.sum()),
            np.concatenate([c.sum(axis=0), c.sum(axis=1)]),
            np.concatenate([s.sum(axis=0, dtype=np.uint64), s.sum(axis=1, dtype=np.uint64)]),
        )

    @property
    def coarse(self) -> list[int]:
        """The households in each of COARSE buckets (the first partition's, folded)."""
        return [int(n) for n in self.counts[:BUCKETS].reshape(-1, COARSE).sum(axis=0)]

    def to_bytes(self) -> bytes:
        return self.counts.astype("<i8").tobytes() + self.sums.astype("<u8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Sketch:
        counts, sums = unpack([data])
        return cls(int(counts[0, :BUCKETS].sum()), counts[0], sums[0])

    def digest(self) -> bytes:
        """Equal for equal populations (bar a 2^-128 accident)."""
        return hashlib.blake2b(self.to_bytes(), digest_size=16).digest()


def unpack(sketches: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Stored sketches as two (K, WIDTH) arrays: counts (int64) and sums (uint64)."""
    raw = np.frombuffer(b"".join(sketches), dtype=np.uint8).reshape(len(sketches), 16 * WIDTH)
    counts = raw[:, : 8 * WIDTH].copy().view("<i8").astype(np.int64)
    sums = raw[:, 8 * WIDTH :].copy().view("<u8").astype(np.uint64)
    return counts, sums


def lower_bounds(mine: Sketch, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """For each earlier sketch (rows of ``counts``, ``sums``), a number of households that
    the two populations certainly differ by (at most ``|A Δ B|``); 0 when they are the same
    (bar a 2^-57 accident)."""
    dc = counts - mine.counts
    with np.errstate(over="ignore"):
        ds = sums - mine.sums  # modulo 2^64, as the sums are
    per_bucket = np.where(dc != 0, np.abs(dc), np.where(ds != 0, 2, 0))
    halves = per_bucket.reshape(len(counts), 2, BUCKETS).sum(axis=2)
    out: np.ndarray = halves.max(axis=1)
    return out


def normalized_filters(f: Filters) -> dict[str, Any]:
    """The household filters as a canonical JSON object (sorted, without repeats)."""
    out: dict[str, Any] = {level: sorted(set(codes)) for level, codes in f.geo().items()}
    if f.score_min is not None:
        out["score_min"] = float(f.score_min)
    if f.score_max is not None:
        out["score_max"] = float(f.score_max)
    if f.poverty_band:
        out["poverty_band"] = sorted(set(f.poverty_band))
    if f.member_type:
        out["member_type"] = sorted(set(f.member_type))
    return out


def canonical_filters(f: Filters) -> bytes:
    return orjson.dumps(normalized_filters(f), option=orjson.OPT_SORT_KEYS)


def filters_digest(canonical: bytes) -> bytes:
    """What tells two queries' filters apart (the same filters: the same digest)."""
    return hashlib.blake2b(canonical, digest_size=16).digest()


STAFF = "staff"  # the lock key of the staff's queries (they have no agreement)


async def lock_agreement(conn: asyncpg.Connection, agreement_id: uuid.UUID | None) -> None:
    """Serialize the agreement's aggregate queries (None: the registry staff's) until the
    transaction ends."""
    key = STAFF if agreement_id is None else str(agreement_id)
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _OVERLAP_LOCK, key)


def recipient_where(q: Query, p: Principal) -> str:
    """The rows of the caller's recipient: its agreement's, or (a staff member) the
    registry staff's, which have no agreement. Either way a range of the size index."""
    if p.agreement_id is None:
        if p.kind != "staff":
            raise AssertionError("a partner's aggregate query without its agreement")
        return "agreement_id IS NULL"
    return f"agreement_id = {q.param(p.agreement_id)}"


def selection_sql(q: Query, seed: int, f: Filters, scope: tuple[str, ...]) -> str:
    """The one pass over the households ``f`` selects within ``scope``: per fine group, its
    households and the sum of their hashes (as text: it may exceed 64 bits)."""
    s = q.param(seed)
    where = household_where(q, f, scope, None)
    mask = (1 << FINE_BITS) - 1
    # OFFSET 0: the hash is computed once per household, not again in each aggregate.
    return f"""
        SELECT (v & {mask})::int AS g, count(*) AS n, sum(v)::text AS s
          FROM (SELECT hashint8extended(h.id, {s}::bigint) AS v
                  FROM households h WHERE {where} OFFSET 0) x
         GROUP BY 1"""


async def selection(conn: asyncpg.Connection, f: Filters, scope: tuple[str, ...] = ()) -> Sketch:
    """The sketch of the households ``f`` selects within ``scope`` (one pass over them)."""
    seed: int = await conn.fetchval("SELECT seed FROM differencing_key")
    q = Query()
    rows = await conn.fetch(selection_sql(q, seed, f, scope), *q.params)
    return Sketch.of_groups((row["g"], row["n"], int(row["s"])) for row in rows)


@dataclass(frozen=True)
class Overlap:
    """The new query's population, checked: what ``log_query`` records of it."""

    households: int  # |A|: the households the new query selects within the agreement
    sketch: Sketch
    filters: bytes  # the canonical filters (JSON)


async def check_overlap(
    conn: asyncpg.Connection, p: Principal, f: Filters, threshold: int
) -> Overlap:
    """Refuse (409) a query whose households differ from a population the agreement was
    answered before by fewer than ``threshold`` (and more than zero); else its population."""
    return await check_selection(conn, p, f, await selection(conn, f, p.geo_codes), threshold)


async def check_selection(
    conn: asyncpg.Connection, p: Principal, f: Filters, mine: Sketch, threshold: int
) -> Overlap:
    """:func:`check_overlap` for a population already sketched (``selection``, which a
    read replica may count): compared with the agreement's earlier ones on ``conn``, the
    primary, where they are logged."""
    canonical = canonical_filters(f)
    await compare_with_earlier(conn, p, mine, filters_digest(canonical), threshold)
    return Overlap(mine.households, mine, canonical)


async def compare_with_earlier(
    conn: asyncpg.Connection, p: Principal, mine: Sketch, filters: bytes, threshold: int
) -> None:
    """Refuse (409) when ``mine`` is fewer than ``threshold`` households (and more than
    zero) from a population the agreement was answered for under other filters than the
    digest ``filters``, or when more than MAX_NEAR of those are near its size."""
    # The size index gives every earlier population within the threshold of |A|'s size
    # (the others are that far apart at least); of those, the database sends the sketch
    # only where the coarse counts alone do not already differ by the threshold.
    q = Query()
    window = " AND ".join(
        [
            recipient_where(q, p),
            f"households > {q.param(mine.households - threshold)}",
            f"households < {q.param(mine.households + threshold)}",
            f"filters_digest <> {q.param(filters)}",
        ]
    )
    coarse = " + ".join(f"abs(coarse[{i + 1}] - {q.param(n)})" for i, n in enumerate(mine.coarse))
    rows = await conn.fetch(
        f"""SELECT query_id, CASE WHEN {coarse} < {q.param(threshold)} THEN sketch END AS sketch
              FROM aggregate_selections WHERE {window}
             ORDER BY query_id DESC LIMIT {q.param(MAX_NEAR + 1)}""",
        *q.params,
    )
    if len(rows) > MAX_NEAR:
        log.warning(
            "aggregate query refused: too many earlier populations of its size",
            extra={"agreement_id": str(p.agreement_id)},
        )
        raise Conflict(
            f"more than {MAX_NEAR} of your earlier queries selected nearly as many households "
            "as this one, too many to compare it with; widen or narrow the filters so that "
            f"the population changes by at least {threshold} households, or repeat an "
            "earlier query's filters exactly"
        )
    candidates = [row for row in rows if row["sketch"] is not None]
    if candidates:
        counts, sums = unpack([bytes(row["sketch"]) for row in candidates])
        bounds = lower_bounds(mine, counts, sums)
        near = np.flatnonzero((bounds > 0) & (bounds < threshold))
        if near.size:
            query_id = candidates[int(near[0])]["query_id"]
            log.warning(
                "aggregate query refused: differs from an earlier one by a few households",
                extra={"agreement_id": str(p.agreement_id), "earlier_query": query_id},
            )
            raise Conflict(
                f"differs from your earlier query {query_id} by fewer than {threshold} "
                "households; widen or narrow the filters so that the populations differ by "
                f"at least {threshold} households, or repeat the earlier filters exactly"
            )


async def log_query(
    conn: asyncpg.Connection,
    p: Principal,
    product: str,
    dims: Sequence[str],
    overlap: Overlap,
) -> int:
    """Record an answered query and its population's signature (in the answer's
    transaction); its id."""
    query_id: int = await conn.fetchval(
        """INSERT INTO aggregate_queries (agreement_id, client_id, product, filters, dims,
                                          households)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id""",
        p.agreement_id,
        p.client_id,
        product,
        overlap.filters.decode(),
        list(dims),
        overlap.households,
    )
    await record_selection(conn, p.agreement_id, query_id, overlap)
    return query_id


async def record_selection(
    conn: asyncpg.Connection, agreement_id: uuid.UUID | None, query_id: int, overlap: Overlap
) -> None:
    """One signature per distinct (filters, population) of the agreement, naming the latest
    query that selected it."""
    await conn.execute(
        """INSERT INTO aggregate_selections (agreement_id, query_id, filters_digest,
                                             population_digest, households, coarse, sketch)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (agreement_id, filters_digest, population_digest)
           DO UPDATE SET query_id = EXCLUDED.query_id""",
        agreement_id,
        query_id,
        filters_digest(overlap.filters),
        overlap.sketch.digest(),
        overlap.households,
        overlap.sketch.coarse,
        overlap.sketch.to_bytes(),
    )
