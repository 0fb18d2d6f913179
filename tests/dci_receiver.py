"""A partner's DCI callback receiver for the tests: a small ASGI app served by uvicorn on
127.0.0.1 in the test's own event loop, recording every call.

The first path segment under the receiver picks the behaviour:

- ``ok``: 200;
- ``flaky``: 500 for the first ``fail_first`` calls, then 200;
- ``down``: 503 while ``down`` is set, else 200;
- ``redirect``: 302 to ``.../target`` on the same server (which answers 200);
- ``slow``: waits ``slow_seconds``, then 200;
- ``ordered``: 500 the first time it sees a message whose ``message_id`` is in ``fail_once``.

Any other path is a 404. Each call records its path, JSON body, headers and times, and the
receiver keeps the most calls it ever had in progress at once, per behaviour.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from server import free_port
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    started: float
    status: int = 0
    ended: float = 0.0

    @property
    def behaviour(self) -> str:
        return self.path.strip("/").split("/")[1] if self.path.count("/") > 1 else ""

    @property
    def message_id(self) -> str:
        return str(self.body.get("header", {}).get("message_id"))


@dataclass
class Receiver:
    port: int = 0
    scheme: str = "http"
    fail_first: int = 2
    down: bool = True
    slow_seconds: float = 1.0
    fail_once: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    active: Counter[str] = field(default_factory=Counter)
    most_active: Counter[str] = field(default_factory=Counter)
    _flaky_seen: Counter[str] = field(default_factory=Counter)
    _failed_once: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def to(self, path: str) -> list[Call]:
        """The calls whose path starts with ``path``."""
        return [c for c in self.calls if c.path.startswith(path)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        call = Call(
            request.url.path,
            orjson.loads(await request.body() or b"{}"),
            dict(request.headers),
            time.monotonic(),
        )
        self.calls.append(call)
        kind = call.behaviour
        self.active[kind] += 1
        self.most_active[kind] = max(self.most_active[kind], self.active[kind])
        try:
            response = await self._answer(call, kind)
        finally:
            self.active[kind] -= 1
        call.status, call.ended = response.status_code, time.monotonic()
        await response(scope, receive, send)

    async def _answer(self, call: Call, kind: str) -> Response:
        if kind in ("ok", "target"):
            return Response(b'{"message":{"ack_status":"ACK"}}', 200)
        if kind == "flaky":
            self._flaky_seen[call.path] += 1
            return Response(
                status_code=500 if self._flaky_seen[call.path] <= self.fail_first else 200
            )
        if kind == "down":
            return Response(status_code=503 if self.down else 200)
        if kind == "redirect":
            target = call.path.replace("/redirect", "/target")
            return Response(status_code=302, headers={"Location": f"{self.base}{target}"})
        if kind == "slow":
            await asyncio.sleep(self.slow_seconds)
            return Response(status_code=200)
        if kind == "ordered":
            if call.message_id in self.fail_once and call.message_id not in self._failed_once:
                self._failed_once.add(call.message_id)
                return Response(status_code=500)
            return Response(status_code=200)
        return Response(status_code=404)


@asynccontextmanager
async def serve_receiver(
    receiver: Receiver | None = None, *, certfile: str | None = None, keyfile: str | None = None
) -> AsyncIterator[Receiver]:
    """Serve ``receiver`` (a new one by default) on a free port of 127.0.0.1; over TLS with
    ``certfile`` and ``keyfile``."""
    receiver = receiver or Receiver()
    receiver.port = free_port()
    receiver.scheme = "https" if certfile else "http"
    config = uvicorn.Config(
        receiver,
        host="127.0.0.1",
        port=receiver.port,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
