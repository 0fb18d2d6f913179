"""The DCI adapter: the registry spoken in the Digital Convergence Initiative's Social
Registry API v1.0.0 (spdci), under ``/dci/``.

It owns the translation between DCI envelopes and the registry's own services, and nothing
else: every record it answers goes through the caller's agreement by the same sharing
services as ``/v1/partner/beneficiaries`` (categories, geography, dimensions, the locked PMT
rule, suspension, limits, audit). Its modules:

- the envelope (header, message, errors) and the search (query types, paging, records);
- signatures (Ed25519 over header and message) and the callbacks NSER sends (a durable
  outbox in PostgreSQL, delivered by the worker with retries and a dead-letter state).
"""
