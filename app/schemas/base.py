"""The base of every JSON request body: unknown fields and control characters are refused,
and ``null`` for an optional field means it was not given."""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

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


def _admits_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_admits_none(arg) for arg in get_args(annotation))
    if get_origin(annotation) is Annotated:
        return _admits_none(get_args(annotation)[0])
    return False


def null_means_not_given(info: FieldInfo) -> bool:
    """Whether ``null`` for this field is read as the field left out: every optional field,
    but one whose ``null`` is a value of its own (it admits None and defaults to something
    else). Required fields keep refusing ``null`` unless their type admits it."""
    if info.is_required():
        return False
    defaults_to_none = info.default is None and info.default_factory is None
    return defaults_to_none or not _admits_none(info.annotation)


_SCHEMA_OUTER_KEYS = ("title", "description", "default", "examples", "deprecated")


def _admits_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_admits_null(branch) for branch in schema.get("anyOf", ()))


def _optional_fields_admit_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra``: every optional property is documented as ``anyOf [..., null]``
    (generated clients send ``null`` for a field left unset); its title, description,
    default and examples stay on the property."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or _admits_null(prop):
            continue
        outer = {key: prop.pop(key) for key in _SCHEMA_OUTER_KEYS if key in prop}
        branches = prop.pop("anyOf") if list(prop) == ["anyOf"] else [dict(prop)]
        prop.clear()
        prop.update({"anyOf": [*branches, {"type": "null"}], **outer})


class BodyModel(BaseModel):
    """The base of every request body model. ``extra="forbid"``: a misspelt field is a 422,
    never silently dropped. ``null`` for an optional field is that field not given: the key
    is dropped before validation, so the default applies exactly as when it is left out
    (clients generated from the OpenAPI document send ``null`` for unset fields). Required
    fields stay required: ``null`` there is a 422 as before."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra=_optional_fields_admit_null,
    )
    # The input names (aliases) of the fields whose null means "not given".
    _null_is_omission: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._null_is_omission = frozenset(
            name if not isinstance(info.validation_alias, str) else info.validation_alias
            for name, info in cls.model_fields.items()
            if null_means_not_given(info)
        )

    @model_validator(mode="before")
    @classmethod
    def _drop_null_optionals(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            names = cls._null_is_omission
            return {k: v for k, v in data.items() if v is not None or k not in names}
        return data


class StrictModel(BodyModel):
    """A :class:`BodyModel` whose text holding a control character (U+0000-U+001F, U+007F)
    is refused too, at any depth of a list; fields marked ``PARAGRAPHS`` may hold line
    breaks."""

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
