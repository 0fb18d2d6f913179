"""Data-sharing requests (protocol §4.1, §5.1, Annexes I-III): from the form to a signed agreement.

Owns the request form and its public status link, the workflow as an explicit state
machine (``machine``: states, actions, which staff role owns each), the price of a request
(``pricing``: Annexes II-III, pure ``Decimal`` arithmetic), and the store that moves a
request through the machine, freezes its quote at approval and, on signature, creates the
organization, agreement and API client through ``app.services.sharing``.

Public: ``machine`` (``State``, ``Action``, ``Role``, ``next_state``, ``RoleDenied``,
``InvalidTransition``, ``WAITING_ON``, ``waiting_states``), ``pricing`` (``quote``, ``Quote``).
"""
