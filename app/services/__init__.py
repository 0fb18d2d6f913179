"""The domain, one package per area of the registry.

Each package's ``__init__`` says what it owns and which of its modules and names the rest
of the app may import. Services own their transactions and never import FastAPI; routers
call them, and they reach the database through ``app.models`` or the raw asyncpg pool.

- ``registry``: the household record as the public and staff read it (look-up, history,
  geography, readiness).
- ``pmt``: the Proxy Means Test model, its features and scoring.
- ``seed``: the deterministic synthetic registry.
- ``sharing``: agreements, partners and everything a partner reads under one (scores,
  beneficiary lists, anonymized extracts).
- ``ingest``: update batches sent back by partners, from receipt to applied records.
- ``audit``: the append-only, hash-chained audit log.
"""
