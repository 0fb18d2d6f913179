"""The website's gettext catalogues: extract, update, check and compile.

One catalogue (gettext domain) per page, so each page's translations are kept together:

- ``base``: the layout, the error page and the home page — ``templates/*.html``,
  ``public/home/``, ``site.py`` and ``render.py``;
- ``<page>``: everything in ``public/<page>/`` (its templates, ``routes.py``, ``page.py``).
- ``staff``: the staff console's sign-in and administration (``app/web/staff/``), and
  ``staff_<area>`` for each other area of it: ``staff/<area>.py`` and
  ``staff/templates/staff/<area>/``.

``python -m app.web.catalogues update`` adds new messages to every ``ur`` ``.po`` file
(keeping existing translations); ``check`` fails if a message lacks an Urdu translation;
``compile`` writes the ``.mo`` files (``make install`` and the wheel build run it).
Only Babel is imported at module level: the wheel's build (``setup.py``) compiles with it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

WEB = Path(__file__).resolve().parent
APP = WEB.parent
TEMPLATES = WEB / "templates"
PUBLIC = WEB / "public"
# The home page's words belong with the layout's (the navigation names the same pages).
HOME = "home"
TRANSLATIONS = WEB / "translations"
STAFF = WEB / "staff"
# The console's own modules (sign-in, sessions, administration): the ``staff`` catalogue.
STAFF_CORE = frozenset({"__init__", "admin", "auth", "forms", "routes"})
TARGET_LANGUAGES = ("ur",)
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def _page_files(folder: Path) -> list[Path]:
    """A public page's templates, then its routes, then its other modules."""
    modules = sorted(folder.glob("*.py"), key=lambda path: (path.name != "routes.py", path.name))
    return [*sorted(folder.rglob("*.html")), *modules]


def domains() -> dict[str, list[Path]]:
    """Each catalogue and the files its messages come from."""
    found: dict[str, list[Path]] = {
        "base": [
            *sorted(TEMPLATES.glob("*.html")),
            *_page_files(PUBLIC / HOME),
            WEB / "site.py",
            WEB / "render.py",
        ]
    }
    for folder in sorted(p for p in PUBLIC.iterdir() if (p / "templates").is_dir()):
        if folder.name != HOME:
            found[folder.name] = _page_files(folder)
    # The console's sign-in and administration are ``staff``; each other area of the console
    # (``staff/<area>.py`` with ``templates/staff/<area>/``) is ``staff_<area>``.
    areas = {
        module.stem: module
        for module in sorted(STAFF.glob("*.py"))
        if module.stem not in STAFF_CORE and (STAFF / "templates" / "staff" / module.stem).is_dir()
    }
    found["staff"] = [
        *sorted(
            path
            for path in STAFF.rglob("*.html")
            if not any(part in areas for part in path.relative_to(STAFF / "templates").parts[1:-1])
        ),
        *sorted(p for p in STAFF.glob("*.py") if p.stem not in areas),
    ]
    for area, module in areas.items():
        found[f"staff_{area}"] = [
            *sorted((STAFF / "templates" / "staff" / area).rglob("*.html")),
            module,
        ]
    return found


def _extract(files: list[Path]) -> Catalog:
    from babel.messages.extract import extract_from_file, extract_python
    from jinja2.ext import babel_extract

    template = Catalog(project="nser", fuzzy=False)
    for path in files:
        method: Any = babel_extract if path.suffix == ".html" else extract_python
        options = {"extensions": "jinja2.ext.i18n"} if path.suffix == ".html" else {}
        for lineno, message, comments, _context in extract_from_file(
            method, str(path), keywords=KEYWORDS, options=options
        ):
            template.add(
                message, None, [(str(path.relative_to(APP.parent)), lineno)], auto_comments=comments
            )
    return template


def _po_path(lang: str, domain: str) -> Path:
    return TRANSLATIONS / lang / "LC_MESSAGES" / f"{domain}.po"


def update() -> None:
    for domain, files in domains().items():
        template = _extract(files)
        for lang in TARGET_LANGUAGES:
            path = _po_path(lang, domain)
            if path.exists():
                with path.open("rb") as handle:
                    catalog = read_po(handle, locale=lang, domain=domain)
            else:
                catalog = Catalog(locale=lang, domain=domain, project="nser")
            catalog.update(template, no_fuzzy_matching=True)
            catalog.obsolete.clear()
            buffer = io.BytesIO()
            write_po(buffer, catalog, width=100, sort_output=False, include_lineno=False)
            new = buffer.getvalue()
            old = path.read_bytes() if path.exists() else b""
            if _without_dates(new) != _without_dates(old):  # no churn from the date alone
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(new)
                print(f"{path.relative_to(APP.parent)}: {len(catalog)} messages")


def _without_dates(po: bytes) -> bytes:
    return b"\n".join(
        line for line in po.splitlines() if not line.startswith(b'"POT-Creation-Date:')
    )


def problems() -> Iterator[str]:
    """Messages of the pages with no (or only a fuzzy) Urdu translation."""
    for domain, files in domains().items():
        template = _extract(files)
        for lang in TARGET_LANGUAGES:
            path = _po_path(lang, domain)
            if not path.exists():
                yield f"{path}: missing"
                continue
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=lang, domain=domain)
            for message in template:
                if not message.id:
                    continue
                have = catalog.get(message.id)
                if have is None or not have.string or have.fuzzy:
                    yield f"{path.name}: untranslated {message.id!r}"
                elif isinstance(have.string, tuple) and not all(have.string):
                    yield f"{path.name}: plural forms missing for {message.id!r}"


def compile_catalogues(source: Path = TRANSLATIONS, target: Path = TRANSLATIONS) -> int:
    """Write ``target/<lang>/LC_MESSAGES/<domain>.mo`` for every ``.po`` under ``source``."""
    count = 0
    for po in sorted(source.glob("*/LC_MESSAGES/*.po")):
        with po.open("rb") as handle:
            catalog = read_po(handle)
        mo = target / po.relative_to(source).with_suffix(".mo")
        mo.parent.mkdir(parents=True, exist_ok=True)
        with mo.open("wb") as handle:
            write_mo(handle, catalog, use_fuzzy=False)
        count += 1
    return count


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "update":
        update()
        return 0
    if command == "compile":
        print(f"compiled {compile_catalogues()} catalogues")
        return 0
    if command == "check":
        found = list(problems())
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    print("usage: python -m app.web.catalogues update|check|compile", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
