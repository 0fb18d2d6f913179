"""A PostgreSQL cluster of its own, archived and backed up by pgBackRest, and its restores.

The machine's PostgreSQL 15 (``/usr/lib/postgresql/15/bin``) on a free port in 5600-5649,
with ``archive_mode = on`` and the ``archive_command`` of deploy/pgbackrest.conf; that file
is used as it is, only its paths (repository, spool, logs, lock, data folder) moved under
one ``/tmp/restore-*`` folder and its port replaced. Each server (the original, each
restored copy) has such a file of its own, as if on a machine of its own: the repository
shared, the spool, logs and lock apart (a restore empties its spool). The repository is
encrypted with a passphrase of the run's own, given to every pgBackRest process
(PostgreSQL's archiver included) as ``PGBACKREST_REPO1_CIPHER_PASS``, as in production.

:meth:`PitrCluster.restore` is a point-in-time restore into a **new** data folder
(``--pg1-path``), started on another port and promoted at the target; the original keeps
running. PostgreSQL refuses to run as root, so when this runs as root the servers and
pgBackRest run as the ``postgres`` system user. :meth:`PitrCluster.close` stops every
server it started (immediate shutdown) and removes the folder, and is safe at any point of
a failed start.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "pgbackrest.conf"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
STANZA = "nser"
PORTS = range(5600, 5650)
# What each server has of its own under the run's folder (the repository is shared).
PRIVATE = ("spool", "log", "lock")


class RestoreError(AssertionError):
    """A server or pgBackRest command did not do what was asked (the message says what,
    with its output and the logs)."""


def missing_tools() -> list[str]:
    """What the drill needs and this machine lacks (`make restore-deps` installs it)."""
    missing = []
    if not Path(PGBACKREST).exists():
        missing.append("pgbackrest")
    if not (PG_BIN / "postgres").exists():
        missing.append(str(PG_BIN / "postgres"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("the postgres system user (PostgreSQL refuses to run as root)")
    return missing


def free_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` ports of 5600-5649 nothing listens on (nor in ``taken``)."""
    found = []
    for port in PORTS:
        if taken and port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RestoreError(f"fewer than {count} free ports in {PORTS.start}-{PORTS.stop - 1}")


@dataclass
class Server:
    """One PostgreSQL data folder and the port it runs on."""

    data: Path
    port: int
    log: Path
    config: Path  # its pgBackRest configuration (as on its own machine)
    started: bool = False


@dataclass
class PitrCluster:
    root: Path
    cipher_pass: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    run_as: str | None = None  # the servers' and pgBackRest's system user (None: ours)
    servers: list[Server] = field(default_factory=list)

    # --- set-up -----------------------------------------------------------------------
    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def primary(self) -> Server:
        return self.servers[0]

    def env(self, server: Server | None = None) -> dict[str, str]:
        """The environment of the pgBackRest and PostgreSQL processes of ``server`` (the
        original by default); PostgreSQL passes it on to its archive_command and
        restore_command."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env |= {
            "PGBACKREST_CONFIG": str((server or self.primary).config),
            "PGBACKREST_REPO1_CIPHER_PASS": self.cipher_pass,
            "LC_ALL": "C.UTF-8",
        }
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            env |= {"HOME": user.pw_dir, "USER": self.run_as, "LOGNAME": self.run_as}
        return env

    def run(self, args: list[str], timeout: float = 3600, server: Server | None = None) -> str:
        """A command as the cluster's user, in the environment of ``server`` (the
        original by default); its output (both streams)."""
        done = subprocess.run(
            args,
            cwd=self.root,
            env=self.env(server),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self.run_as,
            group=self.run_as,
            extra_groups=[] if self.run_as else None,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RestoreError(f"{' '.join(args)} exited {done.returncode}:\n{output}")
        return output

    def pgbackrest(self, *args: str, timeout: float = 3600, server: Server | None = None) -> str:
        return self.run([PGBACKREST, f"--stanza={STANZA}", *args], timeout, server)

    def write_config(self, server: Server, name: str) -> None:
        """deploy/pgbackrest.conf for ``server``: the shared repository, the server's data
        folder and port, and a spool, log and lock folder of its own (``name``), as if
        it ran on a machine of its own."""
        for path in (self.repo, *(self.root / f"{part}-{name}" for part in PRIVATE)):
            path.mkdir(exist_ok=True)
            self.own(path)
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(CONFIG)
        moved = {"repo1-path": self.repo}
        moved |= {f"{part}-path": self.root / f"{part}-{name}" for part in PRIVATE}
        for key, value in moved.items():
            assert parser.has_option("global", key), f"{CONFIG} has no {key}"
            parser.set("global", key, str(value))
        parser.set(STANZA, "pg1-path", str(server.data))
        parser.set(STANZA, "pg1-port", str(server.port))
        parser.set(STANZA, "pg1-socket-path", str(self.root))
        with server.config.open("w") as out:
            parser.write(out, space_around_delimiters=False)
        self.own(server.config)

    def own(self, path: Path) -> None:
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(path, user.pw_uid, user.pw_gid)

    def new_server(self, name: str) -> Server:
        (port,) = free_ports(1, {s.port for s in self.servers})
        root = self.root
        server = Server(root / name, port, root / f"{name}.log", root / f"pgbackrest-{name}.conf")
        self.servers.append(server)
        self.write_config(server, name)
        return server

    def prepare(self) -> None:
        if os.geteuid() == 0:
            self.run_as = "postgres"
        self.own(self.root)
        self.new_server("data")

    def start(self) -> None:
        """initdb, WAL archiving on, the server started, the stanza created and checked."""
        self.prepare()
        data = self.primary.data
        self.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            timeout=120,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --stanza={STANZA} archive-push %p'",
            "max_connections": "100",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# the restore drill\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start_server(self.primary)
        self.pgbackrest("stanza-create", timeout=120)
        self.pgbackrest("check", timeout=120)

    # --- servers ----------------------------------------------------------------------
    def start_server(self, server: Server) -> None:
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(server.data), "-l", str(server.log)]
        server.started = True
        try:
            self.run([*pg_ctl, "-w", "-t", "600", "-o", f"-p {server.port}", "start"], 660, server)
        except RestoreError as exc:
            raise RestoreError(f"{exc}\n{self.log_tail(server.log)}") from None

    def stop_server(self, server: Server, mode: str = "fast") -> None:
        if server.started and (server.data / "postmaster.pid").exists():
            self.run(
                [str(PG_BIN / "pg_ctl"), "-D", str(server.data), "-m", mode, "-w", "stop"],
                600,
                server,
            )
        server.started = False

    # --- backups and restores ---------------------------------------------------------
    def backup(self, kind: str = "full") -> float:
        """A backup of ``kind`` (full, diff, incr); its seconds."""
        started = time.monotonic()
        self.pgbackrest(f"--type={kind}", "backup")
        return time.monotonic() - started

    def check(self) -> None:
        """``pgbackrest check``: the archiver works, and the current WAL segment (switched
        to a new one) has reached the repository, so everything written so far is in the
        archive."""
        self.pgbackrest("check", timeout=300)

    def info(self) -> dict[str, Any]:
        """The stanza's ``pgbackrest info`` as JSON."""
        stanzas: list[dict[str, Any]] = json.loads(self.pgbackrest("--output=json", "info"))
        return stanzas[0]

    def restore(self, target: str) -> tuple[Server, float, float]:
        """Restore the backup to the instant ``target`` (a timestamptz) into a new data
        folder, start it on a new port with archiving off (it must not push into this
        stanza's archive), wait until it has replayed up to ``target`` and been promoted.
        Returns the server, the seconds of ``pgbackrest restore`` (the files copied back)
        and the seconds from its start to accepting writes (WAL fetched and replayed)."""
        server = self.new_server(f"restored{len(self.servers)}")
        started = time.monotonic()
        self.pgbackrest(
            f"--pg1-path={server.data}",
            "--type=time",
            f"--target={target}",
            "--target-action=promote",
            "--archive-mode=off",
            "restore",
            server=server,
        )
        copied = time.monotonic() - started
        started = time.monotonic()
        self.start_server(server)
        deadline = time.monotonic() + 3600
        while self.query(server, "SELECT pg_is_in_recovery()") != "f":
            if time.monotonic() > deadline:
                raise RestoreError(f"never promoted\n{self.log_tail(server.log)}")
            time.sleep(0.2)
        return server, copied, time.monotonic() - started

    def query(self, server: Server, sql: str, database: str = "postgres") -> str:
        """One value, through psql on the server's socket."""
        psql = [str(PG_BIN / "psql"), "-h", str(self.root), "-p", str(server.port)]
        out = self.run([*psql, "-U", "postgres", "-d", database, "-AtXq", "-c", sql], 60)
        return out.strip()

    # --- the end ----------------------------------------------------------------------
    def log_tail(self, path: Path, lines: int = 40) -> str:
        if not path.exists():
            return f"(no {path.name})"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {path.name}\n" + "\n".join(text)

    def logs(self) -> str:
        paths = [s.log for s in self.servers] + sorted(self.root.glob("log-*/*.log"))
        return "\n".join(self.log_tail(p) for p in paths)

    def close(self) -> None:
        """Stop every server started here (immediately: nothing of them is kept), then
        remove the folder."""
        for server in self.servers:
            with suppress(RestoreError, subprocess.TimeoutExpired):
                self.stop_server(server, mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def pitr_cluster(keep_logs: Path | None = None) -> Iterator[PitrCluster]:
    """A started, archived cluster with its stanza under a new /tmp/restore-* folder,
    stopped and removed after (the servers' and pgBackRest's logs copied to ``keep_logs``
    first)."""
    root = Path(tempfile.mkdtemp(prefix="restore-", dir="/tmp"))
    cluster = PitrCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        if keep_logs is not None:
            for log in [*root.glob("*.log"), *root.glob("log-*/*.log")]:
                with suppress(OSError):
                    shutil.copy(log, keep_logs / f"{log.parent.name}-{log.name}")
        cluster.close()
