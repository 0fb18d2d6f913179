"""The registry as it is read: look-ups by CNIC, a household's history, geography, readiness.

Owns the public poverty-level look-up (the hot path, on the raw asyncpg pool), the staff
history view of a household's versions (audited: it holds names, CNICs, dates of birth,
phones and disabilities), the geography units (provinces to tehsils with
their codes) and the readiness check (database up, migrations current).

Public: ``lookup.public_score``, ``history.household_history``,
``geography`` (units by level, parent and name), ``health.readiness_problem``.
"""
