"""The checks every case workflow makes, pure: the role first, then the state.

A machine (``requests.machine``, ``grievances.machine``) declares its states, actions,
owners and transitions, and asks :func:`step` for the next state. An actor holding none of
an action's owning roles is refused whatever the state (:class:`RoleDenied`, HTTP 403: it
reveals nothing about the case); then an action not allowed from the current state is
refused naming both (:class:`InvalidTransition`, HTTP 409).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

S = TypeVar("S", bound=StrEnum)
A = TypeVar("A", bound=StrEnum)
R = TypeVar("R", bound=StrEnum)


def _names(items: Iterable[str], order: Iterable[str]) -> str:
    ranked = list(order)
    return ", ".join(sorted(items, key=ranked.index)) or "none"


class WorkflowError(Exception):
    """An action the workflow does not allow; ``str()`` is safe to show the caller."""


class RoleDenied(WorkflowError):
    """The actor holds none of the roles that own the action (HTTP 403)."""

    def __init__(
        self, action: StrEnum, roles: frozenset[R], required: frozenset[R], every: type[R]
    ) -> None:
        self.action = action
        self.roles = roles
        self.required = required
        super().__init__(
            f"{action} requires the role {_names(required, every)}"
            f" (the actor holds {_names(roles, every)})"
        )


class InvalidTransition(WorkflowError):
    """The action is not allowed from the case's current state (HTTP 409)."""

    def __init__(
        self,
        state: S,
        action: StrEnum,
        allowed_from: frozenset[S],
        *,
        final: bool,
        noun: str,
    ) -> None:
        self.state = state
        self.action = action
        self.allowed_from = allowed_from
        ending = " (a final state)" if final else ""
        super().__init__(
            f"cannot {action} a {noun} that is {state}{ending}; {action} is allowed only"
            f" from {_names(allowed_from, type(state))}"
        )


def step(
    state: S,
    action: A,
    held: frozenset[R],
    *,
    owners: Mapping[A, frozenset[R]],
    transitions: Mapping[A, Mapping[S, S]],
    terminal: frozenset[S],
    roles: type[R],
    noun: str,
) -> S:
    """The state ``action`` moves a case in ``state`` to, for an actor holding ``held``."""
    if not held & owners[action]:
        raise RoleDenied(action, held, owners[action], roles)
    target = transitions[action].get(state)
    if target is None:
        allowed = frozenset(transitions[action])
        raise InvalidTransition(state, action, allowed, final=state in terminal, noun=noun)
    return target
