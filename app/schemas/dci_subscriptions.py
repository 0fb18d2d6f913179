"""The DCI subscription messages as the OpenAPI document describes them
(app/routers/dci_subscriptions.py). As for the search (app.schemas.dci), the routes read
their bodies by hand and name each refusal with the standard's codes; these models only
tell the document what the routes take and answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.base import BodyModel
from app.schemas.dci import DciRequestHeader

EventType = Literal["REGISTER", "UPDATE", "DEATH", "BIRTH", "MOVE", "RESCORE", "NewHouseHoldMember"]


class DciFrequency(BodyModel):
    start_time: str | None = Field(default=None, max_length=64)
    end_time: str | None = Field(default=None, max_length=64)
    frequency: str | None = Field(
        default=None,
        max_length=100,
        description="not supported: a subscription giving a schedule is rejected "
        "(rjct.notify_details.invalid); NSER notifies each change as it happens, within the "
        "start_time/end_time window",
    )


class DciSubscribeCriteria(BodyModel):
    version: Literal["1.0.0"] = "1.0.0"
    reg_type: Literal["ns:org:RegistryType:Social", "ns:org:RegistryType:SR"] | None = None
    reg_event_type: EventType = Field(
        description="REGISTER, UPDATE, DEATH, BIRTH, MOVE or RESCORE (also in lower case; "
        "registration, re-score and NewHouseHoldMember as aliases)"
    )
    frequency: DciFrequency | None = None
    filter_type: Literal["idtype-value", "expression", "predicate"] | None = None
    filter: dict[str, Any] | list[dict[str, Any]] = Field(
        description="the search's query language: idtype-value, expression or predicate"
    )
    notify_record_type: Literal["Group", "Household", "HouseHold"]
    authorize: dict[str, Any] | None = None


class DciSubscribeItem(BodyModel):
    reference_id: str = Field(min_length=1, max_length=99)
    timestamp: str = Field(max_length=64, examples=["2026-12-11T09:00:00Z"])
    subscribe_criteria: DciSubscribeCriteria
    locale: str | None = Field(default=None, pattern=r"^[a-z]{3}$")


class DciSubscribeMessage(BodyModel):
    transaction_id: str = Field(min_length=1, max_length=99)
    subscribe_request: list[DciSubscribeItem] = Field(min_length=1, max_length=10)


class DciSubscribeRequest(BodyModel):
    """``POST /dci/registry/subscribe``: up to 10 subscription requests."""

    signature: str | None = None
    header: DciRequestHeader
    message: DciSubscribeMessage


class DciUnsubscribeMessage(BodyModel):
    transaction_id: str = Field(min_length=1, max_length=99)
    timestamp: str = Field(
        max_length=64, description="the standard's misspelt `timesstamp` is not read"
    )
    subscription_codes: list[str] = Field(
        min_length=1,
        max_length=100,
        description="the standard's misspelt `sunscription_codes` is not read",
    )


class DciUnsubscribeRequest(BodyModel):
    """``POST /dci/registry/unsubscribe``: end subscriptions by code."""

    signature: str | None = None
    header: DciRequestHeader
    message: DciUnsubscribeMessage


class DciAckMessage(BaseModel):
    ack_status: Literal["ACK"]
    timestamp: str
    correlation_id: str


class DciAck(BaseModel):
    """The standard's acknowledgement: taken; the outcome follows as a callback."""

    message: DciAckMessage
