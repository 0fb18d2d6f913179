"""Fixed-width rows of ``COPY ... TO STDOUT (FORMAT binary)``, in batches, as they arrive.

The products that read every household in scope (the public cube's passes, a partner's
map) stream them from PostgreSQL as binary COPY rather than fetching records: a row is a
few numbers, and numpy reads a batch of them as one structured array. The reader below is
what asyncpg's ``copy_from_query(output=...)`` calls with each chunk of the stream. It
checks the header, cuts whole rows into batches of ``batch_rows`` and hands each batch to
the caller's ``on_batch`` while the rest streams in, so memory follows the batch, never the
registry; :meth:`BinaryRows.finish` hands over the last rows and checks the trailer (a
stream cut short is an error, never a smaller answer).

Every column must be fixed-width and never NULL (``coalesce`` in the query): the dtype
gives each row's field count, each field's length word and its value; the callers check
those against the layout they asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = 19  # signature (11), flags (4), header extension length (4)
TRAILER = b"\xff\xff"
BATCH_ROWS = 50_000


def row_dtype(fields: list[tuple[str, str]]) -> np.dtype[Any]:
    """The layout of a binary COPY row of these (name, big-endian numpy type) fields: the
    field count, then each field's length word (``NAME_len``) and value."""
    items: list[tuple[str, str]] = [("fields", ">i2")]
    for name, kind in fields:
        items += [(f"{name}_len", ">i4"), (name, kind)]
    return np.dtype(items)


def layout_ok(rows: npt.NDArray[Any]) -> bool:
    """Every row has the field count and field lengths its dtype was made for."""
    if not len(rows):
        return True
    names = [n for n in rows.dtype.names or () if n != "fields" and not n.endswith("_len")]
    if not bool(np.all(rows["fields"] == len(names))):
        return False
    return all(bool(np.all(rows[f"{n}_len"] == rows.dtype[n].itemsize)) for n in names)


class BinaryRows:
    """An asyncpg COPY output: whole rows of ``dtype``, ``batch_rows`` at a time, to
    ``on_batch`` (awaited before more of the stream is read)."""

    def __init__(
        self,
        dtype: np.dtype[Any],
        on_batch: Callable[[npt.NDArray[Any]], Awaitable[None]],
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.dtype = dtype
        self.on_batch = on_batch
        self.batch_bytes = batch_rows * dtype.itemsize
        self.buffer = bytearray()
        self.header = False
        self.rows = 0

    async def __call__(self, chunk: bytes) -> None:
        self.buffer += chunk
        if not self.header:
            if len(self.buffer) < HEADER:
                return
            if not self.buffer.startswith(SIGNATURE) or any(self.buffer[15:19]):
                raise ValueError("not a binary COPY stream without header extension")
            del self.buffer[:HEADER]
            self.header = True
        # The last two bytes may be the trailer: they stay until the end.
        while len(self.buffer) >= self.batch_bytes + len(TRAILER):
            await self._dispatch(self.batch_bytes)

    async def _dispatch(self, limit: int | None = None) -> None:
        size = self.dtype.itemsize
        whole = (len(self.buffer) - len(TRAILER)) // size * size
        if limit is not None:
            whole = min(whole, limit)
        if whole <= 0:
            return
        rows = np.frombuffer(bytes(self.buffer[:whole]), dtype=self.dtype)
        del self.buffer[:whole]
        self.rows += len(rows)
        await self.on_batch(rows)

    async def finish(self) -> int:
        """Hand over the last rows; the rows read. Raises ValueError on a stream cut short
        or not made of whole rows."""
        await self._dispatch()
        if not self.header or bytes(self.buffer) != TRAILER:
            raise ValueError("truncated binary COPY stream")
        return self.rows
