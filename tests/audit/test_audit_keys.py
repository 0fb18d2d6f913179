"""The audit chain is keyed: each row's hash is an HMAC-SHA-256 under an audit key kept
outside the database, and names that key (``key_id``).

- rows written before keys (plain SHA-256) still verify, sealed by the migration;
- keys rotate (NSER_AUDIT_KEYS, first appends, all verify) and rows of every key verify;
- a missing key fails verification, naming the key;
- someone with database access but without the key cannot edit a row and recompute a plain
  hash chain over it, however they label the rows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from chain_oracle import rechain_plain, restore, rows, write_unkeyed_rows
from conftest import create_database, drop_database, fresh_database, run_cli

K2 = "k2=" + "second-audit-key-secret-0123456789abcdef"
K3 = "k3=" + "third-audit-key-secret-0123456789abcdef00"


def _partner(url: str, name: str, **env: str) -> dict[str, str]:
    """``nser partners create`` (which appends the operator's audit row) with ``env``."""
    args = ["partners", "create", "--name", name, "--type", "government", "--categories", "iii"]
    created: dict[str, str] = json.loads(run_cli([*args, "--json"], url, **env).stdout)
    return created


def _verify(url: str, **env: str) -> Any:
    # The whole chain each time: these tests edit rows an earlier run has verified.
    return run_cli(["audit", "verify", "--full"], url, check=False, **env)


async def _key_ids(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch("SELECT key_id FROM audit_log ORDER BY id")
        return [row["key_id"] for row in found]
    finally:
        await conn.close()


async def test_rows_from_before_keys_verify_and_the_chain_continues_keyed() -> None:
    url = await asyncio.to_thread(create_database, "0013")  # the release before audit keys
    try:
        conn = await asyncpg.connect(url)
        try:
            await write_unkeyed_rows(conn, ["GET /v1/partner/scores/{cnic}"] * 3)
        finally:
            await conn.close()
        run_cli(["db", "upgrade"], url)
        _partner(url, "After the upgrade")  # the operator's row, appended by this release
        ids = await _key_ids(url)
        assert ids[:3] == ["legacy"] * 3
        # The upgrade sealed the unkeyed rows with a keyed row; the chain goes on keyed.
        assert len(ids) == 5
        assert ids[3] == ids[4] != "legacy"
        conn = await asyncpg.connect(url)
        try:
            seal = await conn.fetchrow("SELECT * FROM audit_log ORDER BY id OFFSET 3 LIMIT 1")
            assert seal is not None
            assert seal["endpoint"].startswith("nser db upgrade")
            assert '"unkeyed_rows": "3"' in seal["filters"]
        finally:
            await conn.close()
        verified = _verify(url)
        assert verified.returncode == 0, verified.stderr
        assert "audit log intact: 5 rows" in verified.stdout
        assert "legacy: 3" in verified.stdout

        # An unkeyed row edited and the plain chain recomputed over it and every row after,
        # all labelled unkeyed: the seal no longer follows.
        conn = await asyncpg.connect(url)
        try:
            saved = await rows(conn)
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
            await conn.execute("UPDATE audit_log SET households = 9 WHERE id = 2")
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
            await rechain_plain(conn, 2, mark_unkeyed="legacy")
            broken = _verify(url)
            assert broken.returncode == 1
            assert "unkeyed" in broken.stderr
            await restore(conn, saved)
            assert _verify(url).returncode == 0
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(drop_database, url)


def test_keys_rotate_and_rows_of_every_key_verify() -> None:
    with fresh_database() as url:
        _partner(url, "Before any rotation")  # the default key
        _partner(url, "Second key", NSER_AUDIT_KEYS=K2)
        new_entry = run_cli(["audit", "new-key"], url).stdout.strip()
        new_id, _, secret = new_entry.partition("=")
        assert len(secret) >= 32
        rotated = f"{new_entry},{K2}"
        _partner(url, "Third key", NSER_AUDIT_KEYS=rotated)
        ids = asyncio.run(_key_ids(url))
        assert ids[1:] == ["k2", new_id]
        assert ids[0].startswith("kes-")

        verified = _verify(url, NSER_AUDIT_KEYS=rotated)
        assert verified.returncode == 0, verified.stderr
        assert "audit log intact: 3 rows" in verified.stdout

        # A key dropped from the setting: the rows it signed cannot be checked, and the
        # verifier says which key is missing rather than calling the row altered.
        missing = _verify(url, NSER_AUDIT_KEYS=new_entry)
        assert missing.returncode == 1
        assert "row 2" in missing.stderr
        assert "'k2'" in missing.stderr
        assert "not configured" in missing.stderr
        # The right id with the wrong secret: the row does not verify.
        wrong = _verify(url, NSER_AUDIT_KEYS=f"{new_entry},k2=" + "x" * 40)
        assert wrong.returncode == 1
        assert "row 2" in wrong.stderr


@pytest.mark.parametrize(
    "value",
    [
        "k2",  # no secret
        "k2=short",  # too short
        "bad id=" + "s" * 40,
        "legacy=" + "s" * 40,  # the unkeyed rows' mark
        f"{K2},{K2}",  # the same id twice
        "kes-0123456789ab=" + "s" * 40,  # a derived key's id that its secret does not give
    ],
)
def test_malformed_audit_keys_stop_the_command_without_showing_the_secret(value: str) -> None:
    unused = "postgresql://unused@127.0.0.1:1/unused"
    result = run_cli(["audit", "verify"], unused, check=False, NSER_AUDIT_KEYS=value)
    assert result.returncode != 0
    assert "NSER_AUDIT_KEYS" in result.stderr
    if "=" in value:
        assert value.split(",")[0].partition("=")[2] not in result.stderr


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    with fresh_database() as url:
        for name in ("One", "Two", "Three", "Four"):
            _partner(url, name)
        yield url


async def test_an_edited_row_fails_even_with_a_recomputed_plain_chain(keyed_url: str) -> None:
    conn = await asyncpg.connect(keyed_url)
    try:
        saved = await rows(conn)
        assert _verify(keyed_url).returncode == 0
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute("UPDATE audit_log SET households = 99 WHERE id = 2")
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
        await rechain_plain(conn, 2)  # every hash from row 2 on, recomputed without the key
        broken = _verify(keyed_url)
        assert broken.returncode == 1
        assert "row 2" in broken.stderr
        await restore(conn, saved)
        assert _verify(keyed_url).returncode == 0
    finally:
        await conn.close()


async def test_keyed_rows_relabelled_unkeyed_fail(keyed_url: str) -> None:
    conn = await asyncpg.connect(keyed_url)
    try:
        saved = await rows(conn)
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute("UPDATE audit_log SET households = 99 WHERE id = 3")
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
        # From the edited row on, claimed to be rows from before audit keys.
        await rechain_plain(conn, 3, mark_unkeyed="legacy")
        broken = _verify(keyed_url)
        assert broken.returncode == 1
        assert "row 3" in broken.stderr
        assert "unkeyed" in broken.stderr
        # The whole log rewritten as unkeyed rows, then the service appends after it.
        await rechain_plain(conn, 1, mark_unkeyed="legacy")
        broken = _verify(keyed_url)
        assert broken.returncode == 1
        assert "unkeyed" in broken.stderr
        _partner(keyed_url, "After the rewrite")
        broken = _verify(keyed_url)
        assert broken.returncode == 1
        assert "unkeyed" in broken.stderr
        await restore(conn, saved)
        assert _verify(keyed_url).returncode == 0
    finally:
        await conn.close()
