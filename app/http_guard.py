"""The HTTP server's limits on what a client may send: uvicorn's httptools protocol with a
cap on the request head and deadlines for the head and the body (`nser serve` uses it).

uvicorn's httptools protocol has none of these: it keeps a request line and headers of any
size, waits for them as long as a client trickles bytes (a slowloris holds the connection,
and a worker's connection slots, forever), and waits for a declared body that never comes
(``Content-Length: 2147483648`` and silence). This subclass, per connection:

- answers **431** and closes when the request line and headers pass
  ``NSER_HTTP_MAX_HEAD_BYTES``: counted as bytes arrive, so a 1 MB header is refused after
  the limit plus one read, never held whole;
- answers **408** and closes when the head is not complete ``NSER_HTTP_HEAD_TIMEOUT_SECONDS``
  after its first byte (or after the connection opened), however slowly bytes trickle;
- answers **408** (or, when the application has begun its answer, just closes) when a
  body is not complete ``NSER_HTTP_BODY_TIMEOUT_SECONDS`` after its head; the application
  reading it sees the client gone;
- closes the connection after an answer given before the request's body was all read (a
  413 to a 2 GB ``Content-Length``): the rest of that body is never read, and the
  connection is not kept alive for it.

Answers of its own are problem+json like the application's, with ``Connection: close``.
Everything else is uvicorn's (``app.http_guard.GuardedHttpTools`` is passed as ``http``).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import get_settings

# How long a refused connection stays open, dropping what the client still sends, so that
# the client reads the refusal rather than a reset.
LINGER_SECONDS = 2.0


def problem_bytes(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 response: ``status`` with a problem+json body, then close."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
        }
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head = settings.http_max_head_bytes
        self.head_timeout = settings.http_head_timeout_seconds
        self.body_timeout = settings.http_body_timeout_seconds
        self.in_head = True  # between requests, or reading a request's line and headers
        self.head_bytes = 0  # bytes received in this head (counted per read, an upper bound)
        self.head_counted = 0  # the head's bytes as the parser hands them over (exact)
        self.deadline: asyncio.TimerHandle | None = None
        self.refused = False  # answered by this layer: whatever else arrives is dropped

    # --- deadlines -------------------------------------------------------------------
    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` ourselves (unless an answer is under way) and close.

        The close lingers (``LINGER_SECONDS``, reading and dropping what still arrives) so
        that a client still sending reads the answer instead of a connection reset.
        """
        self._disarm()
        if self.refused or self.transport.is_closing():
            return
        self.refused = True
        cycle = self.cycle
        # This request's answer, unless an answer is under way on the connection (this
        # request's, or a previous one's a pipelining client interrupts): then only close.
        write = cycle is None or cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            write = not self.in_head and not cycle.response_started
            # The application, if it is still reading or answering, sees the client gone.
            cycle.disconnected = True
            cycle.message_event.set()
        if not write:
            self.transport.close()
            return
        self.transport.write(problem_bytes(status, detail))
        self._linger()

    def _linger(self) -> None:
        """Close after LINGER_SECONDS, dropping what arrives meanwhile."""
        self.refused = True
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _head_expired(self) -> None:
        self.deadline = None
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the request line and headers did not arrive within {self.head_timeout:g} s",
        )

    def _body_expired(self) -> None:
        self.deadline = None
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the request body did not arrive within {self.body_timeout:g} s",
        )

    def _head_too_large(self) -> None:
        self._refuse(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"the request line and headers are over the {self.max_head}-byte limit",
        )

    # --- protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.transport.is_closing():
            return
        if self.in_head:
            if self.deadline is None:  # the first byte of the next request on this connection
                self._arm(self.head_timeout, self._head_expired)
            self.head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this read: every byte since it began is head.
        if self.in_head and self.head_bytes > self.max_head:
            self._head_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_counted = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.head_counted += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self.head_counted += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        if self.head_counted > self.max_head:
            # The whole head came in reads that also held its end: refused all the same.
            self._head_too_large()
            return
        self.in_head = False
        self._arm(self.body_timeout, self._body_expired)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self._disarm()
        self.in_head = True
        self.head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.refused:
            return
        if self.cycle is not None and self.cycle.more_body:
            # Answered before the body was all read: the rest is never read; close.
            self._linger()
            return
        super().on_response_complete()
