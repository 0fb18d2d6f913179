"""The service as ``nser serve`` runs it (uvicorn, uvloop, httptools, the same options), for
``bench/audit_append.py``, with one bench-only variant for its baseline:

    BENCH_AUDIT=off   every audit append is skipped: the same reads, without audit

Any other value serves the real service (the audit chains set by ``NSER_AUDIT_CHAINS``).
Every variant of a run is started by this file, so they differ only in the audit.

    .venv/bin/python bench/audit_serve.py PORT WORKERS
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def create() -> Any:
    from app.main import create_app

    if os.environ.get("BENCH_AUDIT") == "off":
        from app.services.audit import trail

        async def no_append(conn: Any, record: Any) -> int:
            return 0

        trail.append = no_append  # type: ignore[assignment]
    return create_app()


def main() -> None:
    import uvicorn

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    sys.path.insert(0, str(ROOT))
    uvicorn.run(
        "bench.audit_serve:create",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        proxy_headers=False,
        access_log=False,
        timeout_graceful_shutdown=20,
        log_config=None,
    )


if __name__ == "__main__":
    main()
