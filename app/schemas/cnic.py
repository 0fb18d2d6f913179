"""The CNIC domain type: accepted as ``12345-1234567-1`` or ``1234512345671``, kept as 13 digits.

Shared by every schema and path that takes a CNIC (public and partner look-ups, updates).
Only ASCII digits count: ``str.isdigit`` and ``\\d`` also accept Arabic-Indic or Devanagari
digits, which no CNIC contains and which must not reach the database as a near-miss.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

# Either all 13 digits, or the printed form with both dashes; nothing else (no spaces,
# no single dash, no unicode digits).
_CNIC = re.compile(r"[0-9]{13}|[0-9]{5}-[0-9]{7}-[0-9]", re.ASCII)
CNIC_PATTERN = r"^([0-9]{13}|[0-9]{5}-[0-9]{7}-[0-9])$"


def parse_cnic(value: str) -> str:
    """Normalize a CNIC to its 13 digits; ``ValueError`` for anything that is not one."""
    if not isinstance(value, str) or not _CNIC.fullmatch(value):
        raise ValueError("a CNIC is 13 digits, optionally written as #####-#######-#")
    return value.replace("-", "") if len(value) == 15 else value


def mask_cnic(cnic: str) -> str:
    """``3520212345673`` -> ``35202-*******-3`` (public responses and logs)."""
    digits = cnic.replace("-", "")
    return f"{digits[:5]}-*******-{digits[12:]}"


Cnic = Annotated[
    str,
    Field(
        description="13 digits, with or without the dashes #####-#######-#",
        examples=["35202-1234567-3", "3520212345673"],
        json_schema_extra={"pattern": CNIC_PATTERN},
    ),
    AfterValidator(parse_cnic),
]
