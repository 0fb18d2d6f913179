"""Security of the website: response headers, the Content-Security-Policy and CSRF tokens.

Every page is served with a CSP that allows only the registry's own origin — no inline
script or style (``unsafe-inline`` is never granted), no frames (``frame-ancestors
'none'``), forms posting only back to the registry — plus ``X-Frame-Options: DENY``,
``X-Content-Type-Options``, ``Referrer-Policy: no-referrer`` and, when the request came over
TLS (directly or through a trusted proxy that said so), ``Strict-Transport-Security``.
"Every page" is every answer a browser would render as a document, whatever its path: the
website's pages and files, the API docs (``/docs``), and the error pages of any address
(a browser's 404 for an unknown path is a page too).

Links built from the request's own path go through :func:`local_path`, so that an address
such as ``//evil.example/x`` cannot become a link to another site.

CSRF: each browser gets a random ``nser_csrf`` cookie (``SameSite=Strict``, ``HttpOnly``);
every form carries ``HMAC(secret, cookie)`` in a hidden field. A POST is accepted only if
the field matches the cookie it came with (signed double-submit), so another site can
neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; manifest-src 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"
CSRF_COOKIE = "nser_csrf"
CSRF_FIELD = "csrf_token"

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]


# Media types a browser renders as a document (and so could frame, or run script in).
_DOCUMENTS = (b"text/html", b"application/xhtml+xml", b"image/svg+xml")
_SLASHES = re.compile(r"/+")


def _is_document(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower().lstrip().startswith(_DOCUMENTS)
    return False


class WebSecurityHeaders:
    """Pure ASGI: adds the headers above to every answer of the paths it is given, and to
    every document (HTML, XHTML, SVG) the app answers on any other path."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    def _covers(self, path: str) -> bool:
        return path == "/" or path.startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        covered = self._covers(scope["path"])
        tls = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not covered and not _is_document(headers):
                    await send(message)
                    return
                present = {name.lower() for name, _ in headers}
                headers += [item for item in _COMMON if item[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                if tls:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def local_path(path: str) -> str:
    """``path`` (a request's path, decoded) as a link to the same path on this site.

    Percent-encoded (only letters, digits, ``_.-~`` and ``/`` are left as they are, so no
    backslash, space, tab or line break remains for a browser to reinterpret), runs of
    slashes collapsed, and always exactly one ``/`` first: never ``//host`` or ``/\\host``,
    which a browser would read as another site."""
    encoded = quote(path, safe="/", errors="surrogatepass")
    return "/" + _SLASHES.sub("/", encoded).lstrip("/")


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(secret: bytes, cookie: str) -> str:
    """The form field that goes with ``cookie``."""
    return hmac.new(secret, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, cookie: str | None, field: str | None) -> bool:
    if not cookie or not field or len(cookie) > 100 or len(field) != 64:
        return False
    return hmac.compare_digest(csrf_token(secret, cookie), field)


def derive_secret(master: str, purpose: str) -> bytes:
    """A per-purpose key from the service's secret (``NSER_KEY_ENCRYPTION_SECRET``)."""
    return hmac.new(master.encode(), b"nser-web:" + purpose.encode(), hashlib.sha256).digest()
