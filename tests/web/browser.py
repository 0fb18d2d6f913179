"""Helpers of the website's browser tests: accessibility scans and screenshots.

axe-core comes from its npm package (``tests/web/package.json``, installed by ``make
test``) and is injected from the local file: nothing is fetched from the internet. Pages
send a strict CSP, so the page that is scanned is opened in a context with ``bypass_csp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = HERE.parent.parent / "artifacts" / "screenshots"
# WCAG 2.0/2.1/2.2 A and AA rules: the bar of a government site.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: run `npm ci --prefix tests/web` (make test)")
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG in ``artifacts/screenshots/<name>.png`` (kept by CI)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def uses_font(page: Page, selector: str, family: str) -> bool:
    """Whether ``selector``'s computed font-family names ``family`` and the font has loaded."""
    computed: str = page.eval_on_selector(selector, "el => getComputedStyle(el).fontFamily")
    loaded: bool = page.evaluate(
        "family => document.fonts.ready.then("
        "() => document.fonts.check(`16px \"${family}\"`, 'اردو'))",
        family,
    )
    return family in computed and loaded
