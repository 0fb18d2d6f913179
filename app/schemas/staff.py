"""What the staff console's scripts send during a passkey ceremony (app/web/staff).

``credential`` is the browser's PublicKeyCredential as JSON (binary fields base64url), read
and verified by py_webauthn; the body as a whole is capped (``CEREMONY_MAX_BYTES``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from app.schemas.base import StrictModel

CEREMONY_MAX_BYTES = 32 * 1024
# secrets.token_urlsafe(32), as the enrolment link carries it.
LinkToken = Annotated[str, Field(min_length=1, max_length=100)]
NextPath = Annotated[str, Field(max_length=500)]


class Nothing(StrictModel):
    """An empty body (``{}``): the options of a sign-in or a step-up."""


class EnrolOptionsIn(StrictModel):
    token: LinkToken


class EnrolAnswerIn(StrictModel):
    token: LinkToken
    credential: dict[str, Any]
    label: Annotated[str | None, Field(max_length=100)] = None


class AssertionIn(StrictModel):
    credential: dict[str, Any]
    next: NextPath | None = None
