"""The status link of a case the public filed (a data-sharing request, a grievance): its
reference and the token shown once, opened with one answer for every wrong link."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from app.errors import NotFound
from app.web.render import WebError

TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


async def open_link(
    load: Callable[[Any, str, str], Awaitable[dict[str, Any]]],
    pool: Any,
    reference: str,
    token: str | None,
    *,
    reference_pattern: re.Pattern[str],
    not_found: WebError,
) -> dict[str, Any]:
    """``load(pool, reference, token)``'s public view of the case, or ``not_found`` for a
    malformed link, an unknown reference and a wrong token alike: the link is the only key."""
    if not token or not reference_pattern.match(reference) or not TOKEN.match(token):
        raise not_found
    try:
        return await load(pool, reference, token)
    except NotFound:
        raise not_found from None
