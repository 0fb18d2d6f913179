"""docs/security.md cannot rot: every test and module it names exists.

The security map names its evidence as ``tests/<path>.py::<test_name>`` and its controls as
``app/<path>.py``. Each test reference must name a file of the repository that defines that
test function (at module level, sync or async), and each module path must exist; every
OWASP API Security Top 10 (2023) risk and every risk of the protocol has its section, and
each section either names a test or says what is open.

No database: this reads files only.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "security.md"
TEST_REF = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)")
MODULE_REF = re.compile(r"`(app/[\w/]+\.py)`")
SECTIONS = [
    "API1 Broken Object Level Authorization",
    "API2 Broken Authentication",
    "API3 Broken Object Property Level Authorization",
    "API4 Unrestricted Resource Consumption",
    "API5 Broken Function Level Authorization",
    "API6 Unrestricted Access to Sensitive Business Flows",
    "API7 Server Side Request Forgery",
    "API8 Security Misconfiguration",
    "API9 Improper Inventory Management",
    "API10 Unsafe Consumption of APIs",
    "Enumeration of CNICs",
    "Differencing",
    "Re-identification in extracts",
    "A partner exceeding its agreement",
    "A staff member acting outside their role",
    "SSRF through callbacks",
]


def _text() -> str:
    return MAP.read_text(encoding="utf-8")


@cache
def _tests_defined(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def _sections(text: str) -> dict[str, str]:
    """Each ``### `` section's heading and body (up to the next ``##`` or ``###``)."""
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.MULTILINE)
    out: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        if heading.startswith("### "):
            out[heading[4:].strip()] = body
    return out


def test_every_test_the_map_names_exists() -> None:
    refs = TEST_REF.findall(_text())
    assert len(refs) >= 100, f"the map names only {len(refs)} tests"
    missing = sorted(
        f"{path}::{name}"
        for path, name in set(refs)
        if not (ROOT / path).is_file() or name not in _tests_defined(path)
    )
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_module_the_map_names_exists() -> None:
    modules = set(MODULE_REF.findall(_text()))
    assert modules, "the map names no module"
    missing = sorted(m for m in modules if not (ROOT / m).is_file())
    assert not missing, f"docs/security.md names modules that do not exist: {missing}"


def test_every_risk_has_a_section_with_a_test_or_an_open_item() -> None:
    sections = _sections(_text())
    for risk in SECTIONS:
        assert risk in sections, f"docs/security.md has no section for {risk!r}"
        body = sections[risk]
        assert TEST_REF.search(body) or "**Open" in body, (
            f"{risk}: name the test that shows the control, or mark it **open**"
        )


def test_the_checker_reads_what_it_should() -> None:
    """The helpers themselves: a reference and a section are found as written."""
    sample = (
        "### A\n\nsee `tests/x/test_y.py::test_z` and `app/a.py`\n"
        "### B\n\n**Open.** nothing\n## C\n"
    )
    assert TEST_REF.findall(sample) == [("tests/x/test_y.py", "test_z")]
    assert MODULE_REF.findall(sample) == ["app/a.py"]
    assert set(_sections(sample)) == {"A", "B"}
    assert "test_every_test_the_map_names_exists" in _tests_defined(
        "tests/service/test_security_map.py"
    )
