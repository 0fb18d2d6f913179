"""The acknowledgement of the asynchronous DCI routes (app/routers/dci_async.py): the
standard's ``Response``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DciAckMessage(BaseModel):
    ack_status: Literal["ACK"] = Field(
        description="ACK: the message was taken; its answer comes by callback"
    )
    timestamp: str = Field(examples=["2026-12-11T04:00:00.120Z"])
    correlation_id: str = Field(
        max_length=99, description="the id the callback's message carries (and txn/status reads)"
    )


class DciAck(BaseModel):
    """``{"message": {"ack_status": "ACK", "timestamp", "correlation_id"}}``."""

    message: DciAckMessage
