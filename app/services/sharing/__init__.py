"""Data sharing under agreements: the rules, the partners, and what partners may read.

Owns the sharing rules (categories, dimensions, the locked-dimensions rule), creating and
changing organizations, agreements and API clients, and the partner reads: score by CNIC,
beneficiary lists (paged or streamed), and k-anonymous extracts. Every read is checked
against the caller's agreement and audited through ``app.services.audit``.

Public: ``rules`` (``RuleViolation``, ``split_list``, ``check_*``), ``partners``
(``PartnerSpec``, ``create_partner``, ``create_staff_client``, ``set_agreement_status``),
``scores.partner_score``, ``beneficiaries`` (``authorize``, ``page``,
``stream_documents``, ``ndjson``, ``csv_rows``), ``beneficiaries_sql.Filters``,
``extracts`` (``authorize``, ``open_extract``, ``as_csv``, ``as_ndjson``, ``as_parquet``).
"""
