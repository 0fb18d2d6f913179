"""Benchmark: every product path of the service on one registry, for a growth table.

    .venv/bin/python bench/growth.py --households 100000              # fresh database
    .venv/bin/python bench/growth.py --reuse-db nser_growth_1m         # already seeded
    .venv/bin/python bench/growth.py --reuse-db DB --only export,public.map --runs 3
    .venv/bin/python bench/growth.py --reuse-db DB --skip-mutating     # no update batch

"A request costs what its answer costs": run at 100k, 1M and 10M households, a path whose
time grows faster than its answer is a defect. For each path it prints the median time of
``--runs`` runs (``--long-runs`` for the simulation and the audit verification), the size
of its answer (rows, households, records, cells, hexagons …) and the time per unit of
answer; then the registry's size; the last line is one JSON object with all of it.
Progress goes to stderr. A path that fails prints its error in its row; the others go on.

Everything runs against one ``nser serve`` (one process: its in-memory caches are one) on
the registry, with the rate limits lifted, over HTTP; streams are timed to their last
byte. The paths (``--only`` takes names or their prefixes, comma-separated):

- ``lookup.public``, ``lookup.partner``: ``GET /v1/public/scores/{cnic}`` and
  ``GET /v1/partner/scores/{cnic}`` of living members' CNICs taken from the registry;
  the time of one request (a run is ``LOOKUPS`` sequential requests).
- ``export.district``: ``GET /v1/partner/beneficiaries`` NDJSON of one district
  (``--district``, default PK520: the median district by households at 100k and 1M;
  ``--district ''`` picks the median of the registry measured); answer = households
  streamed.
- ``eligibility.district``: the ``cash-transfer`` demo programme's eligible list of the
  district, NDJSON.
- ``asof.page``, ``asof.stream``: the district's beneficiaries as of the instant the
  script started: one JSON page (limit 100), and the NDJSON stream.
- ``public.summary.*``, ``public.map.*``, ``partner.summary.*``, ``partner.analysis.*``,
  ``partner.map.*``: each ``.cold`` (the first request after a service start) and
  ``.warm`` (the same request again); the service is restarted before each run. Public:
  province × band × gender, the district's province's districts × band, and the
  resolution-5 poverty-rate map; partner: tehsil × band of the district (summary and
  analysis) and its poverty-rate map (resolution 6). Answer = cells (margins included) or
  hexagons; the households counted ride along.
- ``differencing.first``, ``differencing.after_k``: the partner summary of the district
  on an agreement that has made no other query, against the same query on an agreement
  that already made ``--diff-k`` (200) distinct ones (score windows of the district, then
  two wide ones: the whole country and the district's province; ``--diff-wide`` chooses
  them), alternated. The control
  compares with the agreement's latest 200 queries, the measured ones included: run r
  sees the last 200 - r of the prelude's (the wide ones among them).
- ``simulation``: ``POST /v1/staff/simulations`` (cut-off 32 -> 30) to ``done``, staff
  role admin; answer = households simulated.
- ``report.<name>``: ``GET /v1/staff/reports/{name}`` for each report (all time);
  answer = bytes (a report's rows are few and may be none).
- ``audit.verify``: ``nser audit verify`` wall time; answer = audit rows.
- ``ingest.phone``: an update batch of 2,000 phone changes, from the 202 to ``done``
  (records/s). It changes the registry: ``--skip-mutating`` leaves it out. It runs after
  every read.

A fresh registry (``--households``) is vacuumed and analyzed after its seed (the first
reads after a bulk load would otherwise write every page again); do the same to a reused
one before measuring it. The script also changes what any use of the service changes: it creates partners (with
the demo programmes), a staff client, and writes audit rows, query-log rows and
simulation rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, create_partner, log, nser, service

sys.path.insert(0, str(ROOT))

from app.services.monitoring.reports import REPORTS

LOOKUPS = 50  # requests per look-up run
INGEST_RECORDS = 2_000
TOKEN_MAX_AGE = 600.0  # seconds; tokens live 900
NDJSON = "application/x-ndjson"
PROGRAMME = "cash-transfer"
LIFTED = "1000000000/minute"


@dataclass
class Sample:
    """One run of a path: its time and the size of its answer."""

    seconds: float
    size: int
    unit: str
    bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class PathFailed(Exception):
    pass


class Bench:
    """The registry, the running service and what the paths share (made once, lazily: a
    failure to make one thing fails only the paths that need it)."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        self.client: httpx.Client | None = None
        self._stack: ExitStack | None = None
        self._memo: dict[str, Any] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self.started_at: datetime = self.fetchval("SELECT clock_timestamp()")

    # -- the database ------------------------------------------------------------------
    def fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return list(await conn.fetch(sql, *params))
            finally:
                await conn.close()

        return asyncio.run(go())

    def fetchval(self, sql: str, *params: Any) -> Any:
        rows = self.fetch(sql, *params)
        return rows[0][0] if rows else None

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` the first time; its value (or its error) every time after."""
        if key not in self._memo:
            try:
                self._memo[key] = make()
            except Exception as exc:
                self._memo[key] = exc
        value = self._memo[key]
        if isinstance(value, Exception):
            raise PathFailed(f"setup {key} failed: {value}")
        return value

    # -- the service -------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "NSER_DATABASE_URL": self.url,
            "NSER_ENVIRONMENT": "test",
            "NSER_LOG_LEVEL": "WARNING",
            # A national scope in one stream: past the default NSER_EXPORT_MAX_HOUSEHOLDS.
            "NSER_EXPORT_MAX_HOUSEHOLDS": "100000000",
            "NSER_PUBLIC_LOOKUP_LIMITS": LIFTED,
            "NSER_TOKEN_LIMITS": LIFTED,
            "NSER_PARTNER_DEFAULT_LIMITS": LIFTED,
            "NSER_STAFF_READ_LIMITS": LIFTED,
            "NSER_UPDATES_RECORDS_PER_HOUR": "100000000",
        }

    def start(self) -> None:
        stack = ExitStack()
        try:
            _, base = stack.enter_context(service(self.env()))
        except BaseException:
            stack.close()
            raise
        self.client = stack.enter_context(httpx.Client(base_url=base, timeout=None))
        self._stack = stack

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self.client = None

    def restart(self) -> None:
        self.stop()
        try:
            self.start()
        except SystemExit as exc:  # common.service: "nser serve did not start"
            raise PathFailed(str(exc)) from None

    def http(self) -> httpx.Client:
        if self.client is None:
            self.restart()
        assert self.client is not None
        return self.client

    def token(self, who: str) -> str:
        held = self._tokens.get(who)
        if held and time.monotonic() - held[1] < TOKEN_MAX_AGE:
            return held[0]
        base = str(self.http().base_url).rstrip("/")
        token = client_token(base, self.credentials(who))
        self._tokens[who] = (token, time.monotonic())
        return token

    def request(
        self,
        method: str,
        path: str,
        who: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        h = dict(headers or {})
        if who:
            h["Authorization"] = f"Bearer {self.token(who)}"
        r = self.http().request(method, path, params=params, json=body, headers=h)
        if r.status_code not in expect:
            raise PathFailed(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    def stream(
        self, path: str, who: str, params: dict[str, Any], accept: str = NDJSON
    ) -> tuple[int, int, float]:
        """Lines, bytes and seconds to the last byte."""
        lines = size = 0
        headers = {"Authorization": f"Bearer {self.token(who)}", "Accept": accept}
        started = time.perf_counter()
        with self.http().stream("GET", path, params=params, headers=headers) as r:
            if r.status_code != 200:
                r.read()
                raise PathFailed(f"GET {path}: {r.status_code} {r.text[:300]}")
            for chunk in r.iter_bytes():
                lines += chunk.count(b"\n")
                size += len(chunk)
        return lines, size, time.perf_counter() - started

    # -- what the paths share ----------------------------------------------------------
    def credentials(self, who: str) -> dict[str, str]:
        return self.once(f"credentials:{who}", lambda: MAKERS[who](self))  # type: ignore[no-any-return]

    def district(self) -> tuple[str, str]:
        """(district, its province): ``--district``, else the median district by size."""

        def pick() -> tuple[str, str]:
            if self.args.district:
                row = self.fetch(
                    "SELECT province_code FROM geo_units WHERE code = $1 AND level = 'district'",
                    self.args.district,
                )
                if not row:
                    raise PathFailed(f"no district {self.args.district}")
                return self.args.district, row[0][0]
            rows = self.fetch(
                """SELECT district_code, province_code, count(*) AS n FROM households
                    GROUP BY 1, 2 ORDER BY n, 1"""
            )
            row = rows[len(rows) // 2]
            return row["district_code"], row["province_code"]

        return self.once("district", pick)  # type: ignore[no-any-return]

    def cnics(self) -> list[str]:
        def pick() -> list[str]:
            sql = """SELECT cnic FROM members {sample}
                      WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 2000"""
            rows = self.fetch(sql.format(sample="TABLESAMPLE SYSTEM (1)"))
            if len(rows) < 100:
                rows = self.fetch(sql.format(sample=""))
            if not rows:
                raise PathFailed("no living member with a CNIC")
            return [r["cnic"] for r in rows]

        return self.once("cnics", pick)  # type: ignore[no-any-return]

    def next_cnics(self, n: int) -> list[str]:
        cnics = self.cnics()
        at = self._memo.get("cnic_at", 0)
        self._memo["cnic_at"] = at + n
        return [cnics[(at + i) % len(cnics)] for i in range(n)]


# -- credentials ----------------------------------------------------------------------


def _main_partner(b: Bench) -> dict[str, str]:
    """Categories i, ii, iii, iv, vii, phone changes, naming the demo programmes."""
    from app.services.programmes.demo import ensure_demo_programmes

    made: dict[str, str] = create_partner(b.url, "i,ii,iii,iv,vii", update_kinds="phone_change")

    async def name_programmes() -> None:
        conn = await asyncpg.connect(b.url)
        try:
            await ensure_demo_programmes(conn, uuid.UUID(made["agreement_id"]))
        finally:
            await conn.close()

    asyncio.run(name_programmes())
    return made


def _summaries_partner(b: Bench) -> dict[str, str]:
    made: dict[str, str] = create_partner(b.url, "i")
    return made


def _staff(b: Bench) -> dict[str, str]:
    made: dict[str, str] = json.loads(
        nser(["staff", "create", "--name", "Growth bench", "--role", "admin", "--json"], b.url)
    )
    return made


MAKERS: dict[str, Callable[[Bench], dict[str, str]]] = {
    "partner": _main_partner,
    "diff": _summaries_partner,  # makes --diff-k queries before it is measured
    "fresh": _summaries_partner,  # makes none
    "staff": _staff,
}


# -- the paths: each one small function, one run ---------------------------------------


def lookup_public(b: Bench) -> Sample:
    cnics = b.next_cnics(LOOKUPS)
    started = time.perf_counter()
    for cnic in cnics:
        b.request("GET", f"/v1/public/scores/{cnic}")
    return Sample((time.perf_counter() - started) / len(cnics), 1, "row")


def lookup_partner(b: Bench) -> Sample:
    cnics = b.next_cnics(LOOKUPS)
    b.token("partner")
    started = time.perf_counter()
    for cnic in cnics:
        b.request("GET", f"/v1/partner/scores/{cnic}", "partner")
    return Sample((time.perf_counter() - started) / len(cnics), 1, "row")


def export_district(b: Bench) -> Sample:
    district, _ = b.district()
    lines, size, seconds = b.stream("/v1/partner/beneficiaries", "partner", {"district": district})
    return Sample(seconds, lines, "households", size)


def eligibility_district(b: Bench) -> Sample:
    district, _ = b.district()
    path = f"/v1/partner/programmes/{PROGRAMME}/beneficiaries"
    lines, size, seconds = b.stream(path, "partner", {"district": district})
    return Sample(seconds, lines, "households", size)


def asof_page(b: Bench) -> Sample:
    district, _ = b.district()
    params = {"district": district, "as_of": b.started_at.isoformat(), "limit": "100"}
    b.token("partner")
    started = time.perf_counter()
    r = b.request("GET", "/v1/partner/beneficiaries", "partner", params=params)
    seconds = time.perf_counter() - started
    return Sample(seconds, len(r.json()["items"]), "households", len(r.content))


def asof_stream(b: Bench) -> Sample:
    district, _ = b.district()
    params = {"district": district, "as_of": b.started_at.isoformat()}
    lines, size, seconds = b.stream("/v1/partner/beneficiaries", "partner", params)
    return Sample(seconds, lines, "households", size)


def _table(r: httpx.Response, seconds: float, cells_key: str = "rows") -> Sample:
    body = r.json()
    total = [
        m for m in body["margins"] if all(v is None for k, v in m.items() if k not in MEASURES)
    ]
    counted = total[0]["households"] if total else None
    cells = len(body[cells_key]) + len(body["margins"])
    extra = {"households_counted": counted, "registry_version": body.get("registry_version")}
    return Sample(seconds, cells, "cells", len(r.content), extra)


MEASURES = {"households", "members", "mean_pmt_score", "share_below"}


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    r = call()
    return r, time.perf_counter() - started


def public_summary_country(b: Bench) -> Sample:
    params = {"group_by": "province,poverty_band,gender"}
    r, s = _timed(lambda: b.request("GET", "/v1/public/summaries", params=params))
    return _table(r, s)


def public_summary_province(b: Bench) -> Sample:
    _, province = b.district()
    params = {"group_by": "district,poverty_band", "province": province}
    r, s = _timed(lambda: b.request("GET", "/v1/public/summaries", params=params))
    return _table(r, s)


def _map(r: httpx.Response, seconds: float) -> Sample:
    body = r.json()
    total = body.get("total") or {}
    extra = {
        "households_counted": total.get("households"),
        "registry_version": body.get("registry_version"),
    }
    return Sample(seconds, len(body["features"]), "hexagons", len(r.content), extra)


def public_map(b: Bench) -> Sample:
    params = {"resolution": "5"}
    r, s = _timed(lambda: b.request("GET", "/v1/public/maps/poverty_rate", params=params))
    return _map(r, s)


def _partner_summary(b: Bench, who: str) -> Sample:
    district, _ = b.district()
    params = {"group_by": "tehsil,poverty_band", "district": district}
    b.token(who)
    r, s = _timed(lambda: b.request("GET", "/v1/partner/summaries", who, params=params))
    return _table(r, s)


def partner_summary(b: Bench) -> Sample:
    return _partner_summary(b, "partner")


def partner_analysis(b: Bench) -> Sample:
    district, _ = b.district()
    body = {
        "rows": ["tehsil"],
        "columns": ["poverty_band"],
        "measures": ["households", "members", "mean_pmt_score"],
        "filters": {"district": [district]},
    }
    b.token("partner")
    r, s = _timed(
        lambda: b.request("POST", "/v1/partner/analysis", "partner", body=body, expect=(201,))
    )
    return _table(r, s, "cells")


def partner_map(b: Bench) -> Sample:
    district, _ = b.district()
    params = {"district": district, "resolution": "6"}
    b.token("partner")
    r, s = _timed(
        lambda: b.request("GET", "/v1/partner/maps/poverty_rate", "partner", params=params)
    )
    return _map(r, s)


def differencing_prelude(b: Bench) -> dict[str, Any]:
    """The ``diff`` agreement makes ``--diff-k`` distinct summary queries (once): windows
    between quantiles of the district's scores (any two differ by about a twentieth of the
    district), then the whole country and the district's province (last: a wide earlier
    query makes each later one of the agreement pay for it); refusals are skipped."""

    def make() -> dict[str, Any]:
        district, province = b.district()
        scores = [
            float(r[0])
            for r in b.fetch(
                "SELECT pmt_score FROM households WHERE district_code = $1"
                " AND pmt_score IS NOT NULL ORDER BY 1",
                district,
            )
        ]
        steps = 20
        grid = sorted({scores[round(i * (len(scores) - 1) / steps)] for i in range(steps + 1)})
        widths = {w.strip() for w in b.args.diff_wide.split(",") if w.strip()}
        wide = [
            params
            for width, params in (
                ("country", {"group_by": "province,poverty_band"}),
                ("province", {"group_by": "district,poverty_band", "province": province}),
            )
            if width in widths
        ][: b.args.diff_k]
        windows = [
            {
                "group_by": "poverty_band",
                "district": district,
                "score_min": str(lo),
                "score_max": str(hi),
            }
            for i, lo in enumerate(grid)
            for hi in grid[i + 1 :]
        ]
        logged = refused = 0
        times: list[float] = []
        wide_times: list[float] = []
        started = time.perf_counter()
        for group, upto in ((windows, b.args.diff_k - len(wide)), (wide, b.args.diff_k)):
            for params in group:
                if logged >= upto:
                    break
                b.token("diff")
                r, s = _timed(
                    lambda p=params: b.request(  # type: ignore[misc]
                        "GET", "/v1/partner/summaries", "diff", params=p, expect=(200, 409)
                    )
                )
                if r.status_code == 409:
                    refused += 1
                    continue
                logged += 1
                (wide_times if group is wide else times).append(s)
                if logged % 25 == 0 or group is wide:
                    log(f"differencing: {logged} earlier queries made ({refused} refused)")
        return {
            "earlier_queries": logged,
            "earlier_refused": refused,
            "earlier_seconds_total": round(time.perf_counter() - started, 1),
            "earlier_seconds_median": round(statistics.median(times), 4) if times else None,
            "earlier_wide_seconds": [round(t, 3) for t in wide_times],
        }

    return b.once("differencing", make)  # type: ignore[no-any-return]


def differencing_first(b: Bench) -> Sample:
    return _partner_summary(b, "fresh")


def differencing_after_k(b: Bench) -> Sample:
    sample = _partner_summary(b, "diff")
    sample.extra.update(differencing_prelude(b))
    return sample


def simulation(b: Bench) -> Sample:
    body = {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}, "transfer_amount": "10500"}
    b.token("staff")
    started = time.perf_counter()
    r = b.request("POST", "/v1/staff/simulations", "staff", body=body, expect=(202,))
    status_url = r.json()["status_url"]
    while True:
        sim = b.request("GET", status_url, "staff").json()
        if sim["status"] in ("done", "failed"):
            break
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    if sim["status"] == "failed":
        raise PathFailed(f"simulation failed: {sim.get('error')}")
    result = sim["result"]
    extra = {"worker_seconds": result.get("seconds")}
    return Sample(seconds, int(result["households_total"]), "households", 0, extra)


def report(name: str) -> Callable[[Bench], Sample]:
    def run(b: Bench) -> Sample:
        b.token("staff")
        r, s = _timed(lambda: b.request("GET", f"/v1/staff/reports/{name}", "staff"))
        rows = len(r.json().get("rows", []))
        return Sample(s, len(r.content), "bytes", len(r.content), {"rows": rows})

    run.__name__ = f"report_{name}"
    return run


def audit_verify(b: Bench) -> Sample:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "app", "audit", "verify"],
        cwd=ROOT,
        env={**os.environ, **b.env()},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise PathFailed(f"nser audit verify exit {out.returncode}: {out.stderr.strip()[-300:]}")
    found = re.search(r"(\d+) rows", out.stdout)
    return Sample(seconds, int(found.group(1)) if found else 0, "audit rows")


def ingest_phone(b: Bench) -> Sample:
    """2,000 phone changes of households spread over the registry, 202 to ``done``."""
    total = b.once("households", lambda: b.fetchval("SELECT count(*) FROM households"))
    percent = min(100.0, 100.0 * INGEST_RECORDS * 3 / max(total, 1))
    ids = [
        r[0]
        for r in b.fetch(
            f"SELECT id FROM households TABLESAMPLE BERNOULLI ({percent}) LIMIT {INGEST_RECORDS}"
        )
    ]
    tag = uuid.uuid4().int % 10_000
    records = [
        {
            "ref": str(i),
            "kind": "phone_change",
            "household_id": hid,
            "phone": f"+923{tag:04d}{i:05d}",
        }
        for i, hid in enumerate(ids)
    ]
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    b.token("partner")
    started = time.perf_counter()
    r = b.request(
        "POST",
        "/v1/partner/updates",
        "partner",
        body={"records": records},
        headers=headers,
        expect=(202,),
    )
    received = time.perf_counter()
    batch = r.json()["batch_id"]
    while True:
        state = b.request(
            "GET", f"/v1/partner/updates/{batch}", "partner", params={"results": "false"}
        ).json()
        if state["status"] == "done":
            break
        time.sleep(0.1)
    done = time.perf_counter()
    extra = {"receive_seconds": round(received - started, 3), "counts": state["counts"]}
    return Sample(done - received, len(records), "records", 0, extra)


@dataclass(frozen=True)
class Path:
    name: str
    run: Callable[[Bench], Sample]
    kind: str = "plain"  # plain | cached (cold/warm around restarts) | long | mutating


PATHS: tuple[Path, ...] = (
    Path("lookup.public", lookup_public),
    Path("lookup.partner", lookup_partner),
    Path("export.district", export_district),
    Path("eligibility.district", eligibility_district),
    Path("asof.page", asof_page),
    Path("asof.stream", asof_stream),
    Path("public.summary.country", public_summary_country, "cached"),
    Path("public.summary.province", public_summary_province, "cached"),
    Path("public.map", public_map, "cached"),
    Path("partner.summary", partner_summary, "cached"),
    Path("partner.analysis", partner_analysis, "cached"),
    Path("partner.map", partner_map, "cached"),
    Path("differencing.first", differencing_first, "differencing"),
    Path("differencing.after_k", differencing_after_k, "differencing"),
    Path("simulation", simulation, "long"),
    *(Path(f"report.{name}", report(name)) for name in REPORTS),
    Path("audit.verify", audit_verify, "long"),
    Path("ingest.phone", ingest_phone, "mutating"),
)


# -- running them -----------------------------------------------------------------------


def selected(name: str, only: list[str]) -> bool:
    return not only or any(name == p or name.startswith(p + ".") for p in only)


def attempt(b: Bench, path: Path, label: str) -> Sample:
    """One run; a dropped connection restarts the service before the error is kept."""
    try:
        return path.run(b)
    except httpx.TransportError as exc:
        log(f"{label}: {exc!r}; restarting the service")
        b.restart()
        raise PathFailed(f"{type(exc).__name__}: {exc}") from exc


def summarize(name: str, samples: list[Sample], error: str | None) -> dict[str, Any]:
    if not samples:
        return {"path": name, "error": error or "no run"}
    seconds = [s.seconds for s in samples]
    median = statistics.median(seconds)
    last = samples[-1]
    out: dict[str, Any] = {
        "path": name,
        "runs": len(samples),
        "seconds_median": round(median, 6),
        "seconds_min": round(min(seconds), 6),
        "seconds_first": round(seconds[0], 6),
        "answer": last.size,
        "unit": last.unit,
        "bytes": last.bytes,
        "seconds_per_unit": round(median / last.size, 9) if last.size else None,
        **last.extra,
    }
    if error:
        out["error"] = error
    return out


def describe(exc: BaseException) -> str:
    if isinstance(exc, PathFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip()[:400]


def run_plain(b: Bench, path: Path, runs: int) -> dict[str, Any]:
    samples: list[Sample] = []
    error = None
    for i in range(runs):
        try:
            samples.append(attempt(b, path, path.name))
        except (Exception, SystemExit) as exc:
            error = describe(exc)
            log(f"{path.name} failed: {error}")
            if not isinstance(exc, PathFailed):
                traceback.print_exc(file=sys.stderr)
            break
        s = samples[-1]
        log(f"{path.name} run {i + 1}/{runs}: {fmt_seconds(s.seconds)}, {s.size} {s.unit}")
    return summarize(path.name, samples, error)


def run_cached(b: Bench, paths: list[Path], runs: int) -> list[dict[str, Any]]:
    """Each run: restart the service, then each path cold and at once warm."""
    samples: dict[str, list[Sample]] = {
        f"{p.name}.{t}": [] for p in paths for t in ("cold", "warm")
    }
    errors: dict[str, str] = {}
    for i in range(runs):
        try:
            b.restart()
            b.request("GET", "/v1/public/geography", params={"level": "province"})
        except (Exception, SystemExit) as exc:
            for key in samples:
                errors.setdefault(key, f"service restart: {describe(exc)}")
            break
        for path in paths:
            if path.name + ".cold" in errors:
                continue
            for temperature in ("cold", "warm"):
                key = f"{path.name}.{temperature}"
                try:
                    samples[key].append(attempt(b, path, key))
                except (Exception, SystemExit) as exc:
                    errors[key] = describe(exc)
                    for other in ("cold", "warm"):  # the path is left for the next runs
                        errors.setdefault(f"{path.name}.{other}", errors[key])
                    log(f"{key} failed: {errors[key]}")
                    break
                s = samples[key][-1]
                log(f"{key} run {i + 1}/{runs}: {fmt_seconds(s.seconds)}, {s.size} {s.unit}")
    return [summarize(key, got, errors.get(key)) for key, got in samples.items()]


def run_differencing(b: Bench, paths: list[Path], runs: int) -> list[dict[str, Any]]:
    """The prelude once, then the same query on both agreements, alternated."""
    samples: dict[str, list[Sample]] = {p.name: [] for p in paths}
    errors: dict[str, str] = {}
    try:
        b.credentials("fresh")
        prelude = differencing_prelude(b)
        log(f"differencing prelude: {prelude}")
    except (Exception, SystemExit) as exc:
        return [summarize(p.name, [], describe(exc)) for p in paths]
    for i in range(runs):
        for path in paths:
            if path.name in errors:
                continue
            try:
                samples[path.name].append(attempt(b, path, path.name))
            except (Exception, SystemExit) as exc:
                errors[path.name] = describe(exc)
                log(f"{path.name} failed: {errors[path.name]}")
                continue
            s = samples[path.name][-1]
            log(f"{path.name} run {i + 1}/{runs}: {fmt_seconds(s.seconds)}")
    rows = [summarize(p.name, samples[p.name], errors.get(p.name)) for p in paths]
    by_name = {r["path"]: r for r in rows}
    first, after = by_name.get("differencing.first"), by_name.get("differencing.after_k")
    if first and after and first.get("seconds_median") and after.get("seconds_median"):
        after["ratio_to_first"] = round(after["seconds_median"] / first["seconds_median"], 2)
    return rows


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def registry_size(b: Bench) -> dict[str, Any]:
    row = b.fetch(
        """SELECT (SELECT count(*) FROM households) AS households,
                  (SELECT count(*) FROM members) AS members,
                  (SELECT count(*) FROM household_history) AS history_rows,
                  (SELECT count(*) FROM audit_log) AS audit_rows,
                  pg_database_size(current_database()) AS database_bytes"""
    )[0]
    return dict(row)


async def admin_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the fresh database")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--long-runs", type=int, default=2, help="runs of simulation, audit.verify")
    ap.add_argument("--only", default="", help="comma-separated path names or prefixes")
    ap.add_argument("--skip-mutating", action="store_true", help="leave out ingest.phone")
    ap.add_argument(
        "--district", default="PK520", help="the district (default PK520; '' for the median one)"
    )
    ap.add_argument("--diff-k", type=int, default=200, help="earlier queries (differencing)")
    ap.add_argument(
        "--diff-wide",
        default="country,province",
        help="the wide earlier queries of the differencing prelude (country, province, both)",
    )
    args = ap.parse_args()
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    chosen = [p for p in PATHS if selected(p.name, only) or selected(p.name + ".cold", only)]
    if args.skip_mutating:
        chosen = [p for p in chosen if p.kind != "mutating"]
    if not chosen:
        raise SystemExit(f"--only {args.only!r} names no path; paths: {[p.name for p in PATHS]}")

    with bench_database(args.reuse_db, args.households, keep=args.keep_db) as url:
        nser(["db", "upgrade"], url)
        if not args.reuse_db:
            # The first reads after a bulk load write every page again (hint bits).
            log("VACUUM (ANALYZE) of the fresh registry")
            asyncio.run(admin_sql(url, "VACUUM (ANALYZE)"))
        b = Bench(url, args)
        rows: list[dict[str, Any]] = []
        try:
            b.restart()
            cached = [p for p in chosen if p.kind == "cached"]
            differencing = [p for p in chosen if p.kind == "differencing"]
            for path in chosen:
                if path.kind == "cached":
                    if path is cached[0]:
                        rows += run_cached(b, cached, args.runs)
                elif path.kind == "differencing":
                    if path is differencing[0]:
                        rows += run_differencing(b, differencing, args.runs)
                else:
                    runs = args.long_runs if path.kind == "long" else args.runs
                    rows.append(run_plain(b, path, runs))
        finally:
            b.stop()
        size = registry_size(b)
        try:
            district, province = b.district()
        except PathFailed:
            district, province = args.district, None

    if only:  # a cold/warm pair of which only one was asked for
        rows = [r for r in rows if selected(r["path"], only) or r["path"].rsplit(".", 1)[0] in only]
    print(
        f"registry: {size['households']:,} households, {size['members']:,} members, "
        f"{size['audit_rows']:,} audit rows; district {district}"
    )
    print(f"{'path':<28} {'median':>10} {'answer':>20} {'per unit':>12}  runs")
    for r in rows:
        if "seconds_median" not in r:
            print(f"{r['path']:<28} {'ERROR':>10}  {r['error']}")
            continue
        answer = f"{r['answer']:,} {r['unit']}"
        per = fmt_seconds(r["seconds_per_unit"])
        line = f"{r['path']:<28} {fmt_seconds(r['seconds_median']):>10} {answer:>20} {per:>12}  {r['runs']}"
        if r.get("error"):
            line += f"  (then failed: {r['error']})"
        print(line)
    report_json = {
        "bench": "growth",
        "database": url.rpartition("/")[2] if args.reuse_db else "fresh",
        **size,
        "district": district,
        "province": province,
        "runs": args.runs,
        "long_runs": args.long_runs,
        "paths": {r.pop("path"): r for r in rows},
    }
    print(json.dumps(report_json, default=str))


if __name__ == "__main__":
    main()
