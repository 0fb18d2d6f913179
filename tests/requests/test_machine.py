"""The data-sharing request workflow (pure state machine: no database, no HTTP)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from app.services.requests.machine import (
    OWNERS,
    TERMINAL,
    TRANSITIONS,
    WAITING_ON,
    Action,
    InvalidTransition,
    Role,
    RoleDenied,
    State,
    WorkflowError,
    allowed_actions,
    next_state,
    waiting_states,
)

S, A, R = State, Action, Role

# The protocol as the brief states it, written out independently of the module's tables.
EXPECTED_OWNERS = {
    A.start_review: {R.officer},
    A.review: {R.officer},
    A.record_interview: {R.officer},
    A.recommend: {R.committee},
    A.approve: {R.secretary},
    A.reject: {R.secretary},
    A.sign: {R.officer},
    A.withdraw: {R.requester, R.officer},
    A.suspend: {R.me, R.secretary},
    A.resume: {R.secretary},
    A.revoke: {R.me, R.secretary},
    A.expire: {R.system},
}
PRE_APPROVAL = [
    S.submitted,
    S.under_review,
    S.reviewed,
    S.interviewed,
    S.recommended,
    S.not_recommended,
]
EXPECTED_TRANSITIONS = {
    A.start_review: {S.submitted: S.under_review},
    A.review: {S.under_review: S.reviewed},
    A.record_interview: {S.reviewed: S.interviewed},
    A.recommend: {S.interviewed: S.recommended},
    A.approve: {S.recommended: S.approved},
    A.reject: {S.recommended: S.rejected, S.not_recommended: S.rejected},
    A.sign: {S.approved: S.active},
    A.withdraw: dict.fromkeys(PRE_APPROVAL, S.withdrawn),
    A.suspend: {S.active: S.suspended},
    A.resume: {S.suspended: S.active},
    A.revoke: {S.active: S.revoked, S.suspended: S.revoked},
    A.expire: {S.active: S.expired, S.suspended: S.expired},
}
EVERY_ROLE = frozenset(Role)
OUTCOME = {A.recommend: "approve", A.record_interview: "passed"}


def step(state: State, action: Action, roles: frozenset[Role] | set[Role]) -> State:
    """``next_state`` with a valid outcome for the actions that take one."""
    return next_state(state, action, roles, outcome=OUTCOME.get(action))


# --- the tables --------------------------------------------------------------------------


def test_tables_are_the_protocol() -> None:
    assert {a: set(r) for a, r in OWNERS.items()} == EXPECTED_OWNERS
    assert {a: dict(t) for a, t in TRANSITIONS.items()} == EXPECTED_TRANSITIONS
    assert frozenset({S.rejected, S.withdrawn, S.revoked, S.expired}) == TERMINAL
    assert list(OWNERS) == list(Action) == list(TRANSITIONS)


def test_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        OWNERS[A.approve] = frozenset({R.admin})  # type: ignore[index]
    with pytest.raises(TypeError):
        TRANSITIONS[A.approve][S.not_recommended] = S.approved  # type: ignore[index]


def test_admin_owns_no_action_and_system_only_expires() -> None:
    assert not any(R.admin in roles for roles in OWNERS.values())
    assert [a for a, roles in OWNERS.items() if R.system in roles] == [A.expire]
    assert [a for a, roles in OWNERS.items() if R.requester in roles] == [A.withdraw]


def test_terminal_states_have_no_exit_and_every_other_state_has_one() -> None:
    sources = {state for table in TRANSITIONS.values() for state in table}
    assert sources == set(State) - TERMINAL


def test_every_state_is_reachable_from_submitted() -> None:
    seen, frontier = {S.submitted}, [S.submitted]
    while frontier:
        state = frontier.pop()
        for action in allowed_actions(state, EVERY_ROLE):
            outcomes = ["approve", "reject"] if action is A.recommend else [None]
            for outcome in outcomes:
                target = next_state(state, action, EVERY_ROLE, outcome=outcome)
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
    assert seen == set(State)


# --- roles are checked first -------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action))
def test_a_role_that_does_not_own_the_action_is_denied_from_every_state(action: Action) -> None:
    for role, state in itertools.product(set(Role) - OWNERS[action], State):
        with pytest.raises(RoleDenied) as denied:
            next_state(state, action, {role}, outcome=OUTCOME.get(action))
        assert denied.value.action is action
        assert denied.value.required == OWNERS[action]
        assert str(action) in str(denied.value)
        assert isinstance(denied.value, WorkflowError)


@pytest.mark.parametrize("action", list(Action))
def test_no_role_or_only_non_owners_together_are_denied(action: Action) -> None:
    others = frozenset(Role) - OWNERS[action]
    for state in State:
        with pytest.raises(RoleDenied):
            next_state(state, action, [])
        with pytest.raises(RoleDenied):
            next_state(state, action, others)


def test_one_owning_role_among_several_is_enough() -> None:
    roles = {R.admin, R.me, R.committee, R.secretary}
    assert next_state(S.recommended, A.approve, roles) is S.approved
    assert next_state(S.active, A.suspend, roles) is S.suspended
    with pytest.raises(RoleDenied, match="sign requires the role officer"):
        next_state(S.approved, A.sign, roles)


def test_admin_alone_can_do_nothing_anywhere() -> None:
    for state in State:
        assert allowed_actions(state, {R.admin}) == []
        for action in Action:
            with pytest.raises(RoleDenied):
                step(state, action, {R.admin})


# --- then the state ----------------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action))
def test_an_action_from_a_state_it_does_not_leave_is_an_invalid_transition(
    action: Action,
) -> None:
    allowed = TRANSITIONS[action]
    for state, role in itertools.product(set(State) - set(allowed), OWNERS[action]):
        with pytest.raises(InvalidTransition) as invalid:
            next_state(state, action, {role}, outcome=OUTCOME.get(action))
        error = invalid.value
        assert error.state is state
        assert error.action is action
        assert error.allowed_from == frozenset(allowed)
        message = str(error)
        assert f"is {state}" in message
        for source in allowed:
            assert str(source) in message.split("allowed only from ")[1].split(", ")
        assert isinstance(error, WorkflowError)
        assert not isinstance(error, RoleDenied)


def test_invalid_transition_messages_read_well() -> None:
    with pytest.raises(InvalidTransition) as invalid:
        next_state(S.not_recommended, A.approve, {R.secretary})
    assert str(invalid.value) == (
        "cannot approve a request that is not_recommended; approve is allowed only from recommended"
    )
    with pytest.raises(InvalidTransition) as invalid:
        next_state(S.expired, A.suspend, {R.me})
    assert str(invalid.value) == (
        "cannot suspend a request that is expired (a final state); suspend is allowed only"
        " from active"
    )
    with pytest.raises(InvalidTransition) as invalid:
        next_state(S.approved, A.withdraw, {R.requester})
    assert str(invalid.value).endswith(
        "withdraw is allowed only from submitted, under_review, reviewed, interviewed,"
        " recommended, not_recommended"
    )


def test_the_role_is_checked_before_the_state() -> None:
    # Wrong role AND wrong state: the actor learns only that the action is not theirs.
    with pytest.raises(RoleDenied):
        next_state(S.withdrawn, A.approve, {R.officer})
    with pytest.raises(RoleDenied):
        next_state(S.submitted, A.expire, {R.secretary})


# --- the paths ---------------------------------------------------------------------------


def test_happy_path_from_submitted_to_active() -> None:
    state = S.submitted
    path = [
        (A.start_review, R.officer, None, S.under_review),
        (A.review, R.officer, None, S.reviewed),
        (A.record_interview, R.officer, "passed", S.interviewed),
        (A.recommend, R.committee, "approve", S.recommended),
        (A.approve, R.secretary, None, S.approved),
        (A.sign, R.officer, None, S.active),
    ]
    for action, role, outcome, expected in path:
        assert action in allowed_actions(state, {role})
        state = next_state(state, action, {role}, outcome=outcome)
        assert state is expected
    assert allowed_actions(S.active, EVERY_ROLE) == [A.suspend, A.revoke, A.expire]


def test_life_after_activation() -> None:
    assert next_state(S.active, A.suspend, {R.me}) is S.suspended
    assert next_state(S.suspended, A.resume, {R.secretary}) is S.active
    with pytest.raises(RoleDenied):
        next_state(S.suspended, A.resume, {R.me})  # M&E suspends, only the Secretary lifts it
    for source in (S.active, S.suspended):
        assert next_state(source, A.revoke, {R.me}) is S.revoked
        assert next_state(source, A.revoke, {R.secretary}) is S.revoked
        assert next_state(source, A.expire, {R.system}) is S.expired


def test_a_failed_interview_still_reaches_the_committee_which_may_reject() -> None:
    state = next_state(S.reviewed, A.record_interview, {R.officer}, outcome="failed")
    assert state is S.interviewed
    state = next_state(state, A.recommend, {R.committee}, outcome="reject")
    assert state is S.not_recommended
    assert allowed_actions(state, {R.secretary}) == [A.reject]
    with pytest.raises(InvalidTransition):
        next_state(state, A.approve, {R.secretary})
    assert next_state(state, A.reject, {R.secretary}) is S.rejected


def test_the_secretary_may_reject_a_recommended_request() -> None:
    assert allowed_actions(S.recommended, {R.secretary}) == [A.approve, A.reject]
    assert next_state(S.recommended, A.reject, {R.secretary}) is S.rejected


@pytest.mark.parametrize("state", PRE_APPROVAL)
@pytest.mark.parametrize("role", [R.requester, R.officer])
def test_withdraw_from_each_state_before_approval(state: State, role: Role) -> None:
    assert A.withdraw in allowed_actions(state, {role})
    assert next_state(state, A.withdraw, {role}) is S.withdrawn


@pytest.mark.parametrize("state", sorted(set(State) - set(PRE_APPROVAL)))
@pytest.mark.parametrize("role", [R.requester, R.officer])
def test_no_withdrawal_once_approved(state: State, role: Role) -> None:
    assert A.withdraw not in allowed_actions(state, {role})
    with pytest.raises(InvalidTransition) as invalid:
        next_state(state, A.withdraw, {role})
    assert invalid.value.state is state


def test_the_requester_can_only_withdraw() -> None:
    for state in State:
        expected = [A.withdraw] if state in PRE_APPROVAL else []
        assert allowed_actions(state, {R.requester}) == expected


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_allow_nothing(state: State) -> None:
    assert allowed_actions(state, EVERY_ROLE) == []
    for action in Action:
        with pytest.raises(InvalidTransition):
            step(state, action, EVERY_ROLE)


# --- outcomes ----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [None, "", "Approve", "passed", "maybe"])
def test_recommend_needs_approve_or_reject(outcome: str | None) -> None:
    with pytest.raises(ValueError, match="recommend needs the recommendation"):
        next_state(S.interviewed, A.recommend, {R.committee}, outcome=outcome)


def test_the_outcome_is_checked_after_the_role_and_the_state() -> None:
    with pytest.raises(RoleDenied):
        next_state(S.interviewed, A.recommend, {R.officer}, outcome="maybe")
    with pytest.raises(InvalidTransition):
        next_state(S.reviewed, A.recommend, {R.committee}, outcome=None)


def test_interview_outcome_is_optional_but_checked() -> None:
    for outcome in (None, "passed", "failed"):
        assert next_state(S.reviewed, A.record_interview, {R.officer}, outcome=outcome) is (
            S.interviewed
        )
    with pytest.raises(ValueError, match="'passed' or 'failed'"):
        next_state(S.reviewed, A.record_interview, {R.officer}, outcome="approve")


@pytest.mark.parametrize(
    "action", [a for a in Action if a not in (A.recommend, A.record_interview)]
)
def test_other_actions_take_no_outcome(action: Action) -> None:
    source = next(iter(TRANSITIONS[action]))
    with pytest.raises(ValueError, match="takes no outcome"):
        next_state(source, action, OWNERS[action], outcome="approve")


def test_plain_strings_from_the_database_are_accepted() -> None:
    state = next_state("submitted", "start_review", ["officer"])  # type: ignore[arg-type, list-item]
    assert state is S.under_review
    assert allowed_actions("approved", ["officer"]) == [A.sign]  # type: ignore[arg-type, list-item]
    with pytest.raises(ValueError, match="'pending' is not a valid State"):
        next_state("pending", "start_review", ["officer"])  # type: ignore[arg-type, list-item]


def test_unknown_role_names_own_nothing() -> None:
    roles = ["auditor", "officer"]
    assert next_state(S.submitted, A.start_review, roles) is S.under_review  # type: ignore[arg-type]
    with pytest.raises(RoleDenied, match=r"the actor holds none\)$"):
        next_state(S.recommended, A.approve, ["auditor", "superuser"])  # type: ignore[list-item]
    assert allowed_actions(S.recommended, ["auditor"]) == []  # type: ignore[list-item]


def test_allowed_actions_agrees_with_next_state() -> None:
    role_sets = [frozenset(c) for n in range(3) for c in itertools.combinations(Role, n)]
    for state, roles in itertools.product(State, [*role_sets, EVERY_ROLE]):
        possible = []
        for action in Action:
            try:
                step(state, action, roles)
            except WorkflowError:
                continue
            possible.append(action)
        assert allowed_actions(state, roles) == possible


# --- properties over random histories ----------------------------------------------------


@dataclass(frozen=True)
class Done:
    """A successful transition."""

    action: Action
    roles: frozenset[Role]
    outcome: str | None
    source: State
    target: State


OUTCOMES = [None, "approve", "reject", "passed", "failed", "maybe"]
# Leaving a state the way the tables allow, but without ending early: a history that
# withdraws or ends at every chance would rarely reach approval and activation.
FORWARD = {
    state: [a for a, table in TRANSITIONS.items() if table.get(state, S.rejected) not in TERMINAL]
    for state in State
}


@dataclass(frozen=True)
class Attempt:
    """One random attempt, resolved against the current state when it is made.

    Three times in four it picks an action that moves the state forward (``pick`` indexes
    ``FORWARD[state]``), otherwise any action; a random role set, three times in four with an
    owner of the action added; half the time the outcome the action expects (a recommendation
    to approve two times in three), otherwise any.
    The whole history is drawn at once: a ``data.draw`` per step is many times slower.
    """

    forward: bool
    pick: int
    roles: frozenset[Role]
    add_owner: bool
    owner: int
    recommendation: str
    other_outcome: str | None
    expected_outcome: bool

    def resolve(self, state: State) -> tuple[Action, frozenset[Role], str | None]:
        choices = FORWARD[state] if self.forward and FORWARD[state] else list(Action)
        action = choices[self.pick % len(choices)]
        owners = sorted(OWNERS[action])
        roles = self.roles | {owners[self.owner % len(owners)]} if self.add_owner else self.roles
        expected = self.recommendation if action is A.recommend else None
        return action, roles, expected if self.expected_outcome else self.other_outcome


ATTEMPTS = st.lists(
    st.builds(
        Attempt,
        forward=st.integers(0, 3).map(bool),
        pick=st.integers(0, 11),
        roles=st.frozensets(st.sampled_from(list(Role)), max_size=3),
        add_owner=st.integers(0, 3).map(bool),
        owner=st.integers(0, 1),
        recommendation=st.sampled_from(["approve", "approve", "reject"]),
        other_outcome=st.sampled_from(OUTCOMES),
        expected_outcome=st.booleans(),
    ),
    min_size=8,  # the shortest way to active takes 6 steps
    max_size=40,
)


def approved_by_secretary_then_signed_by_officer(history: list[Done]) -> bool:
    approvals = [i for i, done in enumerate(history) if done.action is A.approve]
    signatures = [i for i, done in enumerate(history) if done.action is A.sign]
    return any(
        R.secretary in history[i].roles and R.officer in history[j].roles and i < j
        for i in approvals
        for j in signatures
    )


@settings(max_examples=300, deadline=None)
@given(ATTEMPTS)
def test_random_histories_respect_the_protocol(attempts: list[Attempt]) -> None:
    state, history, ended = S.submitted, [], False
    for attempt in attempts:
        action, roles, outcome = attempt.resolve(state)
        before = state
        failure: Exception | None = None
        try:
            state = next_state(state, action, roles, outcome=outcome)
        except (WorkflowError, ValueError) as exc:
            failure = exc
        owned, leaves = bool(roles & OWNERS[action]), before in TRANSITIONS[action]
        note(f"{before} --{action} by {sorted(roles)} ({outcome})--> {failure or state!r}")
        if ended:
            assert failure is not None, "something succeeded after a terminal state"
        if failure is not None:
            assert state is before
            if isinstance(failure, RoleDenied):
                assert not owned
            elif isinstance(failure, InvalidTransition):
                assert owned
                assert not leaves
                assert failure.state is before
            else:
                assert owned
                assert leaves
            continue
        assert isinstance(state, State)
        assert owned, "an action succeeded without an owning role"
        assert leaves
        history.append(Done(action, roles, outcome, before, state))
        ended = state in TERMINAL

        if state is S.active:
            assert approved_by_secretary_then_signed_by_officer(history)
            assert history[-1].action in (A.sign, A.resume)
        if state is S.approved:
            recommends = [d for d in history if d.action is A.recommend]
            assert [d.outcome for d in recommends] == ["approve"]
            assert R.committee in recommends[0].roles
        if state is S.withdrawn:
            assert before in PRE_APPROVAL

    assert [d.source for d in history] == [S.submitted, *(d.target for d in history)][:-1]
    # No state is entered twice, except the active <-> suspended cycle.
    entered = [d.target for d in history if d.target not in (S.active, S.suspended)]
    assert len(entered) == len(set(entered))


# Who each state waits on, written out by hand from the workflow (the staff's queues).
EXPECTED_WAITING = {
    S.submitted: {R.officer},
    S.under_review: {R.officer},
    S.reviewed: {R.officer},
    S.interviewed: {R.committee},
    S.recommended: {R.secretary},
    S.not_recommended: {R.secretary},
    S.approved: {R.officer},
    S.suspended: {R.secretary},
}


def test_who_each_state_waits_on() -> None:
    assert {state: set(roles) for state, roles in WAITING_ON.items()} == EXPECTED_WAITING
    # Nothing final, and no running agreement, waits on anyone.
    assert not set(WAITING_ON) & (TERMINAL | {S.active})
    # A state waits only on roles that can move it on (an allowed action of theirs).
    for state, roles in WAITING_ON.items():
        for role in roles:
            assert [a for a in allowed_actions(state, [role]) if a is not A.withdraw]


@pytest.mark.parametrize(
    ("roles", "states"),
    [
        (["officer"], [S.submitted, S.under_review, S.reviewed, S.approved]),
        (["committee"], [S.interviewed]),
        (["secretary"], [S.recommended, S.not_recommended, S.suspended]),
        (["me"], []),
        (["admin"], []),
        ([], []),
        (["requester", "system", "auditor"], []),  # pseudo-roles and unknown names
        (
            ["secretary", "committee"],
            [S.interviewed, S.recommended, S.not_recommended, S.suspended],
        ),
    ],
)
def test_the_states_waiting_on_a_staff_member(roles: list[str], states: list[State]) -> None:
    assert waiting_states(roles) == states
