"""The public answers a process keeps (``PublicCache``): bounded by bytes, and rid of the
answers of refreshes no request asks for any more (bench/soak.py saw them pile up)."""

from __future__ import annotations

from app.services.products import cube
from app.services.products.public import Answer, PublicCache


def answer(size: int) -> Answer:
    return Answer(body=b"x" * size, etag='"t"', media_type="application/json")


def test_a_newer_refresh_drops_the_answers_of_refreshes_before_the_previous_one() -> None:
    cache = PublicCache()
    cache.put((1, "summary"), answer(100))
    cache.put((1, "map"), answer(1000))
    cache.put((2, "summary"), answer(100))
    # One refresh back is kept (a replica that has not replayed refresh 2 still asks for 1).
    assert cache.get((1, "map")) is not None
    assert cache.bytes == 1200
    cache.put((3, "summary"), answer(100))
    assert cache.get((1, "summary")) is None
    assert cache.get((1, "map")) is None
    assert cache.get((2, "summary")) is not None
    assert cache.get((3, "summary")) is not None
    assert cache.bytes == 200
    # A late answer of an old refresh is kept until the next refresh comes in.
    cache.put((1, "late"), answer(10))
    assert cache.get((1, "late")) is not None
    cache.put((4, "summary"), answer(100))
    assert cache.get((1, "late")) is None
    assert cache.get((2, "summary")) is None
    assert cache.bytes == 200


def test_bounded_by_bytes_least_recently_used_first() -> None:
    cache = PublicCache(max_bytes=250)
    cache.put((1, "a"), answer(100))
    cache.put((1, "b"), answer(100))
    assert cache.get((1, "a")) is not None  # now the most recently used
    cache.put((1, "c"), answer(100))
    assert cache.get((1, "b")) is None
    assert cache.get((1, "a")) is not None
    assert cache.bytes == 200


def test_releasing_freed_memory_after_a_refresh_is_harmless() -> None:
    # glibc's malloc_trim where there is one (the refresher calls it after each refresh);
    # nothing at all elsewhere.
    cube.release_freed_memory()
    cube.release_freed_memory()
