"""The restore drill (`make drill-restore`) at a small scale: see restore_drill.py.

A registry of 2,000 households on a PostgreSQL cluster of its own, archived and backed up
by pgBackRest as deploy/pgbackrest.conf says; batches before and after an instant T; a
point-in-time restore to T into a new data folder; the restored registry equals the as-of
list at T, holds the batches applied before T and none of those after, and its audit
chain verifies. The timings are printed (`bench/restore.py` runs the same at scale).
"""

from __future__ import annotations

import json

import pytest
from pitr_cluster import missing_tools
from restore_drill import run

pytestmark = pytest.mark.slow

HOUSEHOLDS = 2_000


def test_restore_to_an_instant(tmp_path_factory: pytest.TempPathFactory) -> None:
    missing = missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make restore-deps` first")
    logs = tmp_path_factory.mktemp("restore-logs")
    report = run(HOUSEHOLDS, keep_logs=logs)
    assert report["batches_before_t"], report
    assert report["batches_after_t"], report
    print(f"\nrestore drill (logs kept in {logs}):\n{json.dumps(report, indent=1)}", flush=True)
