"""The grievance form ↔ the API's :class:`GrievanceForm`: one set of rules. Pure.

The page's fields are the model's own (``cnic``, ``reason``, ``details``,
``contact_phone``); :func:`validate` checks a submission with the same model the API
takes, and maps each pydantic error back to its field with a plain message (a gettext msgid
and its values; the router translates it). The lengths the browser is told come from the
model too (:func:`max_length`).

The labels of the model's reasons, of the workflow's states and of the outcomes a filer may
see are defined here, marked for the ``grievance`` catalogue; tests check that they cover
exactly the model's and the machine's values.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from annotated_types import MaxLen
from pydantic import ValidationError

from app.schemas.grievances import GrievanceForm
from app.web.i18n import N_
from app.web.security import CSRF_FIELD

# The page's fields, in the order of the form: the model's own names.
FIELDS = ("cnic", "reason", "details", "contact_phone")
CHALLENGE_FIELD = "altcha"


def field_id(name: str, choice: str | None = None) -> str:
    return f"f-{name}-{choice}" if choice is not None else f"f-{name}"


def anchor(name: str) -> str:
    """Where the error summary's link for ``name`` points (a group's first choice)."""
    return field_id(name, next(iter(REASONS))) if name == "reason" else field_id(name)


def max_length(name: str) -> int | None:
    """The model's limit on a text field (an optional field's is on the type inside)."""
    info = GrievanceForm.model_fields[name]
    found = list(info.metadata)
    for inner in typing.get_args(info.annotation):  # ``Annotated[str, Field(...)] | None``
        for item in getattr(inner, "__metadata__", ()):
            found += [item, *getattr(item, "metadata", ())]
    for item in found:
        if isinstance(item, MaxLen):
            return int(item.max_length)
    return None


# -- reading a submission ------------------------------------------------------------------


class UnknownField(ValueError):
    """A field the form does not have, or a field sent twice."""


@dataclass
class Submission:
    """What was typed, trimmed, to re-fill the form; the CSRF field and a challenge solution."""

    values: dict[str, str] = field(default_factory=dict)
    csrf: str | None = None
    solution: str = ""

    def value(self, name: str) -> str:
        return self.values.get(name, "")


def _clean(text: str) -> str:
    """Trimmed, each line's trailing spaces dropped; the details' line breaks are kept."""
    return "\n".join(line.rstrip() for line in text.splitlines()).strip()


def read_fields(pairs: Iterable[tuple[str, str]]) -> Submission:
    """The submission from the body's (name, value) pairs; UnknownField fails it closed."""
    sub = Submission()
    seen: set[str] = set()
    for name, raw in pairs:
        if name in seen or name not in (*FIELDS, CSRF_FIELD, CHALLENGE_FIELD):
            raise UnknownField(name)
        seen.add(name)
        if name == CSRF_FIELD:
            sub.csrf = raw
        elif name == CHALLENGE_FIELD:
            sub.solution = raw
        elif value := _clean(raw):
            sub.values[name] = value
    return sub


# -- errors, mapped to fields ----------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """A message (a gettext msgid, translated where shown) and its ``%(name)s`` values."""

    message: str
    values: Mapping[str, Any] = field(default_factory=dict)


REQUIRED: Mapping[str, str] = {
    "cnic": N_("Enter the CNIC of a member of your household."),
    "reason": N_("Choose what is wrong."),
}
FORMAT: Mapping[str, str] = {
    "cnic": N_("Enter the CNIC as 13 digits, with or without dashes, like 12345-1234567-1."),
    "reason": N_("Choose one of the reasons shown."),
    "contact_phone": N_(
        "Enter a phone number in digits, spaces or dashes, which may start with +, for"
        " example +92 300 1234567."
    ),
}
DETAILS_FOR_OTHER = N_("Describe the problem when you choose “Something else”.")
TOO_LONG_TEXT = N_("Use at most %(max)s characters.")
CONTROL_CHARACTERS = N_("Remove the special (control) characters from this text.")
NOT_VALID = N_("This is not valid; please check it.")


def _error(name: str, kind: str, ctx: Mapping[str, Any], message: str) -> FieldError:
    if kind == "missing":
        return FieldError(REQUIRED.get(name, NOT_VALID))
    if kind == "string_too_long":
        return FieldError(TOO_LONG_TEXT, {"max": ctx.get("max_length")})
    if "control characters" in message:
        return FieldError(CONTROL_CHARACTERS)
    return FieldError(FORMAT.get(name, NOT_VALID))


def validate(sub: Submission) -> tuple[GrievanceForm | None, dict[str, FieldError]]:
    """The filing as the API would take it, or each field's first error in form order."""
    try:
        return GrievanceForm.model_validate(dict(sub.values)), {}
    except ValidationError as exc:
        found: dict[str, FieldError] = {}
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc == ():  # the model's own check: "other" needs details
                found.setdefault("details", FieldError(DETAILS_FOR_OTHER))
            elif loc and loc[0] in FIELDS:
                name = str(loc[0])
                problem = _error(name, str(err["type"]), err.get("ctx") or {}, str(err["msg"]))
                found.setdefault(name, problem)
        return None, {name: found[name] for name in FIELDS if name in found}


# -- labels of the model's and the workflow's values -------------------------------------------

REASONS: Mapping[str, str] = {
    "wrong_members": N_("The household's members are wrong: someone is missing, or listed wrongly"),
    "wrong_assets": N_("The household's assets or living conditions are recorded wrongly"),
    "resurvey": N_("Our situation has changed: please survey the household again"),
    "deceased_listed": N_("A member who has died is still listed"),
    "other": N_("Something else (describe it below)"),
}

# The workflow's states (app.services.grievances.machine), in plain words.
STATES: Mapping[str, tuple[str, str]] = {
    "received": (
        N_("Received"),
        N_("Your grievance has arrived. An officer of the NSER Management Unit will look at it."),
    ),
    "triaged": (
        N_("Being examined"),
        N_("An officer is examining your grievance and the household's record."),
    ),
    "resurvey_ordered": (
        N_("Re-survey ordered"),
        N_(
            "The household will be surveyed again. The survey team will visit; the score is"
            " worked out again from what they record."
        ),
    ),
    "resolved": (
        N_("Resolved"),
        N_("Your grievance has been dealt with. The outcome and its reasons are below."),
    ),
    "rejected": (
        N_("Not accepted"),
        N_("Your grievance was not accepted. The reasons are below."),
    ),
}

# The outcome of a closed grievance, as the filer sees it.
OUTCOMES: Mapping[str, str] = {
    "score_changed": N_("The household's score was changed."),
    "score_unchanged": N_("The household's score stays as it was."),
    "rejected": N_("The grievance was not accepted."),
}


def state_label(status: str) -> tuple[str, str]:
    """A state's name and explanation (msgids); an unknown state is shown as it is."""
    return STATES.get(status, (status, ""))
