"""The data-sharing request workflow as an explicit, pure state machine (protocol §5.1, §6).

An organization applies through the Data Request Form (§5.1.1); NSER-MU verifies it
(§5.1.2), defines its conditions and interviews the applicant (§5.1.3-5.1.4); the Data
Sharing Committee recommends, the Secretary BISP accords final approval (§4.2.1); the
agreement is signed (§5.1.5) and data flows until the agreement expires, or until a spot
check (§4.1.7, M&E team §6.4) suspends or revokes it. No database, no web framework: the
store asks ``next_state`` and records the answer.

::

    submitted -start_review-> under_review -review-> reviewed -record_interview-> interviewed
                                                                                       |
                               +---------------------- recommend ----------+-----------+
                               | "approve"                        "reject" |
                               v                                           v
      approved <-approve- recommended -reject-> rejected* <-reject- not_recommended
          |
         sign
          v           suspend
        active  ----------------->  suspended
          |     <-----------------     |
          |           resume           |
          +--revoke--> revoked*  <-----+--revoke
          +--expire--> expired*  <-----+--expire

    withdraw: submitted | under_review | reviewed | interviewed | recommended
              | not_recommended  -->  withdrawn*
    (* terminal: nothing leaves it)

=================  =====================  ==============================================
action             owners                 from -> to
=================  =====================  ==============================================
start_review       officer                submitted -> under_review
review             officer                under_review -> reviewed
record_interview   officer                reviewed -> interviewed (passed or failed)
recommend          committee              interviewed -> recommended | not_recommended
approve            secretary              recommended -> approved
reject             secretary              recommended, not_recommended -> rejected
sign               officer                approved -> active
withdraw           requester, officer     submitted .. not_recommended -> withdrawn
suspend            me, secretary          active -> suspended
resume             secretary              suspended -> active
revoke             me, secretary          active, suspended -> revoked
expire             system                 active, suspended -> expired
=================  =====================  ==============================================

Who a request waits on (``WAITING_ON``, ``waiting_states``; the staff's "my work" queues)
follows from the table: the roles owning an action that takes it on from its state, the
withdrawal and the oversight of a running agreement (suspend, revoke, expire) aside. So
submitted, under_review, reviewed and approved wait on an officer, interviewed on the
committee, recommended, not_recommended and suspended on the Secretary; active waits on no
one.

Choices the protocol leaves open:

* The Secretary approves only what the committee recommended; a ``not_recommended``
  request can only be rejected (or withdrawn). Approval "on recommendations of the Data
  Sharing Committee" (§4.2.1) is thereby enforced, not merely advised; the Secretary's final
  authority is the power to reject even a recommended request.
* ``admin`` owns no workflow action. Admins manage staff accounts; one who could also approve
  or sign would bypass the committee (separation of duties). Holding ``admin`` neither grants
  nor removes anything: a person who is also ``secretary`` acts as secretary.
* ``requester`` (the applicant, through its status-link token) and ``system`` (the expiry
  scheduler) are pseudo-roles, never granted to a staff account. A role name the module does
  not know (another part of the service's roles) is ignored: it owns nothing here.
* Review is strict: no re-review, no going back a step. A request that must be redone is
  withdrawn and submitted again.
* ``record_interview`` moves to ``interviewed`` whether the interview passed or failed; the
  committee reads the outcome. ``recommend`` needs ``outcome`` "approve" or "reject"
  (the payload's ``recommendation``).

Errors: the role is checked first, so an actor owning no part of the action learns nothing
about the request's state (``RoleDenied``, HTTP 403); then the state (``InvalidTransition``,
HTTP 409, naming the current state and the states the action is allowed from); then the
outcome (``ValueError``, HTTP 422).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from app.services.casework import workflow


class State(StrEnum):
    submitted = "submitted"
    under_review = "under_review"
    reviewed = "reviewed"
    interviewed = "interviewed"
    recommended = "recommended"
    not_recommended = "not_recommended"
    approved = "approved"
    rejected = "rejected"
    active = "active"
    expired = "expired"
    suspended = "suspended"
    revoked = "revoked"
    withdrawn = "withdrawn"


class Role(StrEnum):
    officer = "officer"
    committee = "committee"
    secretary = "secretary"
    me = "me"
    admin = "admin"
    requester = "requester"
    system = "system"


class Action(StrEnum):
    start_review = "start_review"
    review = "review"
    record_interview = "record_interview"
    recommend = "recommend"
    approve = "approve"
    reject = "reject"
    sign = "sign"
    withdraw = "withdraw"
    suspend = "suspend"
    resume = "resume"
    revoke = "revoke"
    expire = "expire"


TERMINAL: frozenset[State] = frozenset(
    {State.rejected, State.withdrawn, State.revoked, State.expired}
)

# Roles no staff account holds: the applicant (status-link token) and the scheduler.
PSEUDO_ROLES: frozenset[Role] = frozenset({Role.requester, Role.system})

# States from which the applicant (or an officer on its behalf) may still withdraw.
PRE_APPROVAL: frozenset[State] = frozenset(
    {
        State.submitted,
        State.under_review,
        State.reviewed,
        State.interviewed,
        State.recommended,
        State.not_recommended,
    }
)

OWNERS: Mapping[Action, frozenset[Role]] = MappingProxyType(
    {
        Action.start_review: frozenset({Role.officer}),
        Action.review: frozenset({Role.officer}),
        Action.record_interview: frozenset({Role.officer}),
        Action.recommend: frozenset({Role.committee}),
        Action.approve: frozenset({Role.secretary}),
        Action.reject: frozenset({Role.secretary}),
        Action.sign: frozenset({Role.officer}),
        Action.withdraw: frozenset({Role.requester, Role.officer}),
        Action.suspend: frozenset({Role.me, Role.secretary}),
        Action.resume: frozenset({Role.secretary}),
        Action.revoke: frozenset({Role.me, Role.secretary}),
        Action.expire: frozenset({Role.system}),
    }
)


def _to(target: State, *sources: State) -> Mapping[State, State]:
    return MappingProxyType(dict.fromkeys(sources, target))


# For ``recommend`` the table says ``recommended``; outcome "reject" picks ``not_recommended``.
TRANSITIONS: Mapping[Action, Mapping[State, State]] = MappingProxyType(
    {
        Action.start_review: _to(State.under_review, State.submitted),
        Action.review: _to(State.reviewed, State.under_review),
        Action.record_interview: _to(State.interviewed, State.reviewed),
        Action.recommend: _to(State.recommended, State.interviewed),
        Action.approve: _to(State.approved, State.recommended),
        Action.reject: _to(State.rejected, State.recommended, State.not_recommended),
        Action.sign: _to(State.active, State.approved),
        Action.withdraw: _to(State.withdrawn, *sorted(PRE_APPROVAL, key=list(State).index)),
        Action.suspend: _to(State.suspended, State.active),
        Action.resume: _to(State.active, State.suspended),
        Action.revoke: _to(State.revoked, State.active, State.suspended),
        Action.expire: _to(State.expired, State.active, State.suspended),
    }
)

# Actions that end or interrupt a request rather than take it a step along its path: the
# applicant's (or an officer's) withdrawal, the oversight of a running agreement, expiry.
# A state from which only these are possible waits on nobody.
SIDE_ACTIONS: frozenset[Action] = frozenset(
    {Action.withdraw, Action.suspend, Action.revoke, Action.expire}
)


def _waiting_on() -> Mapping[State, frozenset[Role]]:
    out: dict[State, frozenset[Role]] = {}
    for state in State:
        owners = {
            role
            for action, sources in TRANSITIONS.items()
            if action not in SIDE_ACTIONS and state in sources
            for role in OWNERS[action]
        }
        if owners:
            out[state] = frozenset(owners)
    return MappingProxyType(out)


# Who a request in each state waits on: the staff roles owning an action that takes it on
# from there (SIDE_ACTIONS aside). Read from the tables above, never written by hand:
# submitted, under_review, reviewed, approved -> officer; interviewed -> committee;
# recommended, not_recommended, suspended -> secretary. ``active`` and the terminal states
# wait on no one.
WAITING_ON: Mapping[State, frozenset[Role]] = _waiting_on()

# The outcomes an action accepts; an action not listed takes none.
RECOMMENDATIONS: Mapping[str, State] = MappingProxyType(
    {"approve": State.recommended, "reject": State.not_recommended}
)
INTERVIEW_OUTCOMES: frozenset[str] = frozenset({"passed", "failed"})


# The shared checks; their names stay this module's public ones.
WorkflowError = workflow.WorkflowError
RoleDenied = workflow.RoleDenied
InvalidTransition = workflow.InvalidTransition


_ROLE_NAMES = frozenset(role.value for role in Role)


def _roles(roles: Iterable[Role]) -> frozenset[Role]:
    # A role name this module does not know owns nothing here (fail closed, no crash).
    return frozenset(Role(role) for role in roles if role in _ROLE_NAMES)


def roles_of(names: Iterable[str]) -> list[Role]:
    """The workflow roles among a staff member's role names (sorted; unknown names dropped)."""
    return [Role(n) for n in sorted(names) if n in Role.__members__]


def next_state(
    state: State, action: Action, roles: Iterable[Role], *, outcome: str | None = None
) -> State:
    """The state ``action`` by an actor holding ``roles`` moves a request in ``state`` to.

    Raises ``RoleDenied`` if no role owns the action (checked first, whatever the state),
    ``InvalidTransition`` if the action is not allowed from ``state``, and ``ValueError``
    for a bad ``outcome``: ``recommend`` needs "approve" or "reject", ``record_interview``
    accepts "passed" or "failed" (or none), every other action takes none.
    """
    state, action, held = State(state), Action(action), _roles(roles)
    target = workflow.step(
        state,
        action,
        held,
        owners=OWNERS,
        transitions=TRANSITIONS,
        terminal=TERMINAL,
        roles=Role,
        noun="request",
    )
    if action is Action.recommend:
        if outcome is None or outcome not in RECOMMENDATIONS:
            raise ValueError(
                f"recommend needs the recommendation 'approve' or 'reject', not {outcome!r}"
            )
        return RECOMMENDATIONS[outcome]
    if action is Action.record_interview:
        if outcome is not None and outcome not in INTERVIEW_OUTCOMES:
            raise ValueError(f"an interview's outcome is 'passed' or 'failed', not {outcome!r}")
    elif outcome is not None:
        raise ValueError(f"{action} takes no outcome (got {outcome!r})")
    return target


def allowed_actions(state: State, roles: Iterable[Role]) -> list[Action]:
    """The actions an actor holding ``roles`` may take on a request in ``state``, in order."""
    state, held = State(state), _roles(roles)
    return [action for action in Action if held & OWNERS[action] and state in TRANSITIONS[action]]


def waiting_states(roles: Iterable[str]) -> list[State]:
    """The states in which a request waits on one of ``roles`` (role names; unknown ones
    and the pseudo-roles own nothing here), in the machine's order."""
    held = {Role(name) for name in roles if name in _ROLE_NAMES} - PSEUDO_ROLES
    return [state for state, owners in WAITING_ON.items() if owners & held]
