"""The base of every JSON request body: unknown fields and control characters are refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

from app.strict import has_control

# A UUID in its canonical 8-4-4-4-12 form: anything else in an id is refused before the
# database sees it (PostgreSQL would refuse it as a uuid, which must be a 422, not a 500).
UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")


def _written_as(pattern: re.Pattern[str], what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        # Pydantic alone would read 0 or "0.5" as seconds since 1970: a date must be written.
        if isinstance(value, str) and not pattern.match(value):
            raise ValueError(f"must be {what}")
        if isinstance(value, int | float):
            raise ValueError(f"must be {what}, not a number")
        return value

    return check


# Dates and date-times as callers must write them (ISO 8601), in bodies and query strings.
IsoDate = Annotated[date, BeforeValidator(_written_as(_ISO_DATE, "an ISO 8601 date, YYYY-MM-DD"))]
IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_written_as(_ISO_DATETIME, "an ISO 8601 date-time, YYYY-MM-DDTHH:MM[:SS]…")),
]


class Paragraphs:
    """Field metadata: this text may hold line breaks (a form's free text: a purpose, a
    methodology, a grievance's details). ``CR LF`` is read as ``LF``; every other control
    character is refused as elsewhere. Use the ``PARAGRAPHS`` instance:
    ``Annotated[str, Field(max_length=4000), PARAGRAPHS]``."""


PARAGRAPHS = Paragraphs()
# Control characters but the line feed.
_CONTROL_BUT_LF = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class StrictModel(BaseModel):
    """``extra="forbid"``: a misspelt field is a 422, never silently dropped. Text holding a
    control character (U+0000-U+001F, U+007F) is refused too, at any depth of a list;
    fields marked ``PARAGRAPHS`` may hold line breaks."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    _paragraph_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._paragraph_fields = frozenset(
            name
            for name, info in cls.model_fields.items()
            if any(isinstance(item, Paragraphs) for item in info.metadata)
        )

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and info.field_name in cls._paragraph_fields:
            value = value.replace("\r\n", "\n")
            if _CONTROL_BUT_LF.search(value):
                raise ValueError("control characters other than line breaks are not allowed")
            return value
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and has_control(text) for text in texts):
            raise ValueError("control characters are not allowed")
        return value
