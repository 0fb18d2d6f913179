"""The DCI messages as the OpenAPI document describes them (app/routers/dci.py).

The routes read their bodies by hand (``app.services.dci``): a DCI client must get the
standard's error codes, not a 422 problem. These models only tell the document what the
routes take and answer; the services hold the same rules and name each refusal.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.base import BodyModel


class DciRequestHeader(BodyModel):
    version: Literal["1.0.0"] = "1.0.0"
    message_id: str = Field(min_length=1, max_length=99, examples=["msg-0001"])
    message_ts: str = Field(max_length=64, examples=["2026-12-11T09:00:00Z"])
    action: str = Field(description="search, or txn-status", examples=["search"])
    sender_id: str = Field(min_length=1, max_length=99, examples=["spmis.example.org"])
    sender_uri: str | None = None
    receiver_id: str | None = None
    total_count: Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^[0-9]{1,6}$")] = (
        Field(description="the number of requests in the message (digits in a string too)")
    )
    is_msg_encrypted: Literal[False] = False
    meta: dict[str, Any] | None = None


class DciPagination(BodyModel):
    page_size: int = Field(ge=1, le=1000)
    page_number: int = Field(default=1, ge=1, le=100_000)


class DciSort(BodyModel):
    attribute_name: Literal["poverty_score", "pmt_score", "household_id"]
    sort_order: Literal["asc", "desc"] = "asc"


class DciSearchCriteria(BodyModel):
    version: Literal["1.0.0"] = "1.0.0"
    reg_type: Literal["ns:org:RegistryType:Social", "ns:org:RegistryType:SR"] | None = None
    reg_event_type: Literal["REGISTER", "NewHouseHoldMember"] | None = None
    query_type: Literal["idtype-value", "expression", "predicate"]
    response_entity: Literal["Group", "Household", "HouseHold"] = "Group"
    query: dict[str, Any] | list[dict[str, Any]] = Field(
        description="idtype-value: {type, value}; expression: {type, value: {expression: "
        "{collection, query}}}; predicate: [{seq_num, expression1, condition, expression2}]"
    )
    sort: list[DciSort] | None = Field(default=None, max_length=3)
    pagination: DciPagination | None = None
    consent: dict[str, Any] | None = None
    authorize: dict[str, Any] | None = None


class DciSearchItem(BodyModel):
    reference_id: str = Field(min_length=1, max_length=99)
    timestamp: str = Field(max_length=64, examples=["2026-12-11T09:00:00Z"])
    search_criteria: DciSearchCriteria
    locale: str | None = Field(default=None, pattern=r"^[a-z]{3}$")


class DciSearchMessage(BodyModel):
    transaction_id: str = Field(min_length=1, max_length=99)
    search_request: list[DciSearchItem] = Field(min_length=1, max_length=10)


class DciSearchRequest(BodyModel):
    """``POST /dci/registry/sync/search``: a search message of up to 10 requests."""

    signature: str | None = None
    header: DciRequestHeader
    message: DciSearchMessage


class DciTxnStatusItem(BodyModel):
    reference_id: str = Field(min_length=1, max_length=99)
    txn_type: Literal["search", "subscribe", "subscibe", "unsubscribe", "receipt"] = Field(
        description="the kind of transaction: search, subscribe (the standard's misspelt "
        "subscibe read alike), unsubscribe (NSER's extension); receipt is never found"
    )
    attribute_type: Literal["transaction_id", "reference_id_list", "correlation_id"]
    attribute_value: str | list[str]
    locale: str | None = Field(default=None, pattern=r"^[a-z]{3}$")


class DciTxnStatusMessage(BodyModel):
    transaction_id: str = Field(min_length=1, max_length=99)
    txnstatus_request: DciTxnStatusItem


class DciTxnStatusRequest(BodyModel):
    """``POST /dci/registry/sync/txn/status``: what became of a search, subscribe or
    unsubscribe transaction."""

    signature: str | None = None
    header: DciRequestHeader
    message: DciTxnStatusMessage


class DciErrorItem(BaseModel):
    code: str = Field(examples=["err.request.bad"])
    message: str = Field(examples=["the envelope has no message"])


class DciErrors(BaseModel):
    """The standard's HTTP error body: the message was not taken."""

    errors: list[DciErrorItem]


class DciReplyHeader(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str = "1.0.0"
    message_id: str
    message_ts: str
    action: Literal["on-search", "txn-on-status"]
    status: Literal["succ", "rjct"]
    status_reason_message: str | None = None
    total_count: int
    completed_count: int
    sender_id: str
    receiver_id: str | None = None
    is_msg_encrypted: bool = False


class DciSearchReply(BaseModel):
    """The ``on-search`` envelope: ``message.search_response[]`` with each request's
    status, records (``data.reg_records``: Group) and pagination."""

    header: DciReplyHeader
    message: dict[str, Any]


class DciTxnSearchStatus(BaseModel):
    """A search transaction's status: the ``on-search`` message without its records."""

    transaction_id: str
    correlation_id: str
    search_response: list[dict[str, Any]] = Field(
        description="each request's reference_id, timestamp, status (rcvd, pdng, succ, rjct "
        "with status_reason_code and status_reason_message) and pagination; no data"
    )


class DciSubscription(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    status: Literal["subscribe", "unsubscribe"]
    timestamp: str
    reg_event_type: str | None = None


class DciSubscribeStatusItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    reference_id: str
    timestamp: str
    status: Literal["succ", "rjct"]
    status_reason_code: str | None = None
    status_reason_message: str | None = None
    subscriptions: list[DciSubscription] | None = Field(
        default=None,
        description="the subscription the request made (its code; never its filter)",
    )
    locale: str | None = None


class DciTxnSubscribeStatus(BaseModel):
    """A subscribe transaction's status: the ``on-subscribe`` message, filters left out."""

    transaction_id: str
    correlation_id: str
    subscribe_response: list[DciSubscribeStatusItem]


class DciSubscriptionStatus(BaseModel):
    code: str
    status: Literal["subscribe", "unsubscribe"]


class DciTxnUnsubscribeStatus(BaseModel):
    """An unsubscribe transaction's status: its ``on-unsubscribe`` message."""

    transaction_id: str
    correlation_id: str
    timestamp: str
    status: Literal["succ", "rjct"]
    status_reason_code: str | None = None
    status_reason_message: str | None = None
    subscription_status: list[DciSubscriptionStatus] = Field(
        description="each code the message ended; empty when it was rejected"
    )


class DciTxnStatusOfSearch(BaseModel):
    txn_type: Literal["search", "receipt"] = Field(
        description="search (receipt is never found: its not-found callback has this shape)"
    )
    txn_status: DciTxnSearchStatus


class DciTxnStatusOfSubscribe(BaseModel):
    txn_type: Literal["subscribe"]
    txn_status: DciTxnSubscribeStatus


class DciTxnStatusOfUnsubscribe(BaseModel):
    txn_type: Literal["unsubscribe"]
    txn_status: DciTxnUnsubscribeStatus


class DciTxnStatusAnswer(BaseModel):
    transaction_id: str
    correlation_id: str
    txnstatus_response: Annotated[
        DciTxnStatusOfSearch | DciTxnStatusOfSubscribe | DciTxnStatusOfUnsubscribe,
        Field(
            discriminator="txn_type",
            description="one variant per txn_type, its txn_status in the shape of the "
            "action's own answer (the standard defines only the search's)",
        ),
    ]


class DciTxnStatusReply(BaseModel):
    """The ``txn-on-status`` envelope: what became of a search, subscribe or unsubscribe
    transaction."""

    header: DciReplyHeader
    message: DciTxnStatusAnswer
