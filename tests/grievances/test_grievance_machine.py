"""The grievance workflow machine and the service-level rules: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.grievances import machine, sla
from app.services.grievances.machine import Action, State

OFFICER = ["officer"]


def test_the_happy_path_with_a_resurvey() -> None:
    state = State.received
    for action in (Action.triage, Action.order_resurvey, Action.record_resurvey):
        state = machine.next_state(state, action, OFFICER)
    assert state is State.resurvey_ordered
    # A corrected survey may be sent again while the re-survey is ordered.
    assert machine.next_state(state, Action.record_resurvey, OFFICER) is State.resurvey_ordered
    assert machine.next_state(state, Action.resolve, OFFICER) is State.resolved


def test_resolve_without_resurvey_and_reject_from_every_open_state() -> None:
    assert machine.next_state(State.triaged, Action.resolve, OFFICER) is State.resolved
    for state in (State.received, State.triaged, State.resurvey_ordered):
        assert machine.next_state(state, Action.reject, OFFICER) is State.rejected


@pytest.mark.parametrize("role", ["me", "committee", "secretary", "admin", "requester", "x"])
def test_only_officers_act_and_the_role_is_checked_before_the_state(role: str) -> None:
    for action in Action:
        # Even from a final state the role answers first: no state is revealed.
        with pytest.raises(machine.RoleDenied, match="requires the role officer"):
            machine.next_state(State.resolved, action, [role])


def test_a_state_the_action_is_not_allowed_from_names_it() -> None:
    with pytest.raises(machine.InvalidTransition) as caught:
        machine.next_state(State.resolved, Action.reject, ["officer", "me"])
    assert "resolved (a final state)" in str(caught.value)
    assert "received, triaged, resurvey_ordered" in str(caught.value)
    with pytest.raises(machine.InvalidTransition, match="only from triaged"):
        machine.next_state(State.received, Action.order_resurvey, OFFICER)
    with pytest.raises(machine.InvalidTransition, match="only from resurvey_ordered"):
        machine.next_state(State.triaged, Action.record_resurvey, OFFICER)


def test_nothing_leaves_a_final_state() -> None:
    for state in machine.TERMINAL:
        assert machine.allowed_actions(state, OFFICER) == []
    assert machine.allowed_actions(State.received, OFFICER) == [Action.triage, Action.reject]
    assert machine.allowed_actions(State.triaged, ["me"]) == []


NOW = datetime(2026, 12, 31, 12, tzinfo=UTC)
TARGETS = sla.Targets(triage_days=7, resolve_days=30)


@pytest.mark.parametrize(
    ("state", "age_days", "breach"),
    [
        (State.received, 6, None),
        (State.received, 8, "triage"),
        (State.triaged, 8, None),
        (State.triaged, 31, "resolve"),
        (State.received, 31, "resolve"),  # the graver breach is the one reported
        (State.resurvey_ordered, 45, "resolve"),
        (State.resolved, 45, None),
        (State.rejected, 45, None),
    ],
)
def test_overdue(state: State, age_days: int, breach: str | None) -> None:
    filed = NOW - timedelta(days=age_days)
    assert sla.overdue(state, filed, NOW, TARGETS) == breach


def test_service_level_figures() -> None:
    filed = NOW - timedelta(days=10)
    level = sla.service_level(
        State.resolved, filed, filed + timedelta(hours=36), filed + timedelta(days=9), NOW, TARGETS
    )
    assert level == {
        "triage_due": filed + timedelta(days=7),
        "resolve_due": filed + timedelta(days=30),
        "days_to_triage": 1.5,
        "days_to_close": 9.0,
        "overdue": None,
    }
