"""A TCP proxy in front of PostgreSQL that cuts a connection right after a COMMIT.

It forwards bytes both ways and reads the client's side of the PostgreSQL protocol message
by message. Once :meth:`CommitCutProxy.arm` is given a marker (bytes of SQL, e.g.
``b"INSERT INTO update_batches"``), the first transaction whose statements (Query or Parse
messages after its ``BEGIN``) contain it is cut at its ``COMMIT``: the COMMIT goes to the
server, the proxy waits until the server answers (so the transaction is committed), drops
that answer and closes both sides. The client is left with a commit whose outcome it does
not know, and the database with the transaction committed.

After a cut the proxy refuses new connections (closes them at once) until
:meth:`CommitCutProxy.release`, so that a test can look at the database before the client
gets back in. It answers a client's SSLRequest itself with "no" so that the stream stays
readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


@dataclass
class CommitCutProxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    cuts: int = 0
    refused: int = 0
    cut_done: asyncio.Event = field(default_factory=asyncio.Event)
    _marker: bytes | None = None
    _refusing: bool = False
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def arm(self, marker: bytes) -> None:
        """Cut the next transaction that mentions ``marker``, at its COMMIT."""
        self._marker = marker
        self.cut_done.clear()

    def release(self) -> None:
        """Accept connections again after a cut."""
        self._refusing = False

    def url(self, url: str) -> str:
        """``url`` (a ``postgresql://user@host:port/db`` URL) through the proxy."""
        scheme, _, rest = url.partition("://")
        user, _, hostpath = rest.rpartition("@")
        _, slash, path = hostpath.partition("/")
        return f"{scheme}://{user}@127.0.0.1:{self.port}{slash}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        link = _Link(self, reader, writer, up_reader, up_writer)
        try:
            await link.run()
        finally:
            self._tasks.discard(task)
            link.close()

    def _should_cut(self, statements: bytes) -> bool:
        return self._marker is not None and self._marker in statements


class _Link:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        proxy: CommitCutProxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.reader, self.writer = reader, writer
        self.up_reader, self.up_writer = up_reader, up_writer
        self.statements = b""  # the SQL of the current transaction so far
        self.cutting = False
        self.server_answered = asyncio.Event()

    def close(self) -> None:
        for w in (self.writer, self.up_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def run(self) -> None:
        down = asyncio.create_task(self._server_to_client())
        try:
            await self._client_to_server()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            down.cancel()
            await asyncio.gather(down, return_exceptions=True)

    async def _client_to_server(self) -> None:
        # Untyped start-up messages first: SSLRequest (answered "N" here), then StartupMessage.
        while True:
            head = await self.reader.readexactly(4)
            (length,) = struct.unpack("!I", head)
            body = await self.reader.readexactly(length - 4)
            code = struct.unpack("!I", body[:4])[0] if len(body) >= 4 else 0
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            self.up_writer.write(head + body)
            await self.up_writer.drain()
            break
        while True:
            head = await self.reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!I", head[1:])[0]
            body = await self.reader.readexactly(length - 4)
            if kind in (b"Q", b"P"):
                sql = body.upper() if kind == b"Q" else body
                if kind == b"Q" and sql.lstrip().startswith(b"BEGIN"):
                    self.statements = b""
                elif (
                    kind == b"Q"
                    and sql.lstrip().startswith(b"COMMIT")
                    and self.proxy._should_cut(self.statements)
                ):
                    await self._cut(head + body)
                    return
                else:
                    self.statements += body
            self.up_writer.write(head + body)
            await self.up_writer.drain()

    async def _cut(self, commit: bytes) -> None:
        """Send the COMMIT, wait for the server's answer (committed), drop it, close."""
        self.proxy._marker = None
        self.proxy._refusing = True
        self.cutting = True
        self.up_writer.write(commit)
        await self.up_writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server_answered.wait(), 30)
        self.proxy.cuts += 1
        self.close()
        self.proxy.cut_done.set()

    async def _server_to_client(self) -> None:
        try:
            while True:
                data = await self.up_reader.read(65536)
                if not data:
                    break
                if self.cutting:
                    self.server_answered.set()
                    continue
                self.writer.write(data)
                await self.writer.drain()
        except OSError:
            pass
        finally:
            if not self.cutting:
                # The server closed: so does the client's side.
                with contextlib.suppress(Exception):
                    self.writer.close()
