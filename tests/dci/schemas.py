"""JSON Schemas of the DCI messages the tests exchange, and a validator.

Transcribed by hand from the DCI Social Registry API v1.0.0 (the spdci standard's OpenAPI
description of the social registry: ``MsgHeader_V1.0.0``, ``MsgCallbackHeader_V1.0.0``,
``SearchRequest``, ``SearchResponse``, ``SearchStatusReasonCode``, ``TxnStatusRequest``,
``TxnStatusResponse``, ``Error``, the ``HttpErrorResponse`` and the acknowledgement
``Response``; ``TxnStatusRequest`` and ``TxnStatusResponse`` extended for the subscribe and
unsubscribe transactions, as marked where they are), with its typos corrected
(``subscribe`` for ``subscibe``; an attribute value is any of string, number, boolean,
object or array, where the standard's ``oneOf`` refuses every integer and has no list for
the ``in`` operator). The standard's file itself is not part of this
repository (its licence and provenance stay with it); only what the tests need is written
out here, as JSON Schema 2020-12, and ``jsonschema`` checks every request the tests send
and every answer they get against it.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

TIMESTAMP = {"type": "string", "format": "date-time"}
ID99 = {"type": "string", "maxLength": 99}
REFERENCE_ID = {"type": "string"}
LOCALE = {"type": "string", "pattern": "^[a-z]{3,3}$"}
STATUS = {"type": "string", "enum": ["rcvd", "pdng", "succ", "rjct"]}
ERROR_CODES = [
    "err.request.bad",
    "err.request.unauthorized",
    "err.request.forbidden",
    "err.request.not_found",
    "err.request.timeout",
    "err.version.not_supported",
    "err.request.too_many_requests",
    "err.sender_id.invalid",
    "err.sender_uri.invalid",
    "err.receiver_id.invalid",
    "err.signature.missing",
    "err.signature.invalid",
    "err.encryption.invalid",
    "err.service.unavailable",
]
SEARCH_REASONS = [
    "rjct.reference_id.invalid",
    "rjct.reference_id.duplicate",
    "rjct.timestamp.invalid",
    "rjct.search_criteria.invalid",
    "rjct.filter.invalid",
    "rjct.sort.invalid",
    "rjct.pagination.invalid",
    "rjct.search.too_many_records_found",
]
HEADER_REASONS = [
    "rjct.version.invalid",
    "rjct.message_id.duplicate",
    "rjct.message_ts.invalid",
    "rjct.action.invalid",
    "rjct.action.not_supported",
    "rjct.total_count.invalid",
    "rjct.total_count.limit_exceeded",
    "rjct.errors.too_many",
]

# The standard writes this as oneOf string/integer/number/boolean/object, which no integer
# can pass (it is a number too), and without the array the "in" operator needs: corrected.
VALUE = {"type": ["string", "number", "boolean", "object", "array"]}
EXPRESSION = {
    "type": "object",
    "properties": {
        "attribute_name": {"type": "string"},
        "operator": {"type": "string", "enum": ["gt", "lt", "eq", "ge", "le", "in"]},
        "attribute_value": VALUE,
    },
    "required": ["attribute_name", "operator", "attribute_value"],
}
PAGINATION_IN = {
    "type": "object",
    "properties": {
        "page_size": {"type": "number", "format": "int32"},
        "page_number": {"type": "number", "format": "int32", "default": 1},
    },
    "required": ["page_size"],
}
PAGINATION_OUT = {
    "type": "object",
    "properties": {
        "page_size": {"type": "number"},
        "page_number": {"type": "number"},
        "total_count": {"type": "number"},
    },
    "required": ["page_size", "page_number", "total_count"],
}

DEFS: dict[str, Any] = {
    "MsgHeader": {
        "type": "object",
        "properties": {
            "version": {"type": "string", "default": "1.0.0"},
            "message_id": {"type": "string"},
            "message_ts": TIMESTAMP,
            "action": {"type": "string"},
            "sender_id": {"type": "string"},
            "sender_uri": {"type": "string", "format": "uri"},
            "receiver_id": {"type": "string"},
            "total_count": {"type": "integer"},
            "is_msg_encrypted": {"type": "boolean", "default": False},
            "meta": {"type": "object"},
        },
        "required": ["message_id", "message_ts", "action", "sender_id", "total_count"],
    },
    "MsgCallbackHeader": {
        "type": "object",
        "properties": {
            "version": {"type": "string", "default": "1.0.0"},
            "message_id": {"type": "string"},
            "message_ts": TIMESTAMP,
            "action": {"type": "string"},
            "status": STATUS,
            "status_reason_code": {"type": "string", "enum": HEADER_REASONS},
            "status_reason_message": {"type": "string", "maxLength": 999},
            "total_count": {"type": "integer"},
            "completed_count": {"type": "integer"},
            "sender_id": {"type": "string"},
            "receiver_id": {"type": "string"},
            "is_msg_encrypted": {"type": "boolean", "default": False},
            "meta": {"type": "object"},
        },
        "required": ["message_id", "message_ts", "action", "status"],
    },
    "SearchRequest": {
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "search_request": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "reference_id": REFERENCE_ID,
                        "timestamp": TIMESTAMP,
                        "search_criteria": {
                            "type": "object",
                            "properties": {
                                "version": {"type": "string", "default": "1.0.0"},
                                "reg_type": {"type": "string"},
                                "reg_event_type": {"type": "string"},
                                "query_type": {
                                    "type": "string",
                                    "enum": ["idtype-value", "expression", "predicate"],
                                },
                                "response_entity": {"type": "string"},
                                "query": {
                                    "oneOf": [
                                        {
                                            "type": "object",
                                            "properties": {
                                                "type": {"type": "string"},
                                                "value": {"type": "object"},
                                            },
                                        },
                                        {
                                            "type": "object",
                                            "properties": {
                                                "type": {"type": "string"},
                                                "value": {
                                                    "not": {"type": ["object", "array", "null"]}
                                                },
                                            },
                                        },
                                        {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "seq_num": {"type": "number"},
                                                    "expression1": EXPRESSION,
                                                    "condition": {
                                                        "type": "string",
                                                        "enum": ["and", "or", "not"],
                                                    },
                                                    "expression2": EXPRESSION,
                                                },
                                                "required": ["expression1"],
                                            },
                                        },
                                    ]
                                },
                                "sort": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "attribute_name": {"type": "string"},
                                            "sort_order": {
                                                "type": "string",
                                                "enum": ["asc", "desc"],
                                            },
                                        },
                                    },
                                },
                                "pagination": PAGINATION_IN,
                                "consent": {"type": "object"},
                                "authorize": {"type": "object"},
                            },
                            "required": ["query_type", "query"],
                        },
                        "locale": LOCALE,
                    },
                    "required": ["reference_id", "timestamp", "search_criteria"],
                },
            },
        },
        "required": ["transaction_id", "search_request"],
    },
    "SearchResponseItem": {
        "type": "object",
        "properties": {
            "reference_id": REFERENCE_ID,
            "timestamp": TIMESTAMP,
            "status": STATUS,
            "status_reason_code": {"type": "string", "enum": SEARCH_REASONS},
            "status_reason_message": {"type": "string", "maxLength": 999},
            "data": {
                "type": "object",
                "properties": {
                    "version": {"type": "string", "default": "1.0.0"},
                    "reg_records": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["reg_records"],
            },
            "pagination": PAGINATION_OUT,
            "locale": LOCALE,
        },
        "required": ["reference_id", "timestamp", "status"],
    },
    "SearchResponse": {
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "correlation_id": ID99,
            "search_response": {"type": "array", "items": {"$ref": "#/$defs/SearchResponseItem"}},
        },
        "required": ["transaction_id", "correlation_id", "search_response"],
    },
    "TxnStatusRequest": {
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "txnstatus_request": {
                "type": "object",
                "properties": {
                    "reference_id": REFERENCE_ID,
                    # Extended: "unsubscribe" (NSER's; the standard has no such txn_type).
                    "txn_type": {
                        "type": "string",
                        "enum": ["search", "subscribe", "unsubscribe", "receipt"],
                    },
                    "attribute_type": {
                        "type": "string",
                        "enum": ["transaction_id", "reference_id_list", "correlation_id"],
                    },
                    "attribute_value": {
                        "oneOf": [ID99, {"type": "array", "items": REFERENCE_ID}],
                    },
                    "locale": LOCALE,
                },
                "required": ["reference_id", "txn_type", "attribute_type", "attribute_value"],
            },
        },
        "required": ["transaction_id", "txnstatus_request"],
    },
    "TxnStatusResponse": {
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "correlation_id": ID99,
            # Extended, as docs/api.md (the DCI txn/status) documents it: the standard's
            # txn_status is oneOf SearchResponse / ReceiptRequest, with no variant for the
            # subscribe it names (nor for unsubscribe, which it does not name). Here it is
            # oneOf one variant per txn_type, each txn_status in the shape of that action's
            # own answer: SearchResponse (search; receipt is never found and its not-found
            # answer takes this shape, empty), SubscribeResponse (subscribe) and
            # UnSubscribeResponse (unsubscribe), as defined below.
            "txnstatus_response": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {
                            "txn_type": {"type": "string", "enum": ["search", "receipt"]},
                            "txn_status": {"$ref": "#/$defs/SearchResponse"},
                        },
                        "required": ["txn_type", "txn_status"],
                    },
                    {
                        "type": "object",
                        "properties": {
                            "txn_type": {"const": "subscribe"},
                            "txn_status": {"$ref": "#/$defs/SubscribeResponse"},
                        },
                        "required": ["txn_type", "txn_status"],
                    },
                    {
                        "type": "object",
                        "properties": {
                            "txn_type": {"const": "unsubscribe"},
                            "txn_status": {"$ref": "#/$defs/UnSubscribeResponse"},
                        },
                        "required": ["txn_type", "txn_status"],
                    },
                ]
            },
        },
        "required": ["transaction_id", "correlation_id", "txnstatus_response"],
    },
    # The acknowledgement of an asynchronous request (the standard's ``Response``).
    "Ack": {
        "type": "object",
        "properties": {
            "message": {
                "type": "object",
                "properties": {
                    "ack_status": {"type": "string", "enum": ["ACK", "NACK", "ERR"]},
                    "timestamp": TIMESTAMP,
                    "error": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string", "enum": ERROR_CODES},
                            "message": {"type": "string", "maxLength": 999},
                        },
                    },
                    "correlation_id": ID99,
                },
                "required": ["ack_status", "timestamp", "correlation_id"],
            }
        },
    },
    "HttpErrorResponse": {
        "type": "object",
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string", "maxLength": 999},
                    },
                    "required": ["code", "message"],
                },
            }
        },
        "required": ["errors"],
    },
}


def _envelope(header: str, action: str, message: str, *, message_required: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "signature": {"type": "string"},
            "header": {
                "allOf": [
                    {"$ref": f"#/$defs/{header}"},
                    {"properties": {"action": {"enum": [action]}}},
                ]
            },
            "message": {"$ref": f"#/$defs/{message}"},
        },
        "required": ["header", "message"] if message_required else ["header"],
    }


DEFS.update(
    SearchEnvelope=_envelope("MsgHeader", "search", "SearchRequest", message_required=True),
    OnSearchEnvelope=_envelope(
        "MsgCallbackHeader", "on-search", "SearchResponse", message_required=False
    ),
    TxnStatusEnvelope=_envelope(
        "MsgHeader", "txn-status", "TxnStatusRequest", message_required=True
    ),
    TxnOnStatusEnvelope=_envelope(
        "MsgCallbackHeader", "txn-on-status", "TxnStatusResponse", message_required=False
    ),
)


# -- subscriptions (SubscribeRequest, SubscribeResponse, UnSubscribeRequest,
# UnSubscribeResponse, NotifyEventRequest and the acknowledgement ``Response``) -------------
# Corrected: the unsubscribe request's required ``sunscription_codes`` and its property
# ``timesstamp`` are ``subscription_codes`` and ``timestamp``; the unsubscribe response's
# ``timesatmp`` is ``timestamp``; a subscription in SubscribeResponse requires its ``code``,
# ``status`` and ``timestamp`` (the standard requires ``subscription_code`` and
# ``subscribe_criteria``, which it does not define); a notification's ``reg_records`` is
# the one record (the standard: an object).
SUBSCRIBE_REASONS = [
    "rjct.reference_id.invalid",
    "rjct.reference_id.duplicate",
    "rjct.timestamp.invalid",
    "rjct.notify_types.invalid",
    "rjct.notify_details.invalid",
    "rjct.person_id.invalid",
    "rjct.event.already_subscribed",
]
UNSUBSCRIBE_REASONS = [
    "rjct.reference_id.invalid",
    "rjct.reference_id.duplicate",
    "rjct.timestamp.invalid",
    "rjct.subscription_code.invalid",
    "rjct.requester.invalid",
    "rjct.event.already_unsubscribed",
]
CODE = {"type": "string", "maxLength": 99}
QUERY = DEFS["SearchRequest"]["properties"]["search_request"]["items"]["properties"][
    "search_criteria"
]["properties"]["query"]
FREQUENCY = {
    "type": "object",
    "properties": {"start_time": TIMESTAMP, "end_time": TIMESTAMP, "frequency": {"type": "string"}},
    "required": ["start_time", "end_time", "frequency"],
}
DEFS.update(
    SubscribeRequest={
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "subscribe_request": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "reference_id": REFERENCE_ID,
                        "timestamp": TIMESTAMP,
                        "subscribe_criteria": {
                            "type": "object",
                            "properties": {
                                "version": {"type": "string", "default": "1.0.0"},
                                "reg_type": {"type": "string"},
                                "reg_event_type": {"type": "string"},
                                "frequency": FREQUENCY,
                                "filter_type": {
                                    "type": "string",
                                    "enum": ["idtype-value", "expression", "predicate"],
                                },
                                "filter": QUERY,
                                "notify_record_type": {"type": "string"},
                                "authorize": {"type": "object"},
                            },
                            "required": ["reg_event_type", "filter", "notify_record_type"],
                        },
                        "locale": LOCALE,
                    },
                    "required": ["reference_id", "timestamp", "subscribe_criteria"],
                },
            },
        },
        "required": ["transaction_id", "subscribe_request"],
    },
    SubscribeResponse={
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "correlation_id": ID99,
            "subscribe_response": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "reference_id": REFERENCE_ID,
                        "timestamp": TIMESTAMP,
                        "status": STATUS,
                        "status_reason_code": {"type": "string", "enum": SUBSCRIBE_REASONS},
                        "status_reason_message": {"type": "string", "maxLength": 999},
                        "subscriptions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "version": {"type": "string"},
                                    "code": CODE,
                                    "status": {
                                        "type": "string",
                                        "enum": ["subscribe", "unsubscribe"],
                                    },
                                    "timestamp": TIMESTAMP,
                                    "reg_type": {"type": "string"},
                                    "reg_event_type": {"type": "string"},
                                    "frequency": FREQUENCY,
                                    "filter_type": {
                                        "type": "string",
                                        "enum": ["idtype-value", "expression", "predicate"],
                                    },
                                    "filter": QUERY,
                                    "notify_record_type": {"type": "string"},
                                    "locale": LOCALE,
                                },
                                "required": ["code", "status", "timestamp"],
                            },
                        },
                        "pagination": PAGINATION_OUT,
                        "locale": LOCALE,
                    },
                    "required": ["reference_id", "timestamp", "status"],
                },
            },
        },
        "required": ["transaction_id", "correlation_id", "subscribe_response"],
    },
    UnSubscribeRequest={
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "timestamp": TIMESTAMP,
            "subscription_codes": {"type": "array", "items": CODE},
        },
        "required": ["transaction_id", "timestamp", "subscription_codes"],
    },
    UnSubscribeResponse={
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "correlation_id": ID99,
            "timestamp": TIMESTAMP,
            "status": STATUS,
            "status_reason_code": {"type": "string", "enum": UNSUBSCRIBE_REASONS},
            "status_reason_message": {"type": "string", "maxLength": 999},
            "subscription_status": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "code": CODE,
                        "status": {"type": "string", "enum": ["subscribe", "unsubscribe"]},
                    },
                    "required": ["code", "status"],
                },
            },
        },
        "required": ["transaction_id", "correlation_id", "timestamp", "status"],
    },
    NotifyEventRequest={
        "type": "object",
        "properties": {
            "transaction_id": ID99,
            "notify_event": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "reference_id": REFERENCE_ID,
                        "timestamp": TIMESTAMP,
                        "data": {
                            "type": "object",
                            "properties": {
                                "version": {"type": "string", "default": "1.0.0"},
                                "reg_type": {"type": "string"},
                                "reg_event_type": {"type": "string"},
                                "reg_record_type": {"type": "string"},
                                "reg_records": {"type": "object"},
                            },
                            "required": ["reg_record_type", "reg_records"],
                        },
                        "locale": LOCALE,
                    },
                    "required": ["reference_id", "timestamp", "data"],
                },
            },
        },
        "required": ["transaction_id", "notify_event"],
    },
    Ack={
        "type": "object",
        "properties": {
            "message": {
                "type": "object",
                "properties": {
                    "ack_status": {"type": "string", "enum": ["ACK", "NACK", "ERR"]},
                    "timestamp": TIMESTAMP,
                    "correlation_id": ID99,
                },
                "required": ["ack_status", "timestamp", "correlation_id"],
            }
        },
    },
)
DEFS.update(
    SubscribeEnvelope=_envelope(
        "MsgHeader", "subscribe", "SubscribeRequest", message_required=True
    ),
    OnSubscribeEnvelope=_envelope(
        "MsgHeader", "on-subscribe", "SubscribeResponse", message_required=True
    ),
    UnsubscribeEnvelope=_envelope(
        "MsgHeader", "unsubscribe", "UnSubscribeRequest", message_required=True
    ),
    OnUnsubscribeEnvelope=_envelope(
        "MsgHeader", "on-unsubscribe", "UnSubscribeResponse", message_required=True
    ),
    NotifyEnvelope=_envelope(
        "MsgCallbackHeader", "notify", "NotifyEventRequest", message_required=False
    ),
)


def validate(name: str, document: object) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` is a valid ``name``."""
    schema = {"$ref": f"#/$defs/{name}", "$defs": DEFS}
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        document
    )
