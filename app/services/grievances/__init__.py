"""Grievances about a household's score, and their redress (issue 12, part 5).

Owns ``grievances`` and ``grievance_events``: the public filing by CNIC with its status
link (``store.file``, ``store.public_view``), the staff workflow as an explicit, pure state
machine (``machine``: states, actions, which role owns each), the staff actions and views
(``store.act``, ``store.staff_view``, ``store.list_grievances``), the re-survey sent into
the registry as a staff ``household_survey`` update batch (``store.resurvey``, applied by
the ingest worker like a partner's, so it is validated, re-scored and kept in the history),
the resolution's before/after score read from that history, and the service-level figures
(``sla``: pure due dates and overdue checks; ``report``: the M&E ``grievances`` report).

Public: ``machine`` (``State``, ``Action``, ``Role``, ``next_state``, ``RoleDenied``,
``InvalidTransition``), ``sla`` (``Targets``, ``overdue``), ``store``, ``report.build``.
"""
