"""Benchmark: how long a pgBackRest full backup and a point-in-time restore take.

The restore drill (tests/restore/restore_drill.py; `make drill-restore` runs it at 2,000
households) on a registry of N households: a PostgreSQL cluster of its own on this machine
(ports 5600-5649, data under /tmp/restore-*), archived and backed up as
deploy/pgbackrest.conf says (zstd level 3, AES-256, two processes); batches before and
after an instant T; a restore to T into a new data folder, started and promoted; and every
check of the drill (the restored registry equals the as-of list at T, the batches up to T
and none after, the audit chain). Reported: the database's size, the full backup's
seconds and size in the repository, the restore's seconds (files copied back; WAL
fetched, replayed and the promotion), and as the baseline a plain copy of the data folder
on the same disk (`backup_s / data_folder_copy_s`). Needs `make restore-deps`; with 1M
households the drill reads the whole list three times through the API (minutes). Last
line of output: one JSON object.

    .venv/bin/python bench/restore.py [--households N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "restore"))

from pitr_cluster import missing_tools  # noqa: E402
from restore_drill import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make restore-deps` first")
    report = run(args.households, copy_baseline=True)
    copy_s = report["data_folder_copy_s"]
    report["backup_vs_copy"] = round(report["backup_s"] / copy_s, 2) if copy_s else None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
