"""The console's forms and its scripts' requests: read capped, CSRF-checked, fail closed.

A form posts ``application/x-www-form-urlencoded`` with the website's signed double-submit
CSRF field; the passkey script posts JSON with the same token in ``X-CSRF-Token`` (JSON
cannot be sent across sites without a CORS preflight, which is never granted). Unknown
or repeated fields are refused.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar
from urllib.parse import parse_qsl

from fastapi import Request
from limits import RateLimitItem, parse_many
from pydantic import BaseModel

from app import rate_limit
from app.errors import BadRequest, Forbidden, TooManyRequests
from app.schemas.staff import CEREMONY_MAX_BYTES
from app.strict import parse_json, read_capped
from app.web.render import WebContext, WebError

Body = TypeVar("Body", bound=BaseModel)
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_MAX_BYTES = 8 * 1024
CSRF_HEADER = "x-csrf-token"


async def read_form(
    request: Request, web: WebContext, fields: frozenset[str], *, repeatable: frozenset[str]
) -> dict[str, list[str]]:
    """The posted fields by name (``repeatable`` ones may come several times)."""
    body = await read_capped(request, FORM_MAX_BYTES)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise WebError(400, web.gettext("Please go back and try again."))
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=50, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise WebError(422, web.gettext("Please check the form and try again.")) from None
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        found.setdefault(name, []).append(value)
    csrf = found.pop("csrf_token", [])
    if len(csrf) != 1 or not web.csrf_ok(csrf[0]):
        raise WebError(
            403, web.gettext("Please reload the page and try again. Nothing was changed.")
        )
    unknown = set(found) - fields
    repeated = {name for name, values in found.items() if len(values) > 1} - repeatable
    if unknown or repeated:
        raise WebError(
            422, web.gettext("The form sent fields it does not have. Nothing was changed.")
        )
    return found


@cache
def _limits(text: str) -> list[RateLimitItem]:
    items: list[RateLimitItem] = parse_many(text)
    return items


async def read_json(request: Request, web: WebContext, model: type[Body]) -> Body:
    """A ceremony step's JSON body: CSRF header, the per-IP budget of ceremonies
    (``NSER_STAFF_SIGN_IN_LIMITS``), then the model (422 for anything else)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest("send the body as application/json", extra={"code": "malformed"})
    if not web.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise Forbidden("reload the page and try again", extra={"code": "csrf"})
    state = request.app.state
    wait = rate_limit.hit(
        state.rate_limit_backend,
        _limits(state.settings.staff_sign_in_limits),
        rate_limit.client_ip(request),
        "staff_ceremonies",
    )
    if wait is not None:
        raise TooManyRequests(
            f"too many passkey attempts from your address; try again in {wait} s",
            headers={"Retry-After": str(wait)},
            extra={"code": "too_many", "retry_after": wait},
        )
    return parse_json(model, await read_capped(request, CEREMONY_MAX_BYTES))
