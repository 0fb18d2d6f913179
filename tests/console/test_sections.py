"""Which "my work" sections a staff member sees, and the grievance cut-offs (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.auth.scopes import Scope, staff_scopes
from app.services.console.queues import sections_of
from app.services.grievances import sla
from app.services.grievances.machine import State
from app.services.grievances.queue import LATER, NEW, Cutoffs


@pytest.mark.parametrize(
    ("roles", "sections"),
    [
        ({"officer"}, {"requests", "grievances", "obligations"}),
        ({"committee"}, {"requests"}),
        ({"secretary"}, {"requests"}),
        ({"me"}, {"spot_checks"}),
        ({"admin"}, set()),
        ({"officer", "me"}, {"requests", "grievances", "obligations", "spot_checks"}),
    ],
)
def test_each_role_sees_the_sections_it_acts_on(roles: set[str], sections: set[str]) -> None:
    held = frozenset(roles)
    assert sections_of(held, staff_scopes(held)) == sections


def test_a_token_without_a_sections_scope_does_not_see_it() -> None:
    officer = frozenset({"officer"})
    assert sections_of(officer, frozenset({Scope.REQUESTS_READ})) == {"requests", "obligations"}
    assert sections_of(officer, frozenset({Scope.GRIEVANCES_READ})) == {"grievances"}
    me = frozenset({"me"})
    assert sections_of(me, frozenset({Scope.REQUESTS_READ})) == set()


def test_the_queue_holds_every_open_state() -> None:
    assert {NEW, *LATER} == {State.received, State.triaged, State.resurvey_ordered}


NOW = datetime(2026, 12, 9, 12, tzinfo=UTC)


@given(
    triage=st.integers(1, 60),
    resolve=st.integers(1, 60),
    age=st.integers(0, 90 * 24),
    state=st.sampled_from([NEW, *LATER]),
)
def test_the_cutoffs_agree_with_the_service_levels(
    triage: int, resolve: int, age: int, state: State
) -> None:
    # Whatever the targets (a triage target longer than the resolution's included), a
    # grievance is overdue in the queue's SQL terms exactly when sla.overdue says so.
    targets = sla.Targets(triage, resolve)
    filed = NOW - timedelta(hours=age)
    cut = Cutoffs.at(NOW, targets)
    in_sql = filed < (cut.received_overdue if state is NEW else cut.resolve)
    assert in_sql == (sla.overdue(state, filed, NOW, targets) is not None)
