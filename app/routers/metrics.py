"""Prometheus scrape endpoint, behind a bearer token of its own (``NSER_METRICS_TOKEN``).

Without the setting ``/metrics`` answers as an unknown path does: request counts and
latencies per route are the operator's, not the public's.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Header
from starlette.responses import Response

from app import metrics
from app.deps import SettingsDep
from app.errors import NotFound, Unauthorized

router = APIRouter(tags=["operations"])


def _digest(token: str) -> bytes:
    # Compared as digests, so the comparison takes as long whatever the length given.
    return hashlib.sha256(token.encode()).digest()


@router.get("/metrics", include_in_schema=False)
async def get_metrics(
    settings: SettingsDep, authorization: str | None = Header(default=None)
) -> Response:
    """Request counts and latencies of every worker, in the Prometheus text format."""
    if settings.metrics_token is None:
        raise NotFound("no such resource")
    scheme, _, given = (authorization or "").partition(" ")
    expected = _digest(settings.metrics_token.get_secret_value())
    if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(given.strip()), expected):
        raise Unauthorized("missing or wrong metrics token")
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
