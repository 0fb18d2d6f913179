"""The audit log: append-only, hash-chained rows of who received which personal data.

Owns the ``audit_log`` table's writes, the chain's keys (HMAC keys kept outside the
database, named in each row), the chain's verification and its external anchors (signed
files outside the database). Every service that discloses personal data appends here,
inside (or just before) the transaction that reads it.

Public: ``trail.AuditRecord``, ``trail.append``, ``trail.append_action``,
``trail.append_with_pool``, ``trail.verify``, ``trail.latest_checkpoint``,
``trail.use_keyring``, ``trail.keyring_of``;
``usage.by_endpoint_and_day`` (an agreement's calls, counted back from the log);
``keys.keyring``, ``keys.new_entry``, ``keys.InvalidAuditKeys``; ``anchor.write``,
``anchor.check``, ``anchor.store_of``, ``anchor.run_anchorer`` (the chain's heads, signed,
kept outside the database, and their check); ``search.search`` (a bounded,
keyset-paged search by partner, agreement, household or staff member, itself audited),
``search.last_verification`` and ``search.verify_recent`` (verification for a request).
"""
