"""External anchors of the audit chain (NSER_AUDIT_ANCHOR_DIR): every chain's head and rows,
signed with the audit key's anchor key, in files outside the database.

A hash chain cut back at its end, or emptied, is still a valid chain, and the checkpoints
can go with it; `nser audit verify` checks the newest anchor and fails when a chain no
longer reaches its anchored head, naming the chain and the rows it lacks. An anchor file
altered, unsigned or copied under a later name fails too. Anchors are written by `nser
audit anchor`, by `nser worker` and at every key rotation.

The tests share one database and its partner; each starts with an empty audit log (no
checkpoints) and an anchor directory of its own, then appends its rows (partner look-ups).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

from app.services.audit.anchor import DirectoryStore


@dataclass(frozen=True)
class Log:
    url: str
    partner: dict[str, str]
    anchors: Path


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, dict[str, str]]]:
    with fresh_database() as url:
        yield url, create_partner(url, categories="iii")


@pytest.fixture
async def log(database: tuple[str, dict[str, str]], tmp_path: Path) -> Log:
    """An empty audit log (and no checkpoints) and an anchor directory of its own."""
    url, partner = database
    await _as_owner(url, "TRUNCATE audit_log, audit_checkpoints")
    return Log(url, partner, tmp_path / "anchors")


async def _append(log: Log, rows: int) -> None:
    """``rows`` more audit rows (partner look-ups), over the service's 16 chains."""
    settings = make_settings(log.url, token_limits="1000/minute")
    async for c in open_client(settings):
        token = await get_token(c, log.partner["client_id"], log.partner["client_secret"])
        for _ in range(rows):
            r = await c.get("/v1/partner/scores/3520212345673", headers=bearer(token))
            assert r.status_code == 404


def _cli(log: Log, *args: str) -> Any:
    return run_cli(list(args), log.url, check=False, NSER_AUDIT_ANCHOR_DIR=str(log.anchors))


def _anchor(log: Log) -> Path:
    made = _cli(log, "audit", "anchor")
    assert made.returncode == 0, made.stderr
    found = re.search(r"audit anchor written: (\S+) \((\d+) rows", made.stdout)
    assert found is not None, made.stdout
    return Path(found.group(1))


def _files(log: Log) -> list[Path]:
    return sorted(log.anchors.glob("anchor-*.json"))


async def _as_owner(url: str, *statements: str) -> None:
    """As the owner, with the append-only triggers off (what only the owner or a superuser
    can do)."""
    conn = await asyncpg.connect(url)
    try:
        for table in ("audit_log", "audit_checkpoints"):
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for sql in statements:
            await conn.execute(sql)
        for table in ("audit_log", "audit_checkpoints"):
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


def _missing(stderr: str) -> int:
    found = re.search(r"(\d+) rows missing in all", stderr)
    assert found is not None, stderr
    return int(found.group(1))


async def test_the_last_10_rows_deleted_fail_verification(log: Log) -> None:
    await _append(log, 15)
    written = _anchor(log)
    anchor = json.loads(written.read_text())
    last = await _last_id(log.url)
    assert anchor["rows"] == 15
    assert anchor["last_id"] == last
    assert sum(c["rows"] for c in anchor["chains"].values()) == 15
    assert anchor["reason"] == "nser audit anchor"

    await _as_owner(log.url, f"DELETE FROM audit_log WHERE id > {last - 10}")
    # No checkpoint: the walk from the start finds the shortened chains intact.
    broken = _cli(log, "audit", "verify")
    assert broken.returncode == 1, broken.stdout
    assert f"no longer reaches anchor {written.name}" in broken.stderr
    assert re.search(r"chain \d+ lacks \d+ of its \d+ anchored rows", broken.stderr)
    assert _missing(broken.stderr) == 10
    # No checkpoint blesses the shortened log, and no new anchor does either.
    conn = await asyncpg.connect(log.url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM audit_checkpoints") == 0
    finally:
        await conn.close()
    refused = _cli(log, "audit", "anchor")
    assert refused.returncode == 1
    assert "audit anchor not written" in refused.stderr
    assert _missing(refused.stderr) == 10
    assert _files(log) == [written]


async def test_a_truncated_log_fails_verification(log: Log) -> None:
    await _append(log, 5)
    assert _cli(log, "audit", "verify").returncode == 0  # a checkpoint
    _anchor(log)
    await _as_owner(log.url, "TRUNCATE audit_log, audit_checkpoints")
    broken = _cli(log, "audit", "verify", "--full")
    assert broken.returncode == 1, broken.stdout
    assert "audit chain broken: the audit log no longer reaches anchor" in broken.stderr
    assert _missing(broken.stderr) == 5


async def test_a_log_that_grew_since_its_anchor_verifies(log: Log) -> None:
    await _append(log, 4)
    assert _cli(log, "audit", "verify").returncode == 0  # a checkpoint at 4 rows
    await _append(log, 3)
    first = _anchor(log)  # its rows: the checkpoint's and those after its heads
    assert json.loads(first.read_text())["rows"] == 7
    await _append(log, 5)
    ok = _cli(log, "audit", "verify", "--full")
    assert ok.returncode == 0, ok.stderr
    assert "audit log intact: 12 rows" in ok.stdout
    assert f"external anchor {first.name} of " in ok.stdout
    assert "holds: every chain reaches its anchored head (7 rows then)" in ok.stdout
    second = _anchor(log)
    assert second.name > first.name
    assert json.loads(second.read_text())["rows"] == 12
    assert _files(log) == [first, second]
    ok = _cli(log, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert f"external anchor {second.name} of " in ok.stdout


async def test_a_tampered_unsigned_or_renamed_anchor_fails(log: Log) -> None:
    await _append(log, 2)
    written = _anchor(log)
    original = written.read_text()
    anchor = json.loads(original)

    # Any member changed: the signature no longer verifies.
    written.write_text(json.dumps({**anchor, "rows": anchor["rows"] - 1}))
    altered = _cli(log, "audit", "verify")
    assert altered.returncode == 1
    assert f"anchor {written.name} was altered or not signed with audit key" in altered.stderr
    # The same anchor made by someone without the key: re-signed with no signature.
    written.write_text(json.dumps({k: v for k, v in anchor.items() if k != "signature"}))
    unsigned = _cli(log, "audit", "verify")
    assert unsigned.returncode == 1
    assert f"anchor {written.name} is not signed" in unsigned.stderr
    # An older genuine anchor copied under a later name, to hide what the newer one records.
    written.write_text(original)
    await _append(log, 1)
    later = _anchor(log)
    shutil.copyfile(written, later)
    renamed = _cli(log, "audit", "verify")
    assert renamed.returncode == 1
    assert "copied under a later name" in renamed.stderr
    # A refusal stops the writers too.
    assert _cli(log, "audit", "anchor").returncode == 1


async def test_key_rotations_write_an_anchor(log: Log) -> None:
    await _append(log, 3)
    rotated = _cli(log, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["kid"]  # stdout unchanged: the JSON alone
    assert "audit anchor written:" in rotated.stderr
    dci = _cli(log, "keys", "rotate-dci")
    assert dci.returncode == 0, dci.stderr
    new_key = _cli(log, "audit", "new-key")
    assert new_key.returncode == 0, new_key.stderr
    assert re.fullmatch(r"a\d{8}-[0-9a-f]{6}=\S+\n", new_key.stdout)
    reasons = [json.loads(p.read_text())["reason"] for p in _files(log)]
    assert reasons == ["nser keys rotate", "nser keys rotate-dci", "nser audit new-key"]
    assert all(json.loads(p.read_text())["rows"] == 3 for p in _files(log))
    assert _cli(log, "audit", "verify").returncode == 0


async def test_the_worker_anchors_on_its_schedule(log: Log) -> None:
    await _append(log, 3)
    ran = _cli(log, "worker", "--exit-when-idle", "--poll-seconds", "0.1")
    assert ran.returncode == 0, ran.stderr
    (written,) = _files(log)
    anchor = json.loads(written.read_text())
    assert anchor["reason"] == "nser worker"
    assert anchor["rows"] == 3
    # Nothing appended since: the next turn writes nothing.
    assert _cli(log, "worker", "--exit-when-idle", "--poll-seconds", "0.1").returncode == 0
    assert _files(log) == [written]


async def test_without_an_anchor_directory_verify_says_so(log: Log) -> None:
    await _append(log, 1)
    ok = run_cli(["audit", "verify"], log.url)
    assert "no external anchor checked (NSER_AUDIT_ANCHOR_DIR is not set)" in ok.stdout
    assert run_cli(["audit", "anchor"], log.url, check=False).returncode == 1
    # Set, but nothing written there yet: a note, not a failure.
    empty = _cli(log, "audit", "verify")
    assert empty.returncode == 0
    assert f"no external anchor in {log.anchors} yet" in empty.stdout


def test_an_anchor_file_is_never_overwritten(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "a")
    store.put("anchor-20270101T000000000000Z-00000000.json", b"{}")
    with pytest.raises(FileExistsError):
        store.put("anchor-20270101T000000000000Z-00000000.json", b"[]")
    assert store.latest() == ("anchor-20270101T000000000000Z-00000000.json", b"{}")
    assert [p.name for p in (tmp_path / "a").iterdir()] == [
        "anchor-20270101T000000000000Z-00000000.json"
    ]
