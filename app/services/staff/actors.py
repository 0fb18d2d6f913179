"""Who an audit row of this package names: a member, the operator (CLI), or nobody known
(a failed sign-in with a passkey the registry does not know)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str
    client_id: str | None
    agreement_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None


OPERATOR = Actor("operator", None)
ANONYMOUS = Actor("anonymous", None)


def member(staff_id: str) -> Actor:
    return Actor("staff", staff_id)
