"""Prometheus metrics, correct with several uvicorn workers.

``nser serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before the workers start;
prometheus_client then keeps each worker's values in memory-mapped files there and
``/metrics`` sums them, whichever worker answers. Without the variable (tests, a single
in-process app) the default registry is used.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

# Labelled by route template (``/v1/public/scores/{cnic}``), never by raw path: a raw path
# carries a CNIC and would make one series per citizen.
REQUESTS = Counter(
    "nser_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "nser_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UNMATCHED_ROUTE = "<unmatched>"

# Read replicas (app/replicas.py). A fallback is a read meant for a replica that the
# primary answered: no replica usable (down, lagging, unfit, starting), the replica failed
# under it (down) or a recovery conflict cancelled it (conflict), or the replica had not
# replayed what the read must see within NSER_READ_WAIT_SECONDS (behind).
READ_FALLBACKS = Counter(
    "nser_db_read_fallbacks_total",
    "Reads meant for a read replica that the primary answered, by reason.",
    ["reason"],
)
REPLICA_USABLE = Gauge(
    "nser_db_replica_usable",
    "1 while a read replica takes reads (answering, a standby, within the lag bound), else 0.",
    ["replica"],
    multiprocess_mode="livemostrecent",
)
REPLICA_LAG = Gauge(
    "nser_db_replica_lag_seconds",
    "How far a read replica is behind the primary at its last check (NaN: unknown).",
    ["replica"],
    multiprocess_mode="livemostrecent",
)

# DCI callbacks (app/services/dci/callbacks.py), counted in the process whose worker sends
# them: ``delivered`` (a 2xx), ``failed`` (an attempt that failed: retried later, or dead),
# ``dead`` (given up after NSER_DCI_CALLBACK_MAX_ATTEMPTS; staff may retry it).
DCI_CALLBACKS = Counter(
    "nser_dci_callbacks_total",
    "DCI callback delivery attempts and dead letters, by outcome.",
    ["outcome"],
)

# DCI asynchronous requests (app/services/dci/jobs.py), counted in the process whose job loop
# runs them, by kind (``search``, ``txn-status``) and outcome: ``done`` (answered: the
# callback stored), ``failed`` (ended unanswered: the callback was refused, or not even a
# refusal could be built), ``retried`` (an error: given back for a later try), ``lost``
# (the lease ran out first; another worker has it).
DCI_JOBS = Counter(
    "nser_dci_jobs_total",
    "DCI asynchronous jobs run by the job loop, by kind and outcome.",
    ["kind", "outcome"],
)
# Read from dci_jobs by each job loop every few seconds and after each job it runs.
DCI_JOBS_PENDING = Gauge(
    "nser_dci_jobs_pending",
    "DCI asynchronous jobs accepted and not yet answered, at the last check.",
    multiprocess_mode="livemostrecent",
)
DCI_JOBS_OLDEST = Gauge(
    "nser_dci_jobs_oldest_pending_seconds",
    "Age of the oldest pending DCI asynchronous job at the last check (0: none pending).",
    multiprocess_mode="livemostrecent",
)


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe(method: str, route: str, status: int, seconds: float) -> None:
    # Label children are cached: .labels() validates and hashes its arguments on every call.
    # The key space is bounded (methods x route templates x statuses), never raw paths.
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def read_fallback(reason: str) -> None:
    READ_FALLBACKS.labels(reason).inc()


def replica_state(name: str, usable: bool, lag: float | None) -> None:
    REPLICA_USABLE.labels(name).set(1 if usable else 0)
    REPLICA_LAG.labels(name).set(float("nan") if lag is None else lag)


def dci_callback(outcome: str) -> None:
    DCI_CALLBACKS.labels(outcome).inc()


def dci_job(kind: str, outcome: str) -> None:
    DCI_JOBS.labels(kind, outcome).inc()


def dci_jobs_pending(count: int, oldest_seconds: float) -> None:
    DCI_JOBS_PENDING.set(count)
    DCI_JOBS_OLDEST.set(oldest_seconds)


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (summed in multiprocess mode) and its type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
