"""The staff console's own views: what no one domain owns, composed from the domains.

Owns ``queues``: "My work", what waits on a staff member's roles now: the data-sharing
requests in a state their roles move on (the request machine's ``WAITING_ON``), the
grievances new or overdue (the grievance service levels), the partners' obligations
falling due, and the agreements due for a spot check. Each domain answers its own queue
(``requests.queue``, ``grievances.queue``, ``requests.obligations.due``,
``monitoring.spot_checks.due``); this package decides which sections a person sees and
reads them all in one snapshot. The API (``GET /v1/staff/my-work``) and the console's pages
call the same :func:`queues.my_work`.

Public: ``queues`` (``my_work``, ``MyWork``, ``Queue``, ``Rules``).
"""
