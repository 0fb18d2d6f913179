"""The DCI envelope: ``{signature, header, message}`` in, ``{header, message}`` out.

Two kinds of refusal, as the spdci standard separates them:

- the message cannot be taken at all (not JSON, no ``header`` or ``message``, a header field
  missing, unknown or wrong, no valid token, not allowed): :class:`DciError`, answered with
  the standard's HTTP error body ``{"errors": [{"code": "err.…", "message": …}]}`` and a
  4xx status;
- the message is well formed but a request in it is not (an attribute, an operator, a sort
  or a page NSER does not support): :class:`Rejected`, answered in the action's own reply
  envelope (``on-search``) with ``status: rjct`` and the standard's ``rjct.…`` reason code.

Every field name is checked against those the standard defines for its object: an unknown
one is refused with its name (fail closed), never ignored.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from app.services.dci import registration, signing

VERSION = "1.0.0"
SENDER_ID = "nser"
# The standard's error codes (its ``Error.code`` enumeration) NSER answers.
BAD = "err.request.bad"
UNAUTHORIZED = "err.request.unauthorized"
FORBIDDEN = "err.request.forbidden"
NOT_FOUND = "err.request.not_found"
TOO_MANY = "err.request.too_many_requests"
VERSION_NOT_SUPPORTED = "err.version.not_supported"
ENCRYPTION_INVALID = "err.encryption.invalid"
UNAVAILABLE = "err.service.unavailable"
SENDER_URI_INVALID = "err.sender_uri.invalid"

# An identifier a client chooses (transaction, reference, message ids): printable, bounded.
_ID = re.compile(r"[\x21-\x7e]{1,99}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HEADER_FIELDS = frozenset(
    {
        "version",
        "message_id",
        "message_ts",
        "action",
        "sender_id",
        "sender_uri",
        "receiver_id",
        "total_count",
        "is_msg_encrypted",
        "meta",
    }
)
HEADER_REQUIRED = ("message_id", "message_ts", "action", "sender_id", "total_count")


class DciError(Exception):
    """A message NSER cannot take: an HTTP error status and the standard's error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message[:999]
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"errors": [{"code": self.code, "message": self.message}]}


class Rejected(Exception):
    """One request of a well-formed message refused, with the standard's reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:999]


def bad(message: str) -> DciError:
    return DciError(400, BAD, message)


def now() -> str:
    """An ISO 8601 timestamp with its offset, as every DCI timestamp is."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a DCI message; 400 ``err.request.bad`` for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object with header and message")
    return body


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 date-time with its offset, or None when ``value`` is not one."""
    if not isinstance(value, str) or len(value) > 64 or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def check_fields(
    obj: Mapping[str, Any], allowed: Iterable[str], where: str, error: type[Exception] | None
) -> None:
    """Refuse the first field of ``obj`` the standard does not define for ``where``."""
    known = set(allowed)
    for name in obj:
        if name not in known:
            text = f"{where}: unknown field {name!r}"
            if error is Rejected:
                raise Rejected("rjct.search_criteria.invalid", text)
            raise bad(text)


def identifier(value: object, where: str) -> str:
    """A client's identifier: 1-99 printable ASCII characters."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise bad(f"{where} must be a string of 1-99 printable characters")
    return value


def has_control(value: object) -> bool:
    return isinstance(value, str) and _CONTROL.search(value) is not None


@dataclass(frozen=True)
class Header:
    message_id: str
    sender_id: str
    total_count: int


def parse_envelope(
    body: Mapping[str, Any], action: str, message_fields: Iterable[str]
) -> tuple[Header, dict[str, Any]]:
    """The checked header and the message object of a request envelope for ``action``."""
    check_fields(body, ("signature", "header", "message"), "envelope", DciError)
    if "header" not in body:
        raise bad("the envelope has no header")
    if "message" not in body:
        raise bad("the envelope has no message")
    signature = body.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise bad("signature must be a string")
    header = body["header"]
    if not isinstance(header, dict):
        raise bad("header must be an object")
    check_fields(header, HEADER_FIELDS, "header", DciError)
    for name in HEADER_REQUIRED:
        if name not in header:
            raise bad(f"header.{name} is required")
    version = header.get("version", VERSION)
    if version != VERSION:
        raise DciError(400, VERSION_NOT_SUPPORTED, f"header.version must be {VERSION!r}")
    if header["action"] != action:
        raise bad(f"header.action must be {action!r} on this endpoint")
    message_id = identifier(header["message_id"], "header.message_id")
    if parse_timestamp(header["message_ts"]) is None:
        raise bad("header.message_ts must be an ISO 8601 date-time with its offset")
    sender_id = identifier(header["sender_id"], "header.sender_id")
    total = header["total_count"]
    # The standard's own examples write the count as a string of digits.
    if isinstance(total, str) and total.isdigit() and len(total) <= 6:
        total = int(total)
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise bad("header.total_count must be a non-negative integer")
    for name in ("sender_uri", "receiver_id"):
        value = header.get(name)
        if value is not None and (not isinstance(value, str) or has_control(value)):
            raise bad(f"header.{name} must be a string without control characters")
    encrypted = header.get("is_msg_encrypted", False)
    if not isinstance(encrypted, bool):
        raise bad("header.is_msg_encrypted must be true or false")
    if encrypted:
        raise DciError(400, ENCRYPTION_INVALID, "encrypted messages are not supported")
    if "meta" in header and not isinstance(header["meta"], dict):
        raise bad("header.meta must be an object")
    message = body["message"]
    if not isinstance(message, dict):
        raise bad("message must be an object")
    check_fields(message, message_fields, "message", DciError)
    return Header(message_id, sender_id, total), message


def reply_header(
    action: str,
    status: str,
    request: Header | None,
    *,
    total: int,
    completed: int,
    reason_message: str | None = None,
) -> dict[str, Any]:
    """The header of NSER's reply (the standard's ``MsgCallbackHeader``)."""
    header: dict[str, Any] = {
        "version": VERSION,
        "message_id": new_id(),
        "message_ts": now(),
        "action": action,
        "status": status,
        "total_count": total,
        "completed_count": completed,
        "sender_id": SENDER_ID,
        "is_msg_encrypted": False,
    }
    if request is not None:
        header["receiver_id"] = request.sender_id
        header["meta"] = {"in_reply_to": request.message_id}
    if reason_message:
        header["status_reason_message"] = reason_message[:999]
    return header


# -- signatures ---------------------------------------------------------------------------


async def verify_signature(
    pool: asyncpg.Pool, agreement_id: uuid.UUID | None, body: Mapping[str, Any]
) -> None:
    """Check a message's signature against the key its agreement registered (every DCI
    route, sync and asynchronous, once the message's form is checked): 400
    ``err.signature.missing`` when a key is registered and the message carries no
    signature, 400 ``err.signature.invalid`` when it does not verify with that key. Without
    a registered key, nothing is required (and a signature is not checked)."""
    if agreement_id is None:
        return
    async with pool.acquire() as conn:
        try:
            await registration.verify_message(conn, agreement_id, dict(body))
        except signing.SignatureError as exc:
            raise DciError(400, exc.code, exc.message) from None
