"""The soak's users, for locust (``bench/soak.py`` runs ``locust -f`` on this file, headless).

Every user kind is one kind of caller of the service. Each request is named by its kind
(``public: score API``, ``partner: NDJSON stream``…): that name is the row of the soak's
table. A request succeeds when its status is one the kind expects (a public look-up of a
missing CNIC is 404, the scraper's look-ups past the per-IP limit are 429); anything else
counts as a locust failure, and every status is recorded.

``bench/soak.py`` writes a JSON file (``SOAK_CONFIG``) with what the users need: the
credentials, CNICs, households and geography codes of the registry; at the end this file
writes every request (seconds since the start, name, status, milliseconds) and every update
batch sent (id, records, each record's phone) to ``SOAK_OUT``, for ``bench/soak.py`` to
report and check.

The public callers come from their own addresses (``X-Forwarded-For``, the service trusting
127.0.0.1 as its proxy), as people would: each has its own fair-usage budget.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from gevent.lock import BoundedSemaphore
from locust import FastHttpUser, between, constant, events, task
from locust.contrib.fasthttp import LocustBadStatusCode

CONFIG: dict[str, Any] = json.loads(open(os.environ["SOAK_CONFIG"]).read())
STARTED = time.monotonic()
SAMPLES: list[tuple[float, str, int, float]] = []
BATCHES: list[dict[str, Any]] = []
_ips = itertools.count(1)
_households = iter(CONFIG["update_households"])  # each household updated at most once
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
TOKEN_REFRESH_SECONDS = 600.0  # tokens live 900 s: ask for a new one well before
# One token per client, shared by its users (a partner's systems reuse theirs until shortly
# before it expires, as docs/api.md asks): client kind -> (token, when it was issued).
TOKENS: dict[str, tuple[str, float]] = {}
_token_lock = BoundedSemaphore()


@events.quitting.add_listener
def _dump(**_: Any) -> None:
    with open(os.environ["SOAK_OUT"], "w") as out:
        json.dump({"samples": SAMPLES, "batches": BATCHES}, out)


def _address() -> str:
    n = next(_ips)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


class Caller(FastHttpUser):
    """A user whose requests name their kind and list the statuses they expect."""

    abstract = True
    connection_timeout = 30.0
    network_timeout = 120.0
    client_kind: str | None = None  # "partner" or "staff": gets a bearer token

    def on_start(self) -> None:
        self.rng = random.Random()
        self.ip = _address()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"X-Forwarded-For": self.ip, **(extra or {})}
        if self.client_kind:
            out["Authorization"] = f"Bearer {self.token(self.client_kind)}"
        return out

    def token(self, kind: str) -> str:
        with _token_lock:
            token, issued = TOKENS.get(kind, ("", 0.0))
            if time.monotonic() - issued > TOKEN_REFRESH_SECONDS:
                fresh = self.fetch_token(kind)
                if fresh:  # else the next request asks again
                    token = fresh
                    TOKENS[kind] = (fresh, time.monotonic())
        return token

    def fetch_token(self, kind: str) -> str | None:
        credentials = CONFIG[kind]
        answer = self.call(
            "POST",
            "/v1/auth/token",
            f"{kind}: token",
            data=urlencode(
                {
                    "grant_type": "client_credentials",
                    "client_id": credentials["client_id"],
                    "client_secret": credentials["client_secret"],
                }
            ),
            headers={
                "X-Forwarded-For": self.ip,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        if answer is not None and answer.status_code == 200:
            return str(answer.json()["access_token"])
        return None

    def call(
        self,
        method: str,
        path: str,
        name: str,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One request: a success when its status is in ``expect``; the response, or None
        when the connection failed."""
        started = time.perf_counter()
        with self.client.request(
            method,
            path,
            name=name,
            headers=headers if headers is not None else self.headers(),
            catch_response=True,
            **kwargs,
        ) as answer:
            elapsed_ms = (time.perf_counter() - started) * 1000
            # A transport error (refused, reset, a stream cut short): status 0, whatever
            # status line came before it.
            broken = answer.request_meta.get("exception")
            if isinstance(broken, LocustBadStatusCode):  # an answer, only not a 2xx/3xx
                broken = None
            status = 0 if broken is not None else int(answer.status_code or 0)
            SAMPLES.append((round(time.monotonic() - STARTED, 3), name, status, elapsed_ms))
            if status in expect:
                answer.success()
            else:
                answer.failure(f"status {status}: {broken!r}" if broken else f"status {status}")
            return answer if status else None

    def cnic(self) -> str:
        return str(self.rng.choice(CONFIG["cnics"]))


class PublicApi(Caller):
    """A program or a person calling the public API: look-ups (one in ten of a CNIC no one
    holds), summaries, maps, the geography, and now and then a grievance."""

    weight = 10
    wait_time = between(1, 4)

    @task(6)
    def lookup(self) -> None:
        cnic = self.cnic() if self.rng.random() < 0.9 else self.rng.choice(CONFIG["missing"])
        self.call("GET", f"/v1/public/scores/{cnic}", "public: score API", (200, 404))

    @task(2)
    def summary(self) -> None:
        if self.rng.random() < 0.5:
            params = {"group_by": "province,poverty_band,gender"}
        else:
            params = {
                "group_by": "district,poverty_band",
                "province": self.rng.choice(CONFIG["provinces"]),
            }
        self.call("GET", "/v1/public/summaries", "public: summaries API", params=params)

    @task(2)
    def public_map(self) -> None:
        params = {"resolution": str(self.rng.choice((3, 4, 5)))}
        self.call("GET", "/v1/public/maps/poverty_rate", "public: map API", params=params)

    @task(1)
    def geography(self) -> None:
        self.call(
            "GET",
            "/v1/public/geography",
            "public: geography API",
            params={"level": "district", "parent": self.rng.choice(CONFIG["provinces"])},
        )

    @task(1)
    def grievance(self) -> None:
        filed = self.call(
            "POST",
            "/v1/public/grievances",
            "public: file grievance",
            (201,),
            json={"cnic": self.cnic(), "reason": "wrong_assets", "details": "soak"},
        )
        if filed is not None and filed.status_code == 201:
            self.call("GET", filed.json()["status_url"], "public: grievance status")


class Website(Caller):
    """A visitor of the website: the home page, a check by CNIC (CSRF), the statistics and
    map pages and the map's picture, in English or Urdu."""

    weight = 8
    wait_time = between(1, 4)

    def on_start(self) -> None:
        super().on_start()
        self.lang = self.rng.choice(("en", "ur"))
        self.csrf = ""

    @task(2)
    def home(self) -> None:
        self.call("GET", f"/?lang={self.lang}", "web: home")

    @task(4)
    def check(self) -> None:
        if not self.csrf:
            page = self.call("GET", f"/check?lang={self.lang}", "web: check form")
            found = CSRF.search(page.text or "") if page is not None else None
            if found is None:
                return
            self.csrf = found.group(1)
        self.call(
            "POST",
            f"/check?lang={self.lang}",
            "web: check (POST)",
            (200, 404),
            data=urlencode({"csrf_token": self.csrf, "cnic": self.cnic()}),
            headers=self.headers({"Content-Type": "application/x-www-form-urlencoded"}),
        )

    @task(2)
    def statistics(self) -> None:
        province = self.rng.choice(["", *CONFIG["provinces"]])
        self.call(
            "GET", f"/statistics?lang={self.lang}&province={province}", "web: statistics page"
        )

    @task(2)
    def map_page(self) -> None:
        province = self.rng.choice(["", *CONFIG["provinces"]])
        measure = self.rng.choice(("poverty_rate", "households", "mean_pmt_score"))
        self.call(
            "GET",
            f"/map?lang={self.lang}&province={province}&measure={measure}",
            "web: map page",
        )
        self.call(
            "GET",
            f"/v1/public/maps/{measure}?format=png&resolution=5",
            "web: map picture (PNG)",
        )


class Scraper(Caller):
    """One address asking look-ups as fast as it may: past the per-IP limit it is answered
    429, which is what it should get (expected, not an error)."""

    fixed_count = 1
    wait_time = constant(0.2)

    @task
    def lookup(self) -> None:
        self.call("GET", f"/v1/public/scores/{self.cnic()}", "scraper: score API", (200, 429))


class Partner(Caller):
    """A partner's systems: score look-ups, beneficiary pages walked by cursor, NDJSON
    streams of a district, summaries and maps of a province."""

    weight = 4
    wait_time = between(0.5, 3)
    client_kind = "partner"

    @task(4)
    def score(self) -> None:
        self.call("GET", f"/v1/partner/scores/{self.cnic()}", "partner: score", (200, 404))

    @task(3)
    def pages(self) -> None:
        params: dict[str, Any] = {
            "district": self.rng.choice(CONFIG["districts"]),
            "limit": "100",
            "score_max": "40",
        }
        for _ in range(3):
            page = self.call(
                "GET", "/v1/partner/beneficiaries", "partner: beneficiary page", params=params
            )
            cursor = (
                page.json().get("next_cursor")
                if page is not None and page.status_code == 200
                else None
            )
            if not cursor:
                break
            params["cursor"] = cursor

    @task(2)
    def stream(self) -> None:
        params = {"district": self.rng.choice(CONFIG["districts"]), "score_max": "32"}
        self.call(
            "GET",
            "/v1/partner/beneficiaries",
            "partner: NDJSON stream",
            params=params,
            headers=self.headers({"Accept": "application/x-ndjson"}),
        )

    @task(1)
    def summary(self) -> None:
        params = {
            "group_by": "district,poverty_band,gender",
            "province": self.rng.choice(CONFIG["provinces"]),
        }
        # 409: the differencing control (a selection a few households away from an earlier one).
        self.call("GET", "/v1/partner/summaries", "partner: summaries", (200, 409), params=params)

    @task(1)
    def partner_map(self) -> None:
        params = {"resolution": "6", "province": self.rng.choice(CONFIG["provinces"])}
        self.call("GET", "/v1/partner/maps/poverty_rate", "partner: map", (200, 409), params=params)


class Eligibility(Caller):
    """A programme's system asking, CNIC by CNIC, whether a household is eligible."""

    weight = 3
    wait_time = between(0.5, 2)
    client_kind = "partner"

    @task
    def eligible(self) -> None:
        programme = self.rng.choice(CONFIG["programmes"])
        self.call(
            "GET",
            f"/v1/partner/programmes/{programme}/eligibility/{self.cnic()}",
            "partner: eligibility by CNIC",
            (200, 404),
        )


class Updates(Caller):
    """A partner sending update batches (phone changes, and a few re-surveys that change
    what the public products count) and polling each one until it is done."""

    fixed_count = 1
    wait_time = constant(float(CONFIG["batch_every"]))
    client_kind = "partner"

    def on_start(self) -> None:
        super().on_start()
        self.pending: list[str] = []

    @task
    def send(self) -> None:
        for batch_id in list(self.pending):
            polled = self.call(
                "GET",
                f"/v1/partner/updates/{batch_id}",
                "partner: update batch status",
                params={"results": "false"},
            )
            if (
                polled is not None
                and polled.status_code == 200
                and polled.json()["status"] == "done"
            ):
                self.pending.remove(batch_id)
        records: list[dict[str, Any]] = []
        phones: dict[str, str] = {}
        for i in range(int(CONFIG["batch_records"])):
            household = next(_households, None)
            if household is None:
                break
            ref = f"r{i}"
            if self.rng.random() < float(CONFIG["survey_share"]):
                records.append(
                    {
                        "ref": ref,
                        "kind": "household_survey",
                        "household_id": household,
                        "indicators": {
                            "rooms": self.rng.randint(1, 8),
                            "cows": self.rng.randint(0, 4),
                        },
                    }
                )
            else:
                phone = f"+92300{self.rng.randrange(10**7):07d}"
                records.append(
                    {"ref": ref, "kind": "phone_change", "household_id": household, "phone": phone}
                )
                phones[ref] = phone
        if not records:
            return
        answer = self.call(
            "POST",
            "/v1/partner/updates",
            "partner: update batch (POST)",
            (202,),
            json={"records": records},
            headers=self.headers({"Idempotency-Key": uuid.uuid4().hex}),
        )
        if answer is not None and answer.status_code == 202:
            batch_id = answer.json()["batch_id"]
            self.pending.append(batch_id)
            BATCHES.append(
                {
                    "batch_id": batch_id,
                    "records": len(records),
                    "households": {r["ref"]: r["household_id"] for r in records},
                    "phones": phones,
                }
            )


class Staff(Caller):
    """An NSER-MU officer (also Secretary and M&E): the work queues, the requests, reports,
    household histories and score explanations, and the grievances the public files:
    triaged, then resolved (or rejected when they matched no household)."""

    fixed_count = 1
    wait_time = between(1, 3)
    client_kind = "staff"

    @task(2)
    def my_work(self) -> None:
        self.call("GET", "/v1/staff/my-work", "staff: my work", params={"limit": "25"})

    @task(1)
    def requests(self) -> None:
        self.call("GET", "/v1/staff/requests", "staff: requests list", params={"limit": "50"})

    @task(1)
    def report(self) -> None:
        name = self.rng.choice(("updates", "grievances", "requests", "data-shared"))
        self.call("GET", f"/v1/staff/reports/{name}", "staff: report")

    @task(2)
    def history(self) -> None:
        household = self.rng.choice(CONFIG["households"])
        self.call("GET", f"/v1/households/{household}/history", "staff: household history")

    @task(1)
    def explanation(self) -> None:
        household = self.rng.choice(CONFIG["households"])
        self.call(
            "GET",
            f"/v1/staff/households/{household}/score-explanation",
            "staff: score explanation",
        )

    @task(3)
    def grievance(self) -> None:
        listed = self.call(
            "GET",
            "/v1/staff/grievances",
            "staff: grievances list",
            params={"status": "received", "limit": "5"},
        )
        if listed is None or listed.status_code != 200 or not listed.json()["items"]:
            return
        item = listed.json()["items"][-1]  # filed longest ago of the page
        path = f"/v1/staff/grievances/{item['grievance_id']}"
        self.call("GET", path, "staff: grievance")
        self.call(
            "POST", f"{path}/actions/triage", "staff: grievance action", json={"notes": "soak"}
        )
        closing = "resolve" if item["household_id"] is not None else "reject"
        self.call(
            "POST",
            f"{path}/actions/{closing}",
            "staff: grievance action",
            json={"reasons": "Checked against the registry", "notes": "soak"},
        )
