"""Cases the public files and staff work through: data-sharing requests and grievances.

Owns what the two have in common, so each domain keeps only its own rules:

- the **status link**: a reference the service numbers and a random token shown once,
  stored only as its hash and compared in constant time (:func:`new_token`,
  :func:`token_matches`);
- finding a case by its id or its reference (:func:`resolve`), 404 for neither;
- the **timeline**: one event row per step, with the actor and roles
  (:func:`append_event`, :func:`staff_timeline`);
- JSON columns in and out (:func:`dumps`, :func:`loads`);
- the workflow checks, pure (``workflow``: ``step``, ``RoleDenied``, ``InvalidTransition``):
  the role first, whatever the state (403), then the state (409).

A domain describes its tables once with :class:`Cases`; ``requests`` and ``grievances``
import from here, never from each other.
"""

from app.services.casework.tracking import (
    Cases,
    append_event,
    dumps,
    loads,
    new_token,
    resolve,
    staff_timeline,
    token_hash,
    token_matches,
)

__all__ = [
    "Cases",
    "append_event",
    "dumps",
    "loads",
    "new_token",
    "resolve",
    "staff_timeline",
    "token_hash",
    "token_matches",
]
