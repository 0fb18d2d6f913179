"""The Proxy Means Test: a versioned model stored as data, scoring households 0-100.

Owns the model format and its validation, the features (each computed twice: in SQL for
the whole registry and in Python for one household), bands, and re-scoring.

Public: ``model.PmtModel``, ``model.ILLUSTRATIVE``, ``model.InvalidModel``,
``model.current_model``, ``model.score``, ``model.score_aggregate``, ``model.band_of``,
``model.recompute``, ``model.rescore_households``, ``model.rescore_range``; from
``features``, ``MemberSummary``, ``member_summary``, ``MEMBER_SUMMARY_SQL``,
``HOUSEHOLD_COLUMNS`` and ``age_on`` (used by ingest).
"""
