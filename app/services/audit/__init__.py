"""The audit log: append-only, hash-chained rows of who received which personal data.

Owns the ``audit_log`` table's writes and the chain's verification. Every service that
discloses personal data appends here, inside (or just before) the transaction that reads it.

Public: ``trail.AuditRecord``, ``trail.append``, ``trail.append_with_pool``,
``trail.verify``.
"""
