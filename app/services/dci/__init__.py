"""The DCI adapter: the registry spoken in the Digital Convergence Initiative's Social
Registry API v1.0.0 (spdci), under ``/dci/``.

It owns the translation between DCI envelopes and the registry's own services, and nothing
else: every record it answers goes through the caller's agreement by the same sharing
services as ``/v1/partner/beneficiaries`` (categories, geography, dimensions, the locked PMT
rule, suspension, limits, audit). Its modules:

- the envelope (header, message, errors) and the search (query types, paging, records);
- signatures (Ed25519 over header and message) and the callbacks NSER sends (a durable
  outbox in PostgreSQL, delivered by the worker with retries and a dead-letter state).

What the rest of the app uses of the second part:

- ``registration``: ``verify_message(conn, agreement_id, envelope)`` (an incoming message
  against the agreement's registered key; raises ``signing.SignatureMissing`` /
  ``SignatureInvalid``, whose ``code`` is the spec's error code), ``get``, ``register``;
- ``signing``: ``verify``, ``sign``, ``Signer`` (NSER's current key), ``canonical``;
- ``callbacks``: ``enqueue(conn, settings=, agreement_id=, url=, kind=, payload=,
  ordering_key=)`` inside the cause's transaction (``CallbackRefused`` when the URL is not
  under the registered base, e.g. a ``sender_uri`` to answer with
  ``err.sender_uri.invalid``), and ``run_delivery``/``runner`` for the workers.
"""
