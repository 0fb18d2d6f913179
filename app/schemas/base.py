"""The base of every JSON request body: unknown fields and control characters are refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from app.strict import has_control


class StrictModel(BaseModel):
    """``extra="forbid"``: a misspelt field is a 422, never silently dropped. Text holding a
    control character (U+0000-U+001F, U+007F) is refused too, at any depth of a list."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and has_control(text) for text in texts):
            raise ValueError("control characters are not allowed")
        return value
