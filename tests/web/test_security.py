"""Security headers and CSRF of the website, in process (no browser)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from conftest import make_settings
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Mount

from app.main import create_app
from app.web import security


@pytest.fixture(scope="module")
async def walk_client(seeded_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (to list its routes) and an in-process client of it."""
    app = create_app(make_settings(seeded_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.11", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
            yield app, c


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


# --- Issue 16, item 7: the error page's links and the headers of every HTML answer -------

# Browsers read a backslash as a slash in http(s) URLs and drop tabs and line breaks, so each
# of these would reach another origin if it were echoed into a link as it came.
HOSTILE_PATHS = [
    "//evil.example/x",
    "/\\evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example/x",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "///evil.example",
    "/%09/evil.example",
    "/.//evil.example",
]
# Attributes whose value the browser loads, follows or posts to.
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data", "ping"}
_STRIPPED = re.compile(r"[\t\n\r]")


def same_origin(value: str) -> bool:
    """Whether a browser resolves ``value`` (an attribute) on the page's own origin: a
    fragment, or a path with a single leading slash and no backslash. The check is written
    for the browser's rules, not from the code under test: C0 controls and spaces at the
    ends are trimmed, tabs and line breaks anywhere are dropped, ``\\`` is ``/``."""
    v = _STRIPPED.sub("", value).strip("".join(chr(c) for c in range(0x21)))
    if "\\" in v:
        return False
    return v.startswith("#") or (v.startswith("/") and not v.startswith("//"))


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []
        self.switch: str | None = None
        # What a CSP without 'unsafe-inline' blocks: the page would not work as sent.
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        if tag == "style" or "style" in names:
            self.inline.append(f"style on <{tag}>")
        self.inline += [f"{name} on <{tag}>" for name in names if name.startswith("on")]
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                for part in value.split(",") if name == "srcset" else [value]:
                    self.found.append((tag, name, part.strip().split(" ")[0]))
        if tag == "a" and "lang-switch" in (dict(attrs).get("class") or ""):
            self.switch = dict(attrs).get("href")


def links_of(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser


def test_the_same_origin_check_sees_what_a_browser_sees() -> None:
    assert same_origin("/check?lang=ur")
    assert same_origin("#main")
    for bad in (
        "//evil.example/x",
        "/\\evil.example",
        "\t//evil",
        "/\t/evil",
        " //evil",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
    ):
        assert not same_origin(bad), bad


@pytest.mark.parametrize("path", HOSTILE_PATHS)
async def test_the_error_page_links_only_to_this_site(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(
        f"http://nser.test{path}?a=1&lang=en", headers={"Accept": "text/html"}
    )
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    links = links_of(answer.text)
    assert links.switch is not None, "the page has no language link"
    assert links.switch.startswith("/"), links.switch
    assert links.switch[1] not in "/\\", links.switch
    assert links.switch.endswith("?a=1&lang=ur"), links.switch
    assert "evil.example" in links.switch  # the same path, on this site
    assert links.found, "no links found on the page"
    foreign = [found for found in links.found if not same_origin(found[2])]
    assert not foreign, foreign


async def test_the_language_link_re_encodes_the_query(client: httpx.AsyncClient) -> None:
    answer = await client.get(
        "http://nser.test//evil.example/x",
        params={"q": '"><script>x</script>', "next": "//evil.example"},
        headers={"Accept": "text/html"},
    )
    assert answer.status_code == 404
    switch = links_of(answer.text).switch
    assert switch == (
        "/evil.example/x?q=%22%3E%3Cscript%3Ex%3C%2Fscript%3E&next=%2F%2Fevil.example&lang=ur"
    )


@given(st.text(min_size=0, max_size=40))
@settings(deadline=None, max_examples=300)
def test_any_request_path_becomes_one_on_this_site(path: str) -> None:
    from app.web.security import local_path

    made = local_path("/" + path)
    assert same_origin(made), made
    assert made.startswith("/")
    assert made[1:2] not in ("/", "\\"), made
    assert all(0x21 <= ord(c) < 0x7F for c in made), made  # ASCII, nothing a browser strips


def _sample(name: str) -> str:
    return {"reference": "DSR-2026-000001", "name": "swagger-ui.css"}.get(name, "x")


def _get_paths(app: FastAPI) -> list[str]:
    """Every GET path of the app (parameters filled in), and one file of each mount."""
    paths = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if isinstance(route.original_route, Mount):
            paths.append(f"{path}/site.css")
        elif "GET" in (route.methods or ()):
            paths.append(re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: _sample(m[1]), path))
    return paths


async def test_every_html_answer_carries_the_policy_and_framing_headers(
    walk_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, c = walk_client
    requests: list[tuple[str, str]] = [("GET", path) for path in _get_paths(app)]
    assert len(requests) > 40  # the walk covers the API as well as the site
    requests += [
        ("GET", "/no-such-page"),
        ("GET", "//evil.example/x"),
        ("GET", "/?lang=fr"),  # 422
        ("POST", "/"),  # 405
        ("GET", "/docs?x=1"),
        ("GET", "/apply/status/DSR-2026-000001"),
        ("GET", "/grievance/status/GRV-2026-000001"),
    ]
    html: dict[str, int] = {}
    for method, path in requests:
        answer = await c.request(method, f"http://nser.test{path}", headers={"Accept": "text/html"})
        assert answer.status_code < 500, (path, answer.status_code, answer.text[:300])
        kind = answer.headers.get("content-type", "")
        if not kind.startswith(("text/html", "application/xhtml+xml", "image/svg+xml")):
            continue
        html[f"{method} {path}"] = answer.status_code
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, (path, csp)
        assert "default-src 'none'" in csp, (path, csp)
        assert "'unsafe-inline'" not in csp, (path, csp)
        assert "'unsafe-eval'" not in csp, (path, csp)
        assert answer.headers.get("x-frame-options") == "DENY", path
        assert answer.headers.get("x-content-type-options") == "nosniff", path
        # And nothing on the page points to another origin.
        links = links_of(answer.text)
        foreign = [found for found in links.found if not same_origin(found[2])]
        assert not foreign, (path, foreign)
        assert not links.inline, (path, links.inline)
    for expected in (
        "GET /",
        "GET /docs",
        "GET /docs/oauth2-redirect",
        "GET /no-such-page",
        "GET //evil.example/x",
        "GET /check",
        "GET /grievance",
        "GET /grievance/status/GRV-2026-000001",
        "POST /",
    ):
        assert expected in html, (expected, sorted(html))
    assert html["GET /no-such-page"] == 404
    assert html["POST /"] == 405
