"""Monitoring and evaluation (§4.1.7, §6.4): spot checks of partners and the M&E reports.

Owns ``spot_checks`` (a failed check may suspend or revoke an agreement, and so may the
Secretary; either cuts API access on the partner's next call) and the reports the M&E team
reads: requests and the time spent in each stage, data shared per partner from the audit
log, updates received, revenue quoted and waived, obligations open, met and overdue.

Public: ``spot_checks`` (``record``; the Secretary's ``suspend``, ``revoke``, ``resume``),
``reports`` (``REPORTS``, ``build``), ``oversight`` (``view``, ``actions_for``: one
agreement as the staff console shows it).
"""
