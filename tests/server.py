"""Run ``nser serve`` as a real process for the tests about processes (workers, Redis, logs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports_in(ports: range, n: int) -> list[int]:
    """``n`` ports of ``ports`` free now, for servers whose ports a test's range reserves
    (so that modules running side by side never meet)."""
    found = []
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"fewer than {n} free ports in {ports.start}-{ports.stop - 1}")


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(orjson.loads(raw))
        return lines

    def access_lines(self) -> list[dict[str, object]]:
        return [line for line in self.log_lines() if line.get("logger") == "nser.access"]


@contextmanager
def serve(
    env: dict[str, str],
    tmp: Path,
    *,
    workers: int = 2,
    startup_timeout: float = 60,
    args: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[Server]:
    """Start ``nser serve [ARGS]`` on a free port (or ``port``, for a test whose settings
    must name it first), wait until /healthz answers, stop it after."""
    port = port or free_port()
    log_path = tmp / f"serve-{port}.log"
    full_env = {**os.environ, "NSER_ENVIRONMENT": "test", "NSER_LOG_JSON": "true", **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_up(server, startup_timeout)
        yield server
    finally:
        _stop(process)


def _wait_until_up(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"nser serve exited early:\n{server.log_path.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nser serve did not start in {timeout} s:\n{server.log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL to the whole process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    try:  # workers left behind by a crashed master
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
