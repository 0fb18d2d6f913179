"""The agreement rules checked when a partner is registered (pure logic)."""

from __future__ import annotations

import re

import pytest

from app.services.sharing import rules as sharing
from app.services.sharing.rules import RuleViolation


def test_categories_dimensions_and_kinds_are_known_and_deduplicated() -> None:
    assert sharing.check_categories(["iii", "iv", "iii"]) == ["iii", "iv"]
    assert sharing.check_update_kinds(["member_birth", "member_birth"]) == ["member_birth"]
    with pytest.raises(RuleViolation, match=re.escape("unknown category 'ix' (one of i..viii)")):
        sharing.check_categories(["iii", "ix"])
    with pytest.raises(RuleViolation, match="at least one category is required"):
        sharing.check_categories([])
    with pytest.raises(RuleViolation, match="unknown dimension 'shoe_size'"):
        sharing.check_dimensions(["shoe_size"])
    with pytest.raises(RuleViolation, match=re.escape("unknown update kind 'marriage' (one of ")):
        sharing.check_update_kinds(["marriage"])


def test_an_agreement_never_grants_every_locked_dimension() -> None:
    locked = sorted(sharing.LOCKED)
    assert sharing.check_dimensions(locked[:-1]) == locked[:-1]
    with pytest.raises(RuleViolation, match="never grant all of the locked dimensions"):
        sharing.check_dimensions(locked)
