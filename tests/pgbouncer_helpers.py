"""A pgbouncer of the test's own in transaction mode, in front of the test PostgreSQL.

Debian's pgbouncer (`make test` installs it with apt-get) listens on the first free port
of 5520-5539, in transaction mode, with few server connections per database and user (so
that the service's client connections share them, as they would in production), trusting
the admin and service roles as the server does. It runs as ``nobody`` when the tests run
as root (pgbouncer refuses root), logs to a file of its folder, and is stopped and its
folder removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from server import free_ports_in

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PORTS = range(5520, 5540)


@dataclass(frozen=True)
class Bouncer:
    port: int
    log: Path

    def url(self, direct_url: str) -> str:
        """``direct_url`` (user and database kept) through this pgbouncer."""
        parts = urlsplit(direct_url)
        user = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()

    def logins(self, database: str, user: str) -> int:
        """Client logins pgbouncer logged for ``database`` as ``user``."""
        wanted = f"login attempt: db={database} user={user} "
        return sum(wanted in line for line in self.log.read_text().splitlines())


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def pgbouncer(server_url: str, users: list[str], *, pool_size: int = 3) -> Iterator[Bouncer]:
    """pgbouncer in transaction mode in front of ``server_url``'s server, for ``users``."""
    if not os.path.exists(PGBOUNCER):
        raise RuntimeError(f"{PGBOUNCER} is missing: `make test` installs Debian's pgbouncer")
    server = urlsplit(server_url)
    folder = Path(tempfile.mkdtemp(prefix="nser-pgbouncer-"))
    folder.chmod(0o755)  # read by the unprivileged user pgbouncer runs as
    (port,) = free_ports_in(PORTS, 1)
    (folder / "users.txt").write_text("".join(f'"{user}" ""\n' for user in users))
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.hostname} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
; the service asks for jit = off at connection start (app.db.SERVER_SETTINGS)
ignore_startup_parameters = jit
default_pool_size = {pool_size}
max_client_conn = 200
log_connections = 1
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    log = folder / "pgbouncer.log"
    command = [PGBOUNCER, *(["-u", "nobody"] if os.geteuid() == 0 else []), "pgbouncer.ini"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {log.read_text()}")
            time.sleep(0.05)
        yield Bouncer(port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
