"""The binary COPY reader shared by the public cube and the partner maps: pure logic, no
database (the refresh and map tests read real COPY streams through it)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from app.services.products import copystream

DTYPE = copystream.row_dtype([("unit", ">i4"), ("score", ">f8")])


def stream(rows: list[tuple[int, float]]) -> bytes:
    """What PostgreSQL sends for ``COPY (SELECT unit::int4, score::float8) TO STDOUT
    (FORMAT binary)``."""
    body = b"".join(struct.pack(">hiiid", 2, 4, u, 8, s) for u, s in rows)
    return copystream.SIGNATURE + b"\0\0\0\0" + b"\0\0\0\0" + body + copystream.TRAILER


def read(data: bytes, cuts: list[int], batch_rows: int) -> tuple[list[int], int]:
    """Feeds ``data`` in pieces cut at ``cuts``; the batch sizes seen and the rows read."""
    seen: list[npt.NDArray[Any]] = []

    async def on_batch(rows: npt.NDArray[Any]) -> None:
        assert copystream.layout_ok(rows)
        seen.append(rows)

    async def run() -> int:
        reader = copystream.BinaryRows(DTYPE, on_batch, batch_rows)
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            await reader(data[a:b])
        return await reader.finish()

    total = asyncio.run(run())
    got = np.concatenate(seen) if seen else np.zeros(0, DTYPE)
    assert got["unit"].tolist() == list(range(total))
    return [len(b) for b in seen], total


def test_rows_arrive_whole_in_batches_however_the_stream_is_cut() -> None:
    rows = [(i, i / 4) for i in range(1_000)]
    data = stream(rows)
    sizes, total = read(data, [1, 7, 20, 333, 334, 5_000, len(data) - 1], 128)
    assert total == 1_000
    assert sizes == [128] * 7 + [104]  # batches of batch_rows, never the whole stream
    assert read(stream([]), [], 10) == ([], 0)


def test_a_stream_cut_short_is_an_error_never_a_smaller_answer() -> None:
    data = stream([(i, 1.0) for i in range(50)])
    for end in (len(data) - 2, len(data) - 1, len(data) - 30, 20):
        with pytest.raises(ValueError, match="truncated"):
            read(data[:end], [], 16)


def test_a_row_of_another_layout_is_seen() -> None:
    bad = np.zeros(3, DTYPE)
    bad["fields"], bad["unit_len"], bad["score_len"] = 2, 4, 8
    assert copystream.layout_ok(bad)
    bad["score_len"][1] = -1  # a NULL
    assert not copystream.layout_ok(bad)
