"""JSON logs with the request id; CNICs are masked in every message and field."""

from __future__ import annotations

import logging
import re
import sys
from contextlib import nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from app.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# 13 digits, dashed or not, not part of a longer number.
_CNIC = re.compile(r"(?<!\d)(\d{5})-?(\d{7})-?(\d)(?!\d)")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


# Most log lines hold nothing CNIC-shaped (access lines carry the path already masked);
# finding that out is several times cheaper than the full pattern's look-arounds.
_FIVE_DIGITS = re.compile(r"\d{5}-?\d{7}")


def mask_cnic(text: str) -> str:
    """``3520212345673`` or ``35202-1234567-3`` -> ``35202-*******-3``."""
    if _FIVE_DIGITS.search(text) is None:
        return text
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


class AccessLog:
    """One JSON line per request, in the same shape as every other log line.

    Written straight to the configured handler's stream: the logging module's record
    machinery (LogRecord, logger and handler dispatch, formatter) cost more than the rest
    of a public look-up's own work, and this line is written for every request.
    """

    def __init__(self) -> None:
        self.handler: logging.StreamHandler[Any] | None = None
        self.json = True

    def write(self, fields: dict[str, Any]) -> None:
        handler = self.handler
        if handler is None:
            return
        now = datetime.now(UTC)
        if self.json:
            payload: dict[str, Any] = {
                "ts": now.isoformat(timespec="milliseconds"),
                "level": "INFO",
                "logger": "nser.access",
                "msg": "request",
            }
            rid = request_id_var.get()
            if rid:
                payload["request_id"] = rid
            payload.update(fields)
            line = orjson.dumps(payload, default=str).decode()
        else:
            line = f"{now.isoformat(timespec='milliseconds')} INFO nser.access request {fields}"
        line = mask_cnic(line) + "\n"
        with handler.lock or nullcontext():
            handler.stream.write(line)
            handler.stream.flush()


access_log = AccessLog()


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
    access_enabled = logging.getLogger("nser.access").isEnabledFor(logging.INFO)
    access_log.handler = handler if access_enabled else None
    access_log.json = settings.log_json
