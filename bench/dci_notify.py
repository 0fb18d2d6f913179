"""Benchmark: a DCI notification's latency, from an update batch's acknowledgement (202) to
the ``notify`` callback's arrival at a receiver on 127.0.0.1.

    .venv/bin/python bench/dci_notify.py --reuse-db DB        # seeded, migrated (changes it)
    .venv/bin/python bench/dci_notify.py --households 10000   # fresh database

`nser serve` with one in-process worker (it applies the batch, runs the notifier and the
callbacks' delivery loop, at their default poll intervals). A national partner subscribes
to UPDATE events (every household); another sends one phone change per run with
``POST /v1/partner/updates``. Per run:

- ``notify``: from the 202 to the notify of that household at the receiver;
- baseline ``applied``: from the 202 to the change's history row being visible in the
  database (polled every 10 ms): what the notifier and the delivery add is the difference.

Medians of ``--runs`` (5, at least 3); ``ratio`` = notify / applied. Target: notify median
≤ 2 s. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, create_partner, log, nser, service

sys.path.insert(0, str(ROOT))

ALLOW = {"NSER_DCI_ALLOW_HTTP_CALLBACKS": "true", "NSER_DCI_ALLOW_PRIVATE_CALLBACKS": "true"}
TS = "2026-12-13T09:00:00+05:00"


class Arrivals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                at = time.monotonic()
                with arrivals.lock:
                    arrivals.calls.append((at, self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def notified(self, household_id: int) -> float | None:
        with self.lock:
            for at, path, body in self.calls:
                if not path.endswith("/notify"):
                    continue
                for event in body["message"]["notify_event"]:
                    group = event["data"]["reg_records"]
                    if group["group_identifier"][0]["identifier_value"] == str(household_id):
                        return at
        return None

    def count(self, suffix: str) -> int:
        with self.lock:
            return sum(1 for _, path, _ in self.calls if path.endswith(suffix))


def env(url: str) -> dict[str, str]:
    return {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_TOKEN_LIMITS": "100000/minute",
        "NSER_PARTNER_DEFAULT_LIMITS": "100000/minute",
        "NSER_LOG_LEVEL": "WARNING",
        "NSER_IN_PROCESS_WORKERS": "1",
        **ALLOW,
    }


def wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.005)
    raise SystemExit("timed out")


async def applied_at(url: str, history_after: int, household_id: int) -> float:
    conn = await asyncpg.connect(url)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            found = await conn.fetchval(
                "SELECT 1 FROM household_history WHERE id > $1 AND household_id = $2",
                history_after,
                household_id,
            )
            if found:
                return time.monotonic()
            await asyncio.sleep(0.01)
        raise SystemExit("the change was not applied within 30 s")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--reuse-db")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = max(args.runs, 3)
    arrivals = Arrivals()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), arrivals.handler())
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{receiver.server_address[1]}/cb/"
    with bench_database(args.reuse_db, args.households) as url:
        nser(["db", "upgrade"], url)
        subscriber = create_partner(url, "iv")
        nser(
            ["partners", "dci", "set", subscriber["agreement_id"], "--callback-base-url", base_url],
            url,
            **ALLOW,
        )
        updater = create_partner(url, "iii,iv", update_kinds="phone_change")
        ids = asyncio.run(_households(url, runs))
        with service(env(url)) as (_, base):
            sub_token = client_token(base, subscriber)
            upd_token = client_token(base, updater)
            with httpx.Client(base_url=base, timeout=30) as http:
                r = http.post(
                    "/dci/registry/subscribe",
                    headers={"Authorization": f"Bearer {sub_token}"},
                    json=_subscribe(),
                )
                r.raise_for_status()
                wait(lambda: arrivals.count("/on-subscribe"))
                notify_s, applied_s = [], []
                for i, hid in enumerate(ids):
                    mark = asyncio.run(_last_history(url))
                    answer = http.post(
                        "/v1/partner/updates",
                        headers={
                            "Authorization": f"Bearer {upd_token}",
                            "Idempotency-Key": uuid.uuid4().hex,
                        },
                        json={
                            "records": [
                                {
                                    "ref": f"r{i}",
                                    "kind": "phone_change",
                                    "household_id": hid,
                                    "phone": f"0300 {1000000 + i}",
                                }
                            ]
                        },
                    )
                    acked = time.monotonic()
                    answer.raise_for_status()
                    seen = asyncio.run(applied_at(url, mark, hid))
                    arrived = wait(lambda h=hid: arrivals.notified(h))
                    notify_s.append(arrived - acked)
                    applied_s.append(seen - acked)
                    log(
                        f"run {i + 1}: applied {seen - acked:.3f} s, notify {arrived - acked:.3f} s"
                    )
    receiver.shutdown()
    notify = statistics.median(notify_s)
    applied = statistics.median(applied_s)
    print(
        json.dumps(
            {
                "benchmark": "dci_notify",
                "households": args.households if not args.reuse_db else None,
                "runs": runs,
                "notify_median_s": round(notify, 3),
                "applied_median_s": round(applied, 3),
                "notify_s": [round(x, 3) for x in notify_s],
                "ratio": round(notify / applied, 2) if applied else None,
                "target_s": 2.0,
                "ok": notify <= 2.0,
            }
        )
    )


def _subscribe() -> dict[str, Any]:
    return {
        "header": {
            "version": "1.0.0",
            "message_id": uuid.uuid4().hex,
            "message_ts": TS,
            "action": "subscribe",
            "sender_id": "bench.example.org",
            "total_count": 1,
        },
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "subscribe_request": [
                {
                    "reference_id": "r-1",
                    "timestamp": TS,
                    "subscribe_criteria": {
                        "reg_event_type": "UPDATE",
                        "filter_type": "predicate",
                        "filter": [
                            {
                                "expression1": {
                                    "attribute_name": "household_size",
                                    "operator": "ge",
                                    "attribute_value": 0,
                                }
                            }
                        ],
                        "notify_record_type": "Group",
                    },
                }
            ],
        },
    }


async def _households(url: str, n: int) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id FROM households ORDER BY random() LIMIT $1", n)
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _last_history(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM household_history"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
