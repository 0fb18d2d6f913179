"""A two-node Patroni cluster on this machine, from the configuration in deploy/.

etcd (one member), two Patroni nodes, each running the machine's PostgreSQL 15 binaries
with ``deploy/patroni.yml`` and its ``deploy/nodeN.env``, and HAProxy with
``deploy/haproxy.cfg``; everything lives under one ``/tmp/failover-*`` folder and on the
ports 5540-5599. PostgreSQL refuses to run as root, so when the drill runs as root the
nodes run as the ``postgres`` system user.

Two ways for a primary to go: :meth:`HACluster.crash` is a machine dying (its Patroni and
every PostgreSQL process SIGKILLed at once: their connections are reset, nothing releases
the leader key), :meth:`HACluster.freeze` a machine that stops answering without closing
anything (SIGSTOP: connections to it stay open and silent, new ones are accepted by the
kernel and never answered). Either way the standby takes over when the leader key
expires. :meth:`HACluster.close` stops whatever is still running and removes the folder,
and is safe to call at any point of a failed start.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# deploy/nodeN.env name this folder; each run replaces it with a fresh one of its own.
ENV_DATA_ROOT = "/tmp/failover-drill"
ETCD_CLIENT_PORT = 5560
ETCD_PEER_PORT = 5561
HAPROXY_PORT = 5540  # deploy/haproxy.cfg
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NODES = ("node1", "node2")


class ClusterError(AssertionError):
    """The cluster did not reach the state waited for (the message names it and the logs)."""


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def missing_tools() -> list[str]:
    """What the cluster needs and this machine lacks (`make drill-deps` installs it)."""
    needed = {"patroni": shutil.which("patroni"), "etcd": shutil.which("etcd")}
    missing = [name for name, found in needed.items() if not found]
    if not Path(HAPROXY).exists():
        missing.append("haproxy")
    if not (PG_BIN / "postgres").exists():
        missing.append(str(PG_BIN / "postgres"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("the postgres system user (PostgreSQL refuses to run as root)")
    return missing


@dataclass
class Node:
    name: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["PATRONI_POSTGRESQL_DATA_DIR"])

    @property
    def pg_port(self) -> int:
        return int(self.env["PATRONI_POSTGRESQL_LISTEN"].rpartition(":")[2])

    @property
    def api(self) -> str:
        return "http://" + self.env["PATRONI_RESTAPI_CONNECT_ADDRESS"]

    def postgres_processes(self) -> list[psutil.Process]:
        """The node's postmaster (from its pid file) and every process under it."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            postmaster = psutil.Process(pid)
            if str(self.data_dir) not in " ".join(postmaster.cmdline()):
                return []  # a stale file: that pid is someone else's now
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def status(self) -> int | None:
        """The HTTP status of the node's ``GET /primary`` (None: Patroni does not answer)."""
        return _get_status(self.api + "/primary")


# One client for every poll (a new one per request costs a TLS context each time).
_HTTP = httpx.Client(timeout=2, trust_env=False)


def _get_status(url: str) -> int | None:
    try:
        return _HTTP.get(url).status_code
    except httpx.HTTPError:
        return None


@dataclass
class HACluster:
    root: Path
    superuser_password: str = field(default_factory=lambda: secrets.token_hex(16))
    replication_password: str = field(default_factory=lambda: secrets.token_hex(16))
    nodes: dict[str, Node] = field(default_factory=dict)
    etcd: subprocess.Popen[bytes] | None = None
    haproxy: subprocess.Popen[bytes] | None = None
    run_as: str | None = None  # the system user of Patroni and PostgreSQL (None: ours)
    crashed: set[str] = field(default_factory=set)  # nodes killed on purpose

    # --- start ------------------------------------------------------------------------
    def prepare(self) -> None:
        if os.geteuid() == 0:
            self.run_as = "postgres"
        for name in NODES:
            env = read_env_file(DEPLOY / f"{name}.env")
            env = {k: v.replace(ENV_DATA_ROOT, str(self.root)) for k, v in env.items()}
            (self.root / name).mkdir()
            self.nodes[name] = Node(name, env, self.root / f"{name}.log")
        # Patroni reads its file as the nodes' user, which may not reach the checkout.
        shutil.copy(DEPLOY / "patroni.yml", self.root / "patroni.yml")
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            for path in (self.root, *(self.root / n for n in NODES)):
                os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o755)

    def start_etcd(self) -> None:
        data = self.root / "etcd"
        client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
        peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        with (self.root / "etcd.log").open("wb") as log:
            self.etcd = subprocess.Popen(
                [
                    "etcd",
                    "--name=drill",
                    f"--data-dir={data}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=drill={peer}",
                    "--initial-cluster-state=new",
                    f"--initial-cluster-token=failover-{os.getpid()}",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(lambda: _get_status(client + "/health") == 200, 30, "etcd to answer")

    def start_node(self, name: str) -> None:
        node = self.nodes[name]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PATRONI_")},
            **node.env,
            "PATRONI_SUPERUSER_PASSWORD": self.superuser_password,
            "PATRONI_REPLICATION_PASSWORD": self.replication_password,
        }
        if self.run_as:
            env["HOME"] = str(self.root / name)
            env["USER"] = env["LOGNAME"] = self.run_as
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                ["patroni", str(self.root / "patroni.yml")],
                cwd=self.root / name,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=0o077,  # PostgreSQL wants its data folder private (pg_basebackup's too)
                user=self.run_as,
                group=self.run_as,
                extra_groups=[] if self.run_as else None,
            )

    def start_haproxy(self) -> None:
        with (self.root / "haproxy.log").open("wb") as log:
            self.haproxy = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(DEPLOY / "haproxy.cfg")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 120) -> None:
        """etcd and HAProxy, then node1 (which initializes the cluster and leads), then
        node2 (cloned from it), until node2 is the synchronous standby."""
        self.prepare()
        self.start_etcd()
        self.start_haproxy()
        self.start_node("node1")
        self.wait(lambda: self.nodes["node1"].status() == 200, timeout, "node1 to lead")
        self.start_node("node2")
        self.wait(lambda: self.sync_standby() == "node2", timeout, "node2 to be the sync standby")

    # --- state ------------------------------------------------------------------------
    def leader(self) -> str | None:
        for name, node in self.nodes.items():
            if node.process is not None and node.process.poll() is None and node.status() == 200:
                return name
        return None

    def sync_standby(self) -> str | None:
        for name, node in self.nodes.items():
            if _get_status(node.api + "/sync") == 200:
                return name
        return None

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}\n{self.log_tails()}")
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    if node.name not in self.crashed:
                        raise ClusterError(f"{node.name} exited\n{self.log_tails()}")
            time.sleep(0.2)

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- URLs ---------------------------------------------------------------------------
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes.values())

    def url(self, user: str, password: str, database: str, *, proxy: bool = False) -> str:
        """The libpq multi-host URL: both nodes, the one that accepts writes chosen; with
        ``proxy``, HAProxy's one address (it forwards to the leader)."""
        hosts = f"127.0.0.1:{HAPROXY_PORT}" if proxy else self.hosts()
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
            f"/{database}?target_session_attrs=read-write"
        )

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url("postgres", self.superuser_password, database)

    # --- faults and the end -------------------------------------------------------------
    def _machine(self, name: str) -> list[psutil.Process]:
        node = self.nodes[name]
        processes = node.postgres_processes()
        if node.process is not None:
            with suppress(psutil.Error):
                processes.append(psutil.Process(node.process.pid))
        return processes

    def crash(self, name: str) -> None:
        """The node's machine dies: Patroni and all its PostgreSQL processes SIGKILLed."""
        node = self.nodes[name]
        self.crashed.add(name)
        victims = self._machine(name)
        for process in victims:
            with suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=10)
        if node.process is not None:
            node.process.wait(timeout=10)

    def freeze(self, name: str) -> None:
        """The node's machine stops answering: Patroni and PostgreSQL SIGSTOPped (a
        :meth:`crash` later is its reboot)."""
        self.crashed.add(name)
        for process in self._machine(name):
            with suppress(psutil.Error):
                process.suspend()

    def restart(self, name: str) -> None:
        """Bring a crashed node back (it rejoins as a standby, rewound if it must be)."""
        self.crashed.discard(name)
        self.start_node(name)

    def close(self) -> None:
        """Stop everything this cluster started, then remove its folder."""
        for name in list(self.crashed):  # frozen ones would not hear a SIGTERM
            with suppress(psutil.Error, subprocess.TimeoutExpired):
                self.crash(name)
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)  # Patroni stops its PostgreSQL
        for node in self.nodes.values():
            if node.process is not None:
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(node.process.pid, signal.SIGKILL)
                    node.process.wait(timeout=10)
            leftovers = node.postgres_processes()
            for process in leftovers:
                with suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
            psutil.wait_procs(leftovers, timeout=10)
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()
            self.haproxy.wait(timeout=10)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def ha_cluster(keep_logs: Path | None = None) -> Iterator[HACluster]:
    """A started cluster under a new /tmp/failover-* folder, stopped and removed after
    (its logs, and those of the processes that wrote theirs there, copied to
    ``keep_logs`` first)."""
    root = Path(tempfile.mkdtemp(prefix="failover-", dir="/tmp"))
    cluster = HACluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        if keep_logs is not None:
            for log in root.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        cluster.close()
