"""`nser audit verify` is incremental: each successful run records a checkpoint sealed with
the audit key, and the next one checks only the rows added after it; `--full` walks the
whole chain, ignoring checkpoints.

Each test has a database of its own (its rows and checkpoints are what it is about): the
operator's `nser partners create` writes row 1, each partner look-up one more. The rows go
to the service's chains (NSER_AUDIT_CHAINS); a checkpoint records each chain's head (the
tampering of several chains at once: test_audit_chains.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from chain_oracle import v1_checkpoint_bytes
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

from app.services.audit import keys
from app.settings import DEV_SECRET


@dataclass(frozen=True)
class Log:
    url: str
    partner: dict[str, str]


@pytest.fixture
def log() -> Iterator[Log]:
    """A database of its own whose audit log holds one row (the partner's creation)."""
    with fresh_database() as url:
        yield Log(url, create_partner(url, categories="iii"))


async def _append(log: Log, rows: int, chains: int = 16) -> None:
    """``rows`` more audit rows: audited partner look-ups, appended to ``chains`` chains."""
    settings = make_settings(log.url, token_limits="1000/minute", audit_chains=chains)
    async for c in open_client(settings):
        token = await get_token(c, log.partner["client_id"], log.partner["client_secret"])
        for _ in range(rows):
            r = await c.get("/v1/partner/scores/3520212345673", headers=bearer(token))
            assert r.status_code == 404


def _verify(url: str, *extra: str) -> Any:
    return run_cli(["audit", "verify", *extra], url, check=False)


def _checked(result: Any) -> int:
    found = re.search(r"checked (\d+) rows", result.stdout)
    assert found is not None, result.stdout
    return int(found.group(1))


async def _sql(url: str, *statements: str, table: str = "audit_log") -> None:
    """As the owner, with the table's append-only triggers off (what only the owner or a
    superuser can do)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for sql in statements:
            await conn.execute(sql)
        await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    finally:
        await conn.close()


async def _last_id(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        last: int = await conn.fetchval("SELECT max(id) FROM audit_log")
        return last
    finally:
        await conn.close()


async def test_a_run_checks_only_the_rows_added_since_the_last_one(log: Log) -> None:
    await _append(log, 2)
    first = _verify(log.url)
    assert first.returncode == 0, first.stderr
    assert "audit log intact: 3 rows" in first.stdout
    assert "checked 3 rows from the start" in first.stdout
    assert "checkpoint 1 recorded" in first.stdout

    await _append(log, 2)
    second = _verify(log.url)
    assert second.returncode == 0, second.stderr
    assert "audit log intact: 5 rows" in second.stdout  # the chain's rows, all told
    assert "checked 2 rows added since checkpoint 1 of " in second.stdout
    assert "(which ended at row 3;" in second.stdout
    assert "checkpoint 2 recorded" in second.stdout

    third = _verify(log.url)
    assert third.returncode == 0
    assert _checked(third) == 0
    assert "audit log intact: 5 rows" in third.stdout
    assert "recorded" not in third.stdout  # nothing new: no checkpoint

    full = _verify(log.url, "--full")
    assert full.returncode == 0
    assert "checked 5 rows from the start" in full.stdout
    conn = await asyncpg.connect(log.url)
    try:
        made = await conn.fetch('SELECT last_id, rows, "full" FROM audit_checkpoints ORDER BY id')
    finally:
        await conn.close()
    assert [tuple(row) for row in made] == [(3, 3, True), (5, 5, False), (5, 5, True)]


async def test_an_altered_new_row_is_caught(log: Log) -> None:
    await _append(log, 1)
    assert _verify(log.url).returncode == 0
    await _append(log, 3)
    await _sql(log.url, "UPDATE audit_log SET households = 7 WHERE id = 4")
    broken = _verify(log.url)
    assert broken.returncode == 1
    assert "row 4 was altered" in broken.stderr
    # A failed run records nothing: the next one starts from the same checkpoint.
    await _sql(log.url, "UPDATE audit_log SET households = 0 WHERE id = 4")
    again = _verify(log.url)
    assert again.returncode == 0, again.stderr
    assert _checked(again) == 3


async def test_an_old_row_edited_in_place_is_found_by_full_only(log: Log) -> None:
    # One chain for the look-ups: row 2 has successors in its chain, so it is no chain's
    # head (heads are checked by every run: test_audit_chains.py).
    await _append(log, 3, chains=1)
    assert _verify(log.url).returncode == 0
    await _sql(log.url, "UPDATE audit_log SET households = 9 WHERE id = 2")
    incremental = _verify(log.url)
    # Behind the checkpoint: the incremental run does not read it (its successor still
    # names the hash it had) ...
    assert incremental.returncode == 0
    assert _checked(incremental) == 0
    # ... the full walk does.
    full = _verify(log.url, "--full")
    assert full.returncode == 1
    assert "row 2 was altered" in full.stderr


async def test_a_tampered_checkpoint_is_refused(log: Log) -> None:
    await _append(log, 3)
    assert _verify(log.url).returncode == 0
    # Any change to a checkpoint breaks its seal (here: the row count it carries on).
    await _sql(log.url, "UPDATE audit_checkpoints SET rows = rows + 1", table="audit_checkpoints")
    refused = _verify(log.url)
    assert refused.returncode == 1
    assert "checkpoint 1 was altered or made without the audit key" in refused.stderr
    assert "--full" in refused.stderr
    # The full walk does not rely on checkpoints: the chain itself is intact.
    full = _verify(log.url, "--full")
    assert full.returncode == 0, full.stderr
    # Later runs start from the full walk's own checkpoint.
    await _append(log, 1)
    assert _checked(_verify(log.url)) == 1


async def test_a_checkpoint_made_without_the_key_cannot_hide_an_altered_row(log: Log) -> None:
    """Someone who can write the tables but has no audit key edits row 3 and relinks the
    chain after it, then records a checkpoint at the last row so that runs start past it."""
    await _append(log, 4)
    last = await _last_id(log.url)
    await _sql(
        log.url,
        "UPDATE audit_log SET households = 5, hash = sha256(hash) WHERE id = 3",
        "UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE id = 3) WHERE id = 4",
    )
    await _sql(
        log.url,
        f"""INSERT INTO audit_checkpoints (at, last_id, last_hash, rows, rows_per_key, "full",
                                           key_id, mac)
            SELECT now(), id, hash, 5, '{{}}', true, key_id, sha256(hash)
              FROM audit_log WHERE id = {last}""",
        table="audit_checkpoints",
    )
    refused = _verify(log.url)
    assert refused.returncode == 1
    assert "made without the audit key" in refused.stderr
    full = _verify(log.url, "--full")
    assert full.returncode == 1
    assert "row 3 was altered" in full.stderr


async def test_rows_cut_behind_a_checkpoint_are_caught(log: Log) -> None:
    await _append(log, 2)
    assert _verify(log.url).returncode == 0
    await _sql(log.url, "DELETE FROM audit_log WHERE id = 3")
    cut = _verify(log.url)
    assert cut.returncode == 1
    assert re.search(
        r"row 3, the last one checkpoint 1 verified( of chain \d+)?, is gone", cut.stderr
    )
    # From the start, the shortened chain is a valid one: only the checkpoint tells.
    assert _verify(log.url, "--full").returncode == 0


async def test_the_checkpointed_row_edited_is_caught(log: Log) -> None:
    await _append(log, 2)
    assert _verify(log.url).returncode == 0
    await _sql(log.url, "UPDATE audit_log SET households = 1 WHERE id = 3")
    changed = _verify(log.url)
    assert changed.returncode == 1
    assert "row 3 changed since checkpoint 1 verified it" in changed.stderr
    full = _verify(log.url, "--full")
    assert full.returncode == 1
    assert "row 3 was altered" in full.stderr


async def _checkpoint_as_one_chain_release(url: str) -> None:
    """The checkpoint `nser audit verify` of the release with one chain recorded at the
    log's last row: no heads, sealed with the (default) audit key over its own layout."""
    key = keys.keyring("", DEV_SECRET).current
    conn = await asyncpg.connect(url)
    try:
        last = await conn.fetchrow("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        assert last is not None
        rows: int = await conn.fetchval("SELECT count(*) FROM audit_log")
        cp_id: int = await conn.fetchval(
            "SELECT nextval(pg_get_serial_sequence('audit_checkpoints', 'id'))"
        )
        at = await conn.fetchval("SELECT clock_timestamp()")
        per_key = {key.id: rows}
        mac = key.mac(
            v1_checkpoint_bytes(
                cp_id, at, last["id"], bytes(last["hash"]), rows, per_key, True, key.id
            )
        )
        await conn.execute(
            """INSERT INTO audit_checkpoints (id, at, last_id, last_hash, rows, rows_per_key,
                                              "full", key_id, mac)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, true, $7, $8)""",
            cp_id,
            at,
            last["id"],
            last["hash"],
            rows,
            json.dumps(per_key),
            key.id,
            mac,
        )
    finally:
        await conn.close()


@pytest.fixture
def one_chain_log() -> Iterator[Log]:
    """A database of its own whose row 1 (the partner's creation) is in chain 0, as every
    row was when there was one chain."""
    with fresh_database() as url:
        args = ["partners", "create", "--name", "One chain", "--type", "government"]
        created = run_cli([*args, "--categories", "iii", "--json"], url, NSER_AUDIT_CHAINS="1")
        yield Log(url, json.loads(created.stdout))


async def test_a_checkpoint_of_the_release_with_one_chain_is_resumed(one_chain_log: Log) -> None:
    """After the upgrade to several chains, the first incremental run starts from the last
    checkpoint the previous release recorded (one chain, no heads) and walks every chain."""
    log, url = one_chain_log, one_chain_log.url
    await _append(log, 2, chains=1)  # rows 1-3: the one chain, as that release wrote it
    await _checkpoint_as_one_chain_release(url)
    await _append(log, 6, chains=4)  # this release's rows, in four chains
    resumed = _verify(url)
    assert resumed.returncode == 0, resumed.stderr
    assert "audit log intact: 9 rows" in resumed.stdout
    assert "checked 6 rows added since checkpoint 1 of " in resumed.stdout
    # Its row is checked like any chain's head.
    await _sql(url, "UPDATE audit_log SET households = 3 WHERE id = 3")
    await _sql(url, "DELETE FROM audit_checkpoints WHERE id > 1", table="audit_checkpoints")
    changed = _verify(url)
    assert changed.returncode == 1
    assert "row 3 changed since checkpoint 1 verified it" in changed.stderr
