"""The fault tests' clients: an export read as a client reads it, held mid-body."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import httpx

# The held exports' receive buffer (the kernel doubles it): a few lines of a body of
# megabytes, so the service is still writing it (and inside its snapshot) when the fault
# comes; with the kernel's autotuning the whole body could sit in the client's socket.
HELD_RCVBUF = 16 * 1024


@dataclass
class Held:
    """An export read line by line, paused after its first line until ``hold`` is set."""

    accept: str
    status: int | None = None
    lines: int = 0
    clean_end: bool = False  # the body ended as HTTP framing says a complete body ends
    error: str | None = None
    client_port: int | None = None  # the local port of its connection


async def held_export(
    base: str, token: str, record: Held, first_line: asyncio.Event, hold: asyncio.Event
) -> None:
    """GET /v1/partner/beneficiaries on a connection of its own; what the client saw goes
    into ``record`` (``clean_end``, or the error httpx raised)."""
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, HELD_RCVBUF)]
    )
    headers = {"Authorization": f"Bearer {token}", "Accept": record.accept}
    async with httpx.AsyncClient(base_url=base, timeout=120, transport=transport) as client:
        try:
            async with client.stream("GET", "/v1/partner/beneficiaries", headers=headers) as r:
                record.status = r.status_code
                stream = r.extensions.get("network_stream")
                if stream is not None:
                    record.client_port = stream.get_extra_info("client_addr")[1]
                async for _ in r.aiter_lines():
                    record.lines += 1
                    if not hold.is_set():
                        first_line.set()
                        await hold.wait()
                record.clean_end = True
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            first_line.set()  # also when it failed before its first line
