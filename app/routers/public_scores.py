"""Poverty level by CNIC for the public website (category iii), fair-usage limited per IP."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Path, Request
from starlette.datastructures import State
from starlette.responses import Response

from app import rate_limit
from app.errors import problem
from app.openapi import problems
from app.schemas.cnic import CNIC_PATTERN
from app.schemas.public import PublicScore, parse_cnic
from app.services.registry import lookup as lookup_service

router = APIRouter(prefix="/v1/public", tags=["public"])

PATH_PREFIX = "/v1/public/scores/"


@router.get(
    "/scores/{cnic}",
    response_model=PublicScore,
    # Answered without the database dependency or the limiter decorator (see the fast
    # path), so 429 and 503 are declared here rather than implied.
    responses=problems(404, 429, 503),
)
async def get_poverty_score(
    request: Request,
    cnic: Annotated[
        str,
        Path(
            description="13 digits, with or without the dashes",
            examples=["35202-1234567-3"],
            json_schema_extra={"pattern": CNIC_PATTERN},
        ),
    ],
) -> Response:
    """The PMT score and poverty band of a living member's household, by CNIC."""
    # The same code as the pure-ASGI shortcut (app/public_fastpath.py): a malformed CNIC
    # gets one answer, and counts against the limit, whichever path serves the request.
    return await public_score_response(request.app.state, cnic, rate_limit.client_ip(request))


# What the look-up answers when nobody matches, and the failures that mean "try later";
# the website's /check page words its answers from the same facts.
NOT_FOUND = "no living member of the registry has this CNIC"
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a failover: see app.errors.DATABASE_UNAVAILABLE
)


def fair_usage_wait(state: State, client: str) -> int | None:
    """Count one look-up by ``client`` (an IP) against NSER_PUBLIC_LOOKUP_LIMITS: the seconds
    to wait if the budget is spent, else None. One budget per IP for the API and the website."""
    return rate_limit.hit(
        state.rate_limit_backend, state.public_lookup_limits, "public_lookup", client
    )


async def public_score_response(state: State, written: str, client: str) -> Response:
    """The whole public look-up: fair-usage limit, CNIC check, query, answer."""
    retry_after = fair_usage_wait(state, client)
    if retry_after is not None:
        return problem(
            429,
            f"fair-usage limit reached; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        cnic = parse_cnic(written)
    except ValueError as exc:
        return problem(
            422,
            f"cnic: {exc}",
            errors=[
                {
                    "loc": ["path", "cnic"],
                    "field": "cnic",
                    "message": str(exc),
                    "type": "value_error",
                }
            ],
        )
    try:
        score = await lookup_service.public_score(state.reads, cnic)
    except UNAVAILABLE:
        return problem(
            503,
            "the registry is temporarily unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )
    if score is None:
        return problem(404, NOT_FOUND)
    return Response(score, media_type="application/json")
