"""The grievance workflow as an explicit, pure state machine (issue 12, part 5).

A household member files a grievance about the household's score (``received``); an
officer triages it, orders a re-survey when the household's indicators must be measured
again, records the re-survey (sent into the registry as a ``household_survey`` update), and
resolves the grievance (the score changed or not, with reasons), or rejects it. No
database, no web framework: the store asks ``next_state`` and records the answer.

::

    received -triage-> triaged -order_resurvey-> resurvey_ordered <-+
       |                  |                        |    |           |
       |                  +------- resolve --------+----|----> resolved*
       |                  |                             |  record_resurvey
       +---- reject ------+---------- reject -----------+----> rejected*
    (* terminal: nothing leaves it)

================  ========  ====================================================
action            owners    from -> to
================  ========  ====================================================
triage            officer   received -> triaged
order_resurvey    officer   triaged -> resurvey_ordered
record_resurvey   officer   resurvey_ordered -> resurvey_ordered (a survey sent)
resolve           officer   triaged, resurvey_ordered -> resolved
reject            officer   received, triaged, resurvey_ordered -> rejected
================  ========  ====================================================

Choices:

* Only ``officer`` (NSER-MU) works grievances. ``me`` reads them and their service level
  (the M&E report); ``committee``, ``secretary`` and ``admin`` own nothing here. A role
  name this module does not know owns nothing (fail closed).
* ``record_resurvey`` may be repeated while the re-survey is ordered: a survey the
  registry rejected (a bad indicator, a stale version) is corrected and sent again.
* ``resolve`` takes no outcome: whether the score changed is read from the household's
  history by the store, never typed by hand.
* Rejection needs no triage first (a grievance that is plainly not one), but nothing
  leaves ``resolved`` or ``rejected``: a new grievance is filed instead.

Errors: the role is checked first, so an actor owning no part of the action learns nothing
about the grievance's state (``RoleDenied``, HTTP 403); then the state
(``InvalidTransition``, HTTP 409, naming the current state and the allowed ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from app.services.casework import workflow


class State(StrEnum):
    received = "received"
    triaged = "triaged"
    resurvey_ordered = "resurvey_ordered"
    resolved = "resolved"
    rejected = "rejected"


class Role(StrEnum):
    officer = "officer"
    committee = "committee"
    secretary = "secretary"
    me = "me"
    admin = "admin"


class Action(StrEnum):
    triage = "triage"
    order_resurvey = "order_resurvey"
    record_resurvey = "record_resurvey"
    resolve = "resolve"
    reject = "reject"


TERMINAL: frozenset[State] = frozenset({State.resolved, State.rejected})
OPEN: frozenset[State] = frozenset(set(State) - TERMINAL)

OWNERS: Mapping[Action, frozenset[Role]] = MappingProxyType(
    {action: frozenset({Role.officer}) for action in Action}
)


def _to(target: State, *sources: State) -> Mapping[State, State]:
    return MappingProxyType(dict.fromkeys(sources, target))


TRANSITIONS: Mapping[Action, Mapping[State, State]] = MappingProxyType(
    {
        Action.triage: _to(State.triaged, State.received),
        Action.order_resurvey: _to(State.resurvey_ordered, State.triaged),
        Action.record_resurvey: _to(State.resurvey_ordered, State.resurvey_ordered),
        Action.resolve: _to(State.resolved, State.triaged, State.resurvey_ordered),
        Action.reject: _to(State.rejected, State.received, State.triaged, State.resurvey_ordered),
    }
)


# The shared checks; their names stay this module's public ones.
WorkflowError = workflow.WorkflowError
RoleDenied = workflow.RoleDenied
InvalidTransition = workflow.InvalidTransition


def roles_of(names: Iterable[str]) -> frozenset[Role]:
    """The workflow roles among a staff member's role names (unknown names dropped)."""
    return frozenset(Role(n) for n in names if n in Role.__members__)


def next_state(state: State, action: Action, roles: Iterable[str]) -> State:
    """The state ``action`` by an actor holding ``roles`` moves a grievance in ``state`` to.

    Raises ``RoleDenied`` if no role owns the action (checked first, whatever the state),
    then ``InvalidTransition`` if the action is not allowed from ``state``.
    """
    state, action, held = State(state), Action(action), roles_of(roles)
    target = workflow.step(
        state,
        action,
        held,
        owners=OWNERS,
        transitions=TRANSITIONS,
        terminal=TERMINAL,
        roles=Role,
        noun="grievance",
    )
    return target


def allowed_actions(state: State, roles: Iterable[str]) -> list[Action]:
    """The actions an actor holding ``roles`` may take on a grievance in ``state``, in order."""
    state, held = State(state), roles_of(roles)
    return [a for a in Action if held & OWNERS[a] and state in TRANSITIONS[a]]
