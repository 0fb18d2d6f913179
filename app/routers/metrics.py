"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app import metrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics() -> Response:
    """Request counts and latencies of every worker, in the Prometheus text format."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
