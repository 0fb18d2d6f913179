"""JSON logs with the request id; CNICs are masked in every message and field."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from app.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# 13 digits, dashed or not, not part of a longer number.
_CNIC = re.compile(r"(?<!\d)(\d{5})-?(\d{7})-?(\d)(?!\d)")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def mask_cnic(text: str) -> str:
    """``3520212345673`` or ``35202-1234567-3`` -> ``35202-*******-3``."""
    return _CNIC.sub(r"\1-*******-\3", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            payload["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        text = orjson.dumps(payload, default=str).decode()
        return mask_cnic(text)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_cnic(super().format(record))


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if settings.log_json
        else PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The access log is written by our own middleware, with the CNIC in the path masked.
    logging.getLogger("uvicorn.access").disabled = True
