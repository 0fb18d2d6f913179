"""The audit log is several independent hash chains (NSER_AUDIT_CHAINS), each under its own
lock: appends run at once, and every chain stays intact however many run together.

Deleting, altering, reordering, inserting or moving a row of any chain is caught by
`nser audit verify`, incremental (from the last checkpoint, which records every chain's
head) and `--full`, naming the first broken row. The layout of the chains (which row
follows which) is read from the table by ``chain_oracle``, so each tampering aims at a row
with a predecessor and a successor in its chain, whichever chains the appends took.

The log: the operator's rows (`nser partners create`, `nser staff create`), then 40 audited
reads of every kind sent at once (partner score look-ups and beneficiary pages, staff
household histories and score explanations), `nser audit verify` (checkpoint 1), and 40
more. Each test tampers, checks, then puts every row back and forgets the checkpoints made
after checkpoint 1.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from chain_oracle import layout, links, rechain_plain, restore, rows
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, create_staff, get_token

from app.services.audit.trail import APPEND_LOCK

CHAINS = 4
READS = 40


@dataclass(frozen=True)
class Log:
    url: str
    saved: list[dict[str, Any]]  # every row, as appended
    checkpoint: int  # the last row checkpoint 1 verified
    reads: int  # rows appended by audited reads

    def chains(self) -> dict[int, list[int]]:
        return layout(self.saved)

    def after_checkpoint(self) -> dict[int, list[int]]:
        return {
            c: [i for i in ids if i > self.heads()[c]] if c in self.heads() else ids
            for c, ids in self.chains().items()
        }

    def heads(self) -> dict[int, int]:
        """Each chain's last row at checkpoint 1."""
        return {
            c: max(i for i in ids if i <= self.checkpoint)
            for c, ids in self.chains().items()
            if min(ids) <= self.checkpoint
        }


async def _reads(url: str, count: int) -> int:
    """``count`` audited reads of four kinds, all sent at once; how many were answered."""
    partner = create_partner(url, categories="iii,iv")
    staff = create_staff(url, "Chains officer")
    settings = make_settings(
        url,
        audit_chains=CHAINS,
        token_limits="1000/minute",
        partner_default_limits="100000/minute",
        staff_read_limits="100000/minute",
    )
    async for c in open_client(settings):
        p = bearer(await get_token(c, partner["client_id"], partner["client_secret"]))
        s = bearer(await get_token(c, staff["client_id"], staff["client_secret"]))
        kinds: list[tuple[str, dict[str, str], int]] = [
            ("/v1/partner/scores/3520212345673", p, 404),
            ("/v1/partner/beneficiaries?limit=5", p, 200),
            ("/v1/households/7/history", s, 404),  # read in a REPEATABLE READ snapshot
            ("/v1/staff/households/7/score-explanation", s, 404),  # so is this one
        ]
        sent = [kinds[i % len(kinds)] for i in range(count)]
        answers = await asyncio.gather(*(c.get(path, headers=h) for path, h, _ in sent))
        for (path, _, status), answer in zip(sent, answers, strict=True):
            assert answer.status_code == status, (path, answer.text)
    return count


def _verify(url: str, *extra: str) -> Any:
    return run_cli(["audit", "verify", *extra], url, check=False)


@pytest.fixture(scope="module")
def log() -> Iterator[Log]:
    with fresh_database() as url:
        reads = asyncio.run(_reads(url, READS))
        first = _verify(url)
        assert first.returncode == 0, first.stderr
        assert "checkpoint 1 recorded" in first.stdout
        reads += asyncio.run(_reads(url, READS))
        saved = asyncio.run(_rows(url))
        checkpoint = asyncio.run(_checkpoint_last_id(url))
        yield Log(url, saved, checkpoint, reads)


async def _rows(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        return await rows(conn)
    finally:
        await conn.close()


async def _checkpoint_last_id(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        last: int = await conn.fetchval("SELECT last_id FROM audit_checkpoints WHERE id = 1")
        return last
    finally:
        await conn.close()


async def _tamper(url: str, *statements: str) -> None:
    """As the owner, with the append-only triggers off (what only the owner can do)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    finally:
        await conn.close()


async def _put_back(log: Log) -> None:
    """Every row as it was, and only checkpoint 1 (a run that passed recorded more)."""
    conn = await asyncpg.connect(log.url)
    try:
        await restore(conn, log.saved)
        assert await rows(conn) == log.saved
        await conn.execute("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
        await conn.execute("DELETE FROM audit_checkpoints WHERE id > 1")
        await conn.execute("ALTER TABLE audit_checkpoints ENABLE TRIGGER USER")
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
async def _as_appended(log: Log) -> None:
    """Each test starts from the log as appended, with checkpoint 1 only."""
    await _put_back(log)


def _of(chain: int) -> str:
    return "" if chain == 0 else f" of chain {chain}"


def _broken(log: Log, *modes: tuple[str, ...]) -> list[str]:
    """Run each verification; each must fail; their messages."""
    said = []
    for mode in modes:
        result = _verify(log.url, *mode)
        assert result.returncode == 1, (mode, result.stdout, result.stderr)
        said.append(result.stderr)
    return said


INCREMENTAL_AND_FULL = ((), ("--full",))


def test_reads_sent_at_once_spread_over_the_chains_and_every_chain_verifies(log: Log) -> None:
    chains = log.chains()
    links(log.saved)  # the stored hashes link each chain's rows in id order
    read_rows = [r for r in log.saved if r["actor_type"] in ("partner", "staff")]
    assert len(read_rows) == log.reads  # one row per audited read, none lost or doubled
    used = {r["chain"] for r in read_rows}
    assert len(used) > 1  # concurrent appends took several chains ...
    assert used <= set(range(CHAINS))  # ... of the service's NSER_AUDIT_CHAINS
    full = _verify(log.url, "--full")
    assert full.returncode == 0, full.stderr
    assert f"audit log intact: {len(log.saved)} rows in {len(chains)} chains" in full.stdout


def _middle(log: Log) -> tuple[int, int, int, int]:
    """A chain with three rows after checkpoint 1, and those rows: (chain, p, r, s)."""
    for chain, ids in sorted(log.after_checkpoint().items(), key=lambda kv: -len(kv[1])):
        if len(ids) >= 3:
            return chain, ids[0], ids[1], ids[2]
    raise AssertionError(f"no chain has three new rows: {log.after_checkpoint()}")


def _other(log: Log, chain: int) -> tuple[int, int]:
    """Another chain with a row after checkpoint 1: (chain, its first new row)."""
    for other, ids in sorted(log.after_checkpoint().items()):
        if other != chain and ids:
            return other, ids[0]
    raise AssertionError("every new row is in one chain")


SWAP = "UPDATE audit_log SET id = -1 WHERE id = {a}; UPDATE audit_log SET id = {a} WHERE id = {b};"
SWAP += " UPDATE audit_log SET id = {b} WHERE id = -1"


def _delete(log: Log) -> tuple[list[str], str]:
    chain, p, r, s = _middle(log)
    return [f"DELETE FROM audit_log WHERE id = {r}"], (
        f"row {s} does not follow row {p}{_of(chain)}: a row was removed, inserted or moved"
    )


def _alter(log: Log) -> tuple[list[str], str]:
    _, _, r, _ = _middle(log)
    return [f"UPDATE audit_log SET households = households + 1 WHERE id = {r}"], (
        f"row {r} was altered"
    )


def _swap_in_chain(log: Log) -> tuple[list[str], str]:
    chain, p, r, s = _middle(log)
    return [SWAP.format(a=r, b=s)], f"row {r} does not follow row {p}{_of(chain)}"


def _swap_across_chains(log: Log) -> tuple[list[str], str]:
    chain, _, r, _ = _middle(log)
    _, q = _other(log, chain)
    return [SWAP.format(a=r, b=q)], f"row {min(r, q)} "


def _move_to_another_chain(log: Log) -> tuple[list[str], str]:
    chain, _, r, _ = _middle(log)
    other, _ = _other(log, chain)
    return [f"UPDATE audit_log SET chain = {other} WHERE id = {r}"], f"row {r} does not follow"


def _insert_forged(log: Log) -> tuple[list[str], str]:
    """A made-up row after a chain's last, linked to it: no audit key, no valid hash."""
    chain, *_ = _middle(log)
    last = log.chains()[chain][-1]
    forged = max(r["id"] for r in log.saved) + 1
    return [
        f"""INSERT INTO audit_log (id, at, actor_type, endpoint, filters, dimensions, households,
                                   members, key_id, chain, prev_hash, hash)
            SELECT {forged}, at, 'staff', endpoint, filters, dimensions, 0, 0, key_id, chain,
                   hash, sha256(hash)
              FROM audit_log WHERE id = {last}"""
    ], f"row {forged} was altered"


def _replay(log: Log) -> tuple[list[str], str]:
    """A real row copied after another chain's last row: its hash names another id."""
    chain, _, r, _ = _middle(log)
    other, _ = _other(log, chain)
    last = log.chains()[other][-1]
    copy = max(row["id"] for row in log.saved) + 1
    columns = (
        "at, actor_type, client_id, agreement_id, organization_id, endpoint, filters, "
        "dimensions, households, members, request_id, key_id, hash"
    )
    return [
        f"""INSERT INTO audit_log (id, chain, prev_hash, {columns})
            SELECT {copy}, {other}, (SELECT hash FROM audit_log WHERE id = {last}), {columns}
              FROM audit_log WHERE id = {r}"""
    ], f"row {copy} was altered"


TAMPERINGS: dict[str, Callable[[Log], tuple[list[str], str]]] = {
    "a row deleted": _delete,
    "a row altered": _alter,
    "two rows of a chain swapped": _swap_in_chain,
    "two rows of two chains swapped": _swap_across_chains,
    "a row moved to another chain": _move_to_another_chain,
    "a row inserted without the key": _insert_forged,
    "a row replayed in another chain": _replay,
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_tampering_with_any_chain_is_caught_incremental_and_full(
    log: Log, tampering: str
) -> None:
    statements, expected = TAMPERINGS[tampering](log)
    await _tamper(log.url, *statements)
    try:
        for said in _broken(log, *INCREMENTAL_AND_FULL):
            assert expected in said, said
    finally:
        await _put_back(log)  # every row as appended (compared there)


async def test_a_chain_moved_whole_to_a_new_number_is_caught(log: Log) -> None:
    """Every row of one chain relabelled as an unused chain: its first row still starts a
    chain (its predecessor is the start), but its HMAC covered its chain."""
    chain = max(log.heads(), key=lambda c: len(log.chains()[c]))
    ids = log.chains()[chain]
    unused = max(log.chains()) + 1
    await _tamper(log.url, f"UPDATE audit_log SET chain = {unused} WHERE chain = {chain}")
    try:
        incremental, full = _broken(log, *INCREMENTAL_AND_FULL)
        assert f"row {ids[0]} was altered" in full
        # The checkpoint's head of that chain is no longer in it.
        head = log.heads()[chain]
        assert f"row {head} changed since checkpoint 1 verified it" in incremental
    finally:
        await _put_back(log)


async def test_every_chain_rewritten_without_the_key_is_caught(log: Log) -> None:
    conn = await asyncpg.connect(log.url)
    try:
        first = log.saved[0]["id"]
        await rechain_plain(conn, first)  # each chain's hashes recomputed as plain SHA-256
        incremental, full = _broken(log, *INCREMENTAL_AND_FULL)
        assert f"row {first} was altered" in full
        assert "changed since checkpoint 1" in incremental
        await restore(conn, log.saved)
        await rechain_plain(conn, first, into_chain0=True)  # one plain chain, as before
        (full,) = _broken(log, ("--full",))
        assert f"row {first} was altered" in full
    finally:
        await conn.close()
        await _put_back(log)


async def test_behind_the_checkpoint_heads_are_checked_and_full_finds_the_rest(
    log: Log,
) -> None:
    # The chain with most rows at checkpoint 1 (40 reads in 4 chains: at least 10).
    chain = max(log.heads(), key=lambda c: sum(i <= log.checkpoint for i in log.chains()[c]))
    head = log.heads()[chain]
    older = [i for i in log.chains()[chain] if i < head]
    assert older
    # A row behind a head, edited in place: the incremental run starts after the heads
    # (their successors still name the hashes they had), only --full reads it.
    await _tamper(log.url, f"UPDATE audit_log SET households = 77 WHERE id = {older[-1]}")
    try:
        incremental = _verify(log.url)
        assert incremental.returncode == 0, incremental.stderr
        (full,) = _broken(log, ("--full",))
        assert f"row {older[-1]} was altered" in full
    finally:
        await _put_back(log)
    # A head edited, then a head deleted: each chain's head is checked.
    await _tamper(log.url, f"UPDATE audit_log SET households = 77 WHERE id = {head}")
    try:
        (said,) = _broken(log, ())
        assert f"row {head} changed since checkpoint 1 verified it" in said
    finally:
        await _put_back(log)
    await _tamper(log.url, f"DELETE FROM audit_log WHERE id = {head}")
    try:
        (said,) = _broken(log, ())
        assert re.search(rf"row {head}, the last one checkpoint 1 verified( of chain \d+)?", said)
        assert "is gone" in said
    finally:
        await _put_back(log)


async def test_an_append_refuses_a_repeatable_read_snapshot(log: Log) -> None:
    """Its snapshot, taken before the chain's lock, could miss the row the previous holder
    of the lock committed: the append would fork the chain. The database refuses it."""
    conn = await asyncpg.connect(make_settings(log.url).database_url)  # the service's role
    try:
        with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
            async with conn.transaction(isolation="repeatable_read"):
                await conn.fetchrow("SELECT * FROM audit_chain_claim($1, 4, 0)", APPEND_LOCK)
        claimed = await conn.fetchrow("SELECT * FROM audit_chain_claim($1, 4, 2)", APPEND_LOCK)
        assert claimed is not None
        assert claimed["claimed"] == 2  # free: the chain asked for
    finally:
        await conn.close()


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_the_number_of_chains_is_checked_at_start(log: Log, value: str) -> None:
    refused = run_cli(["audit", "verify"], log.url, check=False, NSER_AUDIT_CHAINS=value)
    assert refused.returncode != 0
    assert "audit_chains" in (refused.stdout + refused.stderr).lower()
