"""Helpers for tests of partner access: create partners by the CLI, fetch tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
from conftest import run_cli

_LIST_OPTIONS = ("categories", "dimensions", "update_kinds")


def create_partner(url: str, **opts: Any) -> dict[str, str]:
    """``nser partners create ... --json`` with sensible defaults; returns its JSON.

    Keyword arguments map to options (``update_kinds`` -> ``--update-kinds``); list values
    of ``categories``/``dimensions``/``update_kinds`` are joined with commas and ``geo`` may
    be a list (one ``--geo`` per code).
    """
    opts = {"name": "Test Programme", "type": "government", "categories": "iii,iv,v,vi", **opts}
    args = ["partners", "create", "--json"]
    for key, value in opts.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "geo":
            codes = [value] if isinstance(value, str) else list(value)
            for code in codes:
                args += [flag, code]
        elif key in _LIST_OPTIONS and not isinstance(value, str):
            args += [flag, ",".join(value)]
        else:
            args += [flag, str(value)]
    result = run_cli(args, url)
    created: dict[str, str] = json.loads(result.stdout)
    return created


def create_staff(url: str, name: str = "Test Staff", role: str = "officer") -> dict[str, str]:
    """``nser staff create --role ROLE --json``: a staff client's scopes are its role's."""
    result = run_cli(["staff", "create", "--name", name, "--role", role, "--json"], url)
    created: dict[str, str] = json.loads(result.stdout)
    return created


async def get_token(
    client: httpx.AsyncClient, client_id: str, secret: str, scope: str | None = None
) -> str:
    """A bearer token from ``POST /v1/auth/token``; fails the test on anything but 200."""
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if scope is not None:
        data["scope"] = scope
    response = await client.post("/v1/auth/token", data=data)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
