"""An empty table (nothing in scope) protects to an answer that publishes nothing."""

from __future__ import annotations

from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import protect
from app.services.disclosure.table import with_margins


def test_an_empty_table_publishes_nothing_and_does_not_fail() -> None:
    cells = with_margins(["h3"], [])
    published, disclosure = protect(["h3"], cells, Policy())
    assert all(p.households is None for p in published)
    assert disclosure.suppressed_cells == len(published)
