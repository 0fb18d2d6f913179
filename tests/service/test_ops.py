"""Operations with real processes: JSON access logs with masked CNICs, /metrics across
workers, graceful shutdown, and migrations down and up on a fresh database."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import create_database, drop_database, run_cli
from lookup_data import LIVING, insert_known_members
from server import serve

METRICS_TOKEN = "metrics-scrape-token-for-the-ops-test-0001"


@pytest.mark.slow
def test_two_workers_logs_and_metrics(database_url: str, tmp_path: Path) -> None:
    asyncio.run(insert_known_members(database_url))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        "NSER_DATABASE_URL": database_url,
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "NSER_METRICS_TOKEN": METRICS_TOKEN,
    }
    dashed = f"{LIVING[:5]}-{LIVING[5:12]}-{LIVING[12]}"
    requests = 40
    with serve(env, tmp_path, workers=2) as server:
        for i in range(requests):
            # A new connection each time, so that either worker may answer (which one is
            # the kernel's choice: on a busy machine one may take them all).
            written = LIVING if i % 2 else dashed
            response = httpx.get(
                f"{server.base_url}/v1/public/scores/{written}",
                headers={"X-Request-ID": f"req-{i}"},
                timeout=10,
            )
            assert response.status_code == 200
            assert response.headers["x-request-id"] == f"req-{i}"
        metrics = httpx.get(
            f"{server.base_url}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=10,
        ).text
        process = server.process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # graceful shutdown
        log_text = server.log_path.read_text()
        access = [line for line in server.access_lines() if line["route"] != "/healthz"]

    # Every log line is JSON; no CNIC appears in clear, only masked.
    assert LIVING not in log_text
    assert dashed not in log_text
    lookups = [line for line in access if line["route"] == "/v1/public/scores/{cnic}"]
    assert len(lookups) == requests
    assert {line["path"] for line in lookups} == {"/v1/public/scores/99901-*******-3"}
    assert {line["request_id"] for line in lookups} == {f"req-{i}" for i in range(requests)}
    for line in lookups:
        assert line["method"] == "GET"
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float)

    # /metrics sums every worker's counts, whichever one answered the scrape.
    match = re.search(
        r'nser_http_requests_total\{method="GET",route="/v1/public/scores/\{cnic\}",'
        r'status="200"\} ([0-9.]+)',
        metrics,
    )
    assert match, metrics
    assert float(match.group(1)) == requests
    assert (
        'nser_http_request_duration_seconds_count{method="GET",route="/v1/public/scores/{cnic}"}'
        in metrics
    )
    assert LIVING not in metrics


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


def test_migrations_down_to_base_and_up_again() -> None:
    url = create_database()  # migrated to head by `nser db upgrade`
    try:
        head = asyncio.run(_tables(url))
        assert {"households", "members", "pmt_models", "geo_units"} <= head
        run_cli(["db", "downgrade", "--revision", "base"], url)
        assert asyncio.run(_tables(url)) <= {"alembic_version"}
        run_cli(["db", "upgrade"], url)
        assert asyncio.run(_tables(url)) == head
    finally:
        drop_database(url)


async def _model_drift(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    import app.models

    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:

            def compare(sync: Any) -> list[object]:
                context = MigrationContext.configure(sync, opts={"compare_type": True})
                return list(compare_metadata(context, app.models.Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def test_the_models_describe_the_migrated_schema() -> None:
    # Alembic's autogenerate must find nothing to do: the SQLAlchemy models and the
    # migrations describe the same tables, columns, constraints and indexes.
    url = create_database()
    try:
        assert asyncio.run(_model_drift(url)) == []
    finally:
        drop_database(url)
