"""A primary and a real streaming replica of it, for the read-replica tests.

``primary_and_replica()`` makes a PostgreSQL server of its own with the machine's
PostgreSQL binaries (``initdb``, in a folder ``/tmp/replica-*``, on a free port of
5500-5519), and a hot standby of it with ``pg_basebackup -R`` (a base backup with its WAL,
``standby.signal`` and the standby's connection to the primary) on another port of that
range. The standby streams every change of the primary as it commits, through a
replication slot, so a standby a test stopped and started again finds the WAL it missed.
Both are stopped and their folder removed when the context ends.

Why not a standby of the machine's shared PostgreSQL at 127.0.0.1:5432: a base backup
copies a whole server, and the shared one holds every other test's and benchmark's
databases (18 GB at one point of writing; its copy took 2 min 22 s), and streaming from it
would need a replication rule in its pg_hba.conf. A server of our own copies in a second or
two and changes nothing shared.

Running as root, the servers run as the ``postgres`` system user (PostgreSQL refuses root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from server import free_ports_in

PORTS = range(5500, 5520)
SUPERUSER = "postgres"
SLOT = "nser_test_standby"


def _bin_dir() -> Path:
    found = subprocess.run(
        ["pg_config", "--bindir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    for candidate in (found, "/usr/lib/postgresql/15/bin"):
        if candidate and (Path(candidate) / "pg_basebackup").exists():
            return Path(candidate)
    raise RuntimeError("PostgreSQL's server binaries (initdb, pg_basebackup) not found")


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", SUPERUSER, "--", *args]


def _run(args: list[str], timeout: float = 300) -> None:
    result = subprocess.run(
        _as_server_user(args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


@dataclass
class Server:
    """One PostgreSQL server of the pair: its port and data folder."""

    port: int
    data: Path
    bin_dir: Path

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "120", *args])

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``immediate``: as a crash, every connection cut without goodbye)."""
        self.pg_ctl("-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def configure(self, **settings: str) -> None:
        """Append settings to its postgresql.conf (read at the next start)."""
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


def _settings(port: int, folder: Path) -> dict[str, str]:
    return {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{folder}'",
        "shared_buffers": "32MB",
        "max_connections": "60",
        "fsync": "off",  # throw-away servers
        "full_page_writes": "off",
        "logging_collector": "off",
    }


@dataclass
class Pair:
    primary: Server
    standby: Server


@contextmanager
def primary_and_replica() -> Iterator[Pair]:
    """A running primary and a hot standby streaming from it (see the module's doc)."""
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="replica-", dir="/tmp"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SUPERUSER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    primary_port, standby_port = free_ports_in(PORTS, 2)
    primary = Server(primary_port, folder / "primary", bin_dir)
    standby = Server(standby_port, folder / "standby", bin_dir)
    try:
        # trust for local and 127.0.0.1 connections, replication ones included (initdb's
        # default rules), on a server nobody else can reach.
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(primary.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        primary.configure(**_settings(primary_port, folder))
        primary.start()
        _run(
            [
                str(bin_dir / "pg_basebackup"),
                "-d",
                primary.url(),
                "-D",
                str(standby.data),
                "-X",
                "stream",  # the WAL written during the copy too
                "-C",
                "-S",
                SLOT,  # made now; the standby streams through it (primary_slot_name)
                "-R",  # standby.signal and primary_conninfo: a standby of this primary
                "-c",
                "fast",
                "--no-sync",
            ]
        )
        standby.configure(
            **_settings(standby_port, folder),
            hot_standby="on",
            # Long reads on the standby are not cancelled for rows the primary vacuums.
            hot_standby_feedback="on",
        )
        standby.start()
        wait_streaming(standby)
        yield Pair(primary, standby)
    finally:
        for server in (standby, primary):
            if server.running():
                with contextlib.suppress(AssertionError):
                    server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def wait_streaming(standby: Server, timeout: float = 60) -> None:
    """Until the standby answers and its WAL receiver streams from the primary."""

    async def streaming() -> bool:
        try:
            conn = await asyncpg.connect(standby.url(), timeout=5)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_stat_wal_receiver"))
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(streaming()):
            return
        time.sleep(0.2)
    log = standby.log.read_text()
    raise AssertionError(f"the standby did not stream within {timeout} s:\n{log}")
