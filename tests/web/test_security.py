"""Security headers and CSRF of the website, in process (no browser)."""

from __future__ import annotations

import httpx

from app.web import security


async def test_hsts_only_over_tls(client: httpx.AsyncClient) -> None:
    plain = await client.get("/")
    assert "strict-transport-security" not in plain.headers
    client.cookies.clear()  # a new visitor: the CSRF cookie is set again, Secure this time
    tls = await client.get("https://nser.test/")
    assert tls.headers["strict-transport-security"].startswith("max-age=")
    assert "secure" in tls.headers["set-cookie"].lower()


async def test_every_page_and_asset_carries_the_policy(client: httpx.AsyncClient) -> None:
    for path in ("/", "/check", "/statistics", "/apply", "/static/site.css"):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
    api = await client.get("/v1/public/geography?level=province")
    assert "content-security-policy" not in api.headers  # the API is not a page


def test_csrf_tokens_are_bound_to_their_cookie() -> None:
    key = security.derive_secret("a secret", "csrf")
    cookie = security.new_csrf_cookie()
    field = security.csrf_token(key, cookie)
    assert security.csrf_valid(key, cookie, field)
    assert not security.csrf_valid(key, security.new_csrf_cookie(), field)
    assert not security.csrf_valid(security.derive_secret("other", "csrf"), cookie, field)
    assert not security.csrf_valid(key, None, field)
    assert not security.csrf_valid(key, cookie, "")
