"""Rendering a page: the per-language Jinja2 environments, the request's context, ``page()``.

Each language has its own environment with its catalogue installed (``jinja2.ext.i18n``,
new-style gettext so ``{{ _("…%(n)s…", n=3) }}`` is escaped and formatted safely), so
concurrent requests in different languages never share a translation.

Every template receives ``web`` (a :class:`WebContext`): the language and direction, the
Babel formatter (``web.fmt.number(…)``), the CSRF field and the link that switches language.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    select_autoescape,
)
from starlette.responses import HTMLResponse

from app.web import i18n, security

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Each page of the public website keeps its templates beside its code,
# ``public/<page>/templates/``; they are named ``<page>/<file>.html``.
PUBLIC = TEMPLATES.parent / "public"
# The staff console keeps its templates beside its routes (``staff/…`` names, over base.html).
STAFF_TEMPLATES = Path(__file__).resolve().parent / "staff" / "templates"
LANG_NAMES = {"en": "English", "ur": "اردو"}


class WebError(Exception):
    """A page-level error shown as a friendly page in the visitor's language."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def loader() -> ChoiceLoader:
    """The shared templates (``base.html``, ``error.html``) and the staff console's
    (``staff/…``) by their own names, and each public page's as ``<page>/<file>.html``."""
    pages = {
        folder.parent.name: FileSystemLoader(folder)
        for folder in sorted(PUBLIC.glob("*/templates"))
    }
    return ChoiceLoader([FileSystemLoader([TEMPLATES, STAFF_TEMPLATES]), PrefixLoader(pages)])


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=loader(),
        autoescape=select_autoescape(["html", "svg"]),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


@dataclass
class WebContext:
    """What every page knows about the request it answers."""

    request: Request
    lang: str
    csrf_cookie: str
    secret: bytes
    remember_lang: bool = False
    new_csrf: bool = False
    fmt: i18n.Formatter = field(init=False)

    def __post_init__(self) -> None:
        self.fmt = i18n.Formatter(self.lang)

    @property
    def dir(self) -> str:
        return i18n.DIRECTION[self.lang]

    @property
    def other_lang(self) -> str:
        return "ur" if self.lang == "en" else "en"

    @property
    def other_lang_name(self) -> str:
        return LANG_NAMES[self.other_lang]

    @property
    def csrf_field(self) -> str:
        return security.csrf_token(self.secret, self.csrf_cookie)

    @property
    def path(self) -> str:
        """The request's path as a link on this site (see :func:`security.local_path`)."""
        return security.local_path(self.request.scope["path"])

    def switch_url(self) -> str:
        """This page in the other language (other query parameters kept, encoded again),
        always a path on this site: the request's path may be anything a visitor typed."""
        query = [(k, v) for k, v in self.request.query_params.multi_items() if k != "lang"]
        query.append(("lang", self.other_lang))
        return f"{self.path}?{urlencode(query)}"

    def gettext(self, message: str, **values: Any) -> str:
        text = i18n.translations(self.lang).gettext(message)
        return text % values if values else text

    def csrf_ok(self, field_value: str | None) -> bool:
        cookie = self.request.cookies.get(security.CSRF_COOKIE)
        return security.csrf_valid(self.secret, cookie, field_value)


def web_secret(request: Request, purpose: str) -> bytes:
    settings = request.app.state.settings
    return security.derive_secret(settings.key_encryption_secret.get_secret_value(), purpose)


async def web_context(
    request: Request,
    lang: Annotated[
        str | None,
        Query(description="en or ur; remembered in a cookie", pattern="^(en|ur)$"),
    ] = None,
) -> WebContext:
    chosen = i18n.negotiate(
        lang, request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
    )
    cookie = request.cookies.get(security.CSRF_COOKIE)
    fresh = not cookie or len(cookie) > 100
    return WebContext(
        request=request,
        lang=chosen,
        csrf_cookie=security.new_csrf_cookie() if fresh else str(cookie),
        secret=web_secret(request, "csrf"),
        remember_lang=lang is not None and request.cookies.get(i18n.COOKIE) != lang,
        new_csrf=fresh,
    )


WebDep = Annotated[WebContext, Depends(web_context)]


def page(
    web: WebContext,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    """Render ``template`` for the request, with the cookies and headers every page needs."""
    return respond(web, render(web, template, **values), status=status, headers=headers)


def render(web: WebContext, template: str, **values: Any) -> str:
    """The HTML of ``template`` in the request's language."""
    return environment(web.lang).get_template(template).render(web=web, **values)


class RenderedPages:
    """Rendered HTML of pages that depend only on public data, by a key that names that
    data's version (e.g. the summary's ETag), so a page is rendered once per version.
    Bounded; the oldest entry goes first. Only for pages with no per-visitor content."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._pages: OrderedDict[Hashable, str] = OrderedDict()

    def get(self, key: Hashable) -> str | None:
        html = self._pages.get(key)
        if html is not None:
            self._pages.move_to_end(key)
        return html

    def put(self, key: Hashable, html: str) -> None:
        self._pages[key] = html
        self._pages.move_to_end(key)
        while len(self._pages) > self.size:
            self._pages.popitem(last=False)


def respond(
    web: WebContext, html: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """``html`` as the answer, with the cookies and headers every page needs."""
    response = HTMLResponse(html, status_code=status, headers=headers)
    response.headers["Content-Language"] = web.lang
    response.headers["Vary"] = "Accept-Language, Cookie"
    # Pages carry a CSRF field and, for a look-up, a person's band: never cached.
    response.headers["Cache-Control"] = "no-store"
    secure = web.request.url.scheme == "https"
    if web.remember_lang:
        response.set_cookie(
            i18n.COOKIE, web.lang, max_age=i18n.COOKIE_MAX_AGE, samesite="lax", secure=secure
        )
    if web.new_csrf:
        response.set_cookie(
            security.CSRF_COOKIE,
            web.csrf_cookie,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
    return response
