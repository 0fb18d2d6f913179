"""Behind a TLS proxy: ``nser serve`` takes ``X-Forwarded-Proto`` from NSER_TRUSTED_PROXIES
only, so that pages answered over TLS carry HSTS and Secure cookies, and no client can
claim TLS by sending the header itself."""

from __future__ import annotations

import ipaddress
import os
import uuid
from pathlib import Path

import httpx
import redis
from conftest import REDIS_URL
from server import serve

from app.middleware import forwarded_proto

SECRET = "a-real-secret-for-this-test-only-0123456789abcdef"


def _page(base_url: str, local_address: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=local_address)
    with httpx.Client(transport=transport, base_url=base_url, timeout=10) as client:
        return client.get("/check?lang=en", headers=headers)


def _secure_cookies(response: httpx.Response) -> list[bool]:
    cookies = response.headers.get_list("set-cookie")
    assert cookies, "the page sets its cookies"
    return ["secure" in [part.strip().lower() for part in c.split(";")] for c in cookies]


def test_production_like_serve_honours_only_a_trusted_proxys_proto(
    database_url: str, tmp_path: Path
) -> None:
    prefix = f"nser-test-{uuid.uuid4().hex}"
    # As in production: outside the test environment, with a secret and shared limits.
    env = {key: value for key, value in os.environ.items() if not key.startswith("NSER_")}
    env.update(
        NSER_DATABASE_URL=database_url,
        NSER_ENVIRONMENT="development",
        NSER_IN_PROCESS_WORKERS="0",
        NSER_KEY_ENCRYPTION_SECRET=SECRET,
        NSER_RATE_LIMIT_STORAGE=f"{REDIS_URL}?key_prefix={prefix}",
        # The proxy is 127.0.0.1; a client connecting from 127.0.0.2 is not a proxy.
        NSER_TRUSTED_PROXIES="127.0.0.1/32",
    )
    try:
        with serve(env, tmp_path, workers=2) as server:
            https = {"X-Forwarded-Proto": "https"}
            behind_tls = _page(server.base_url, "127.0.0.1", https)
            assert behind_tls.status_code == 200
            assert "max-age" in behind_tls.headers["strict-transport-security"]
            assert all(_secure_cookies(behind_tls))

            # A client that is not a trusted proxy cannot claim TLS.
            spoofed = _page(server.base_url, "127.0.0.2", https)
            assert spoofed.status_code == 200
            assert "strict-transport-security" not in spoofed.headers
            assert not any(_secure_cookies(spoofed))

            # From the proxy: plain HTTP, or a value that is no scheme, is not TLS.
            for headers in ({}, {"X-Forwarded-Proto": "http"}, {"X-Forwarded-Proto": "ftp"}):
                plain = _page(server.base_url, "127.0.0.1", headers)
                assert "strict-transport-security" not in plain.headers, headers
                assert not any(_secure_cookies(plain)), headers
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        keys = r.keys(f"*{prefix}*")
        if keys:
            r.delete(*keys)


def test_forwarded_proto_rules() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]

    def proto(peer: str | None, *values: str) -> str | None:
        headers = [(b"x-forwarded-proto", value.encode()) for value in values]
        return forwarded_proto(peer, [(b"host", b"nser.test"), *headers], trusted)

    assert proto("10.0.0.1", "https") == "https"
    assert proto("10.0.0.1", "HTTPS") == "https"
    assert proto("10.0.0.1", "http") == "http"
    # The right-most value is the trusted proxy's; what the client sent is left of it.
    assert proto("10.0.0.1", "https, http") == "http"
    assert proto("10.0.0.1", "http", "https") == "https"
    assert proto("10.0.0.1", "ws") is None
    assert proto("10.0.0.1", "https, ") is None
    assert proto("10.0.0.1") is None
    assert proto("203.0.113.9", "https") is None  # not a trusted proxy
    assert proto(None, "https") is None
    assert forwarded_proto("10.0.0.1", [(b"x-forwarded-proto", b"https")], []) is None
