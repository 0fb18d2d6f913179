"""The website's Urdu catalogues: every message of every page is translated and compiled."""

from __future__ import annotations

from app.web import catalogues, i18n


def test_every_message_has_an_urdu_translation() -> None:
    assert list(catalogues.problems()) == []


def test_the_compiled_catalogue_translates_the_pages() -> None:
    urdu = i18n.translations("ur")
    assert urdu.gettext("Check a poverty level") == "غربت کی سطح معلوم کریں"
    assert i18n.translations("en").gettext("Check a poverty level") == "Check a poverty level"


def test_language_negotiation() -> None:
    assert i18n.negotiate("ur", "en", "en") == "ur"  # the query wins
    assert i18n.negotiate(None, "ur", "en") == "ur"  # then the cookie
    assert i18n.negotiate(None, None, "fr, ur-PK;q=0.8, en;q=0.5") == "ur"
    assert i18n.negotiate(None, None, "de, fr;q=0.9") == "en"
    assert i18n.negotiate(None, "xx", "en;q=bad, ur;q=0") == "en"


def test_numbers_and_dates_follow_the_locale() -> None:
    from datetime import date

    urdu = i18n.Formatter("ur")
    assert urdu.date(date(2026, 3, 1)) == "1 مارچ، 2026"
    assert i18n.Formatter("en").date(date(2026, 3, 1)) == "1 March 2026"
    assert urdu.number(1234567) == "1,234,567"
