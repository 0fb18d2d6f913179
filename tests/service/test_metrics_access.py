"""``/metrics`` is not public: off unless NSER_METRICS_TOKEN is set, then only with that token."""

from __future__ import annotations

import base64

import pytest
from conftest import make_settings, open_client
from pydantic import ValidationError

TOKEN = "scrape-token-0123456789abcdefghijklmnopqrstuv"


async def test_metrics_are_off_without_a_token(database_url: str) -> None:
    async for client in open_client(make_settings(database_url)):
        await client.get("/healthz")
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert "nser_http" not in response.text


async def test_metrics_answer_only_the_token(database_url: str) -> None:
    async for client in open_client(make_settings(database_url, metrics_token=TOKEN)):
        await client.get("/healthz")
        basic = base64.b64encode(f"prometheus:{TOKEN}".encode()).decode()
        refused = [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            {"Authorization": f"Basic {basic}"},
            {"Authorization": TOKEN},
        ]
        for headers in refused:
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
            assert "nser_http" not in response.text
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain")
        assert (
            'nser_http_requests_total{method="GET",route="/healthz",status="200"}' in allowed.text
        )
        # The scheme is case-insensitive (RFC 7235).
        lower = await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
        assert lower.status_code == 200


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="NSER_METRICS_TOKEN"):
        make_settings("postgresql://unused@127.0.0.1:1/unused", metrics_token="short")
