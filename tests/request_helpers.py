"""Helpers for tests of data-sharing requests: a valid form, staff actions over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
from conftest import run_cli
from partner_helpers import bearer, get_token

ROLES = ("officer", "committee", "secretary", "me", "admin")


def form(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "organization": {
            "name": "Punjab Social Protection Authority",
            "type": "government",
            "contact_name": "Ayesha Khan",
            "email": "ayesha.khan@pspa.example.pk",
            "phone": "+92 42 1234567",
            "address": "1 Lower Mall, Lahore",
        },
        "purpose": "Targeting a provincial cash transfer for ultra-poor households",
        "extent_of_use": "The programme's MIS team of four analysts",
        "period": {"start": "2027-01-01", "end": "2027-12-31"},
        "storage": "vpn",
        "categories": ["iv", "v"],
        "dimensions": ["education", "room_count"],
        "geography": [],
        "own_surveys": "",
        "methodology": "Eligibility by PMT band, verified in the field",
        "security_measures": "Encrypted disks, role-based access, no copies outside the VPN",
    }
    body.update(overrides)
    return body


async def act(
    c: httpx.AsyncClient, who: dict[str, str], rid: str, action: str, body: dict[str, Any]
) -> httpx.Response:
    return await c.post(f"/v1/staff/requests/{rid}/actions/{action}", json=body, headers=who)


async def staff_by_role(
    client: httpx.AsyncClient, url: str, prefix: str = "Staff"
) -> dict[str, dict[str, str]]:
    """One staff member per role, made by ``nser staff create --role``: its auth headers."""
    out = {}
    for role in ROLES:
        args = ["staff", "create", "--name", f"{prefix} {role}", "--role", role, "--json"]
        made = json.loads(run_cli(args, url).stdout)
        assert made["staff_id"] == made["client_id"]
        out[role] = bearer(await get_token(client, made["client_id"], made["client_secret"]))
    return out
