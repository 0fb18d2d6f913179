"""Languages of the website: negotiation, gettext catalogues and Babel formatting.

A request's language is, in order: ``?lang=en|ur`` (then remembered in the ``nser_lang``
cookie for a year), the cookie, the best match of ``Accept-Language``, English.

Catalogues are gettext ``.mo`` files compiled from the ``.po`` sources at build time
(``setup.py``) or by ``make install``; each page keeps its own ``.po`` (``base``, ``check``,
``statistics``, ``apply``...), and a language's catalogues are merged into one at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from babel import Locale
from babel.core import negotiate_locale
from babel.dates import format_date, format_datetime
from babel.numbers import NumberPattern, parse_pattern
from babel.support import NullTranslations, Translations

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LANGUAGES = ("en", "ur")
DEFAULT = "en"
COOKIE = "nser_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
# The Babel locale behind each language: Pakistan's English and Urdu.
LOCALES = {"en": "en_PK", "ur": "ur_PK"}
DIRECTION = {"en": "ltr", "ur": "rtl"}
# Pakistan Standard Time, UTC+5 all year (no daylight saving).
PAKISTAN = timezone(timedelta(hours=5), "PKT")


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is defined; it is translated where shown."""
    return message


class MissingCatalogue(RuntimeError):
    """A language's ``.mo`` files were never compiled (run ``make install``)."""


@cache
def translations(lang: str) -> NullTranslations:
    """The merged catalogue of ``lang`` (English is the source language: no catalogue)."""
    if lang == DEFAULT:
        return NullTranslations()
    folder = TRANSLATIONS / lang / "LC_MESSAGES"
    sources = sorted(folder.glob("*.po"))
    merged: Translations | None = None
    for source in sources:
        compiled = source.with_suffix(".mo")
        if not compiled.is_file():
            raise MissingCatalogue(
                f"{compiled} is missing: compile the catalogues (make install, or "
                "pybabel compile -d app/web/translations -D <page>)"
            )
        with compiled.open("rb") as handle:
            catalogue = Translations(handle, domain=source.stem)
        if merged is None:
            merged = catalogue
        else:
            merged.merge(catalogue)
    if merged is None:
        raise MissingCatalogue(f"no catalogue for {lang!r} in {folder}")
    return merged


@cache
def _locale(lang: str) -> Locale:
    return Locale.parse(LOCALES[lang])


@cache
def _pattern(digits: int, *, percent: bool) -> NumberPattern:
    """A parsed number pattern (a page formats hundreds of numbers: parse each once)."""
    text = "#,##0" + ("." + "0" * digits if digits else "") + ("%" if percent else "")
    return parse_pattern(text)


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The language of a request (see the module docstring)."""
    if query in LANGUAGES:
        return query
    if cookie in LANGUAGES:
        return cookie
    if accept_language:
        wanted = []
        for part in accept_language.split(","):
            tag, _, weight = part.strip().partition(";q=")
            try:
                quality = float(weight) if weight else 1.0
            except ValueError:
                continue
            if tag and quality > 0:
                wanted.append((quality, tag.strip().replace("-", "_")))
        wanted.sort(key=lambda item: -item[0])
        best = negotiate_locale([tag for _, tag in wanted], list(LANGUAGES), sep="_")
        if best in LANGUAGES:
            return best
    return DEFAULT


@dataclass(frozen=True)
class Formatter:
    """Numbers and dates as the language writes them (Babel's CLDR data)."""

    lang: str

    @property
    def locale(self) -> Locale:
        return _locale(self.lang)

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return ""
        text: str = _pattern(digits, percent=False).apply(value, self.locale)
        return text

    def percent(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return ""
        text: str = _pattern(digits, percent=True).apply(value, self.locale)
        return text

    def date(self, value: date | datetime | None, form: str = "long") -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            value = value.date()
        return format_date(value, format=form, locale=self.locale)

    def datetime(self, value: datetime | None, form: str = "medium") -> str:
        if value is None:
            return ""
        return format_datetime(value, format=form, locale=self.locale, tzinfo=PAKISTAN)
