"""Targeting: why a household scored what it did, and what a change of model or rule would do.

Owns the score explanation (each indicator's points under the household's PMT model
version, the nearest single-indicator changes that cross each band edge, the score's
history with what moved it: in full for staff, and for a partner only what its agreement
grants, never a locked weight — ``partner_view`` says what and why) and what-if targeting
simulations (a candidate PMT model version and/or a candidate programme rule run against
the live ones over the whole registry, on the worker, read-only; results stored in
``simulations``).

Public: ``explanation.explain`` (and its pure parts ``build``, ``build_for_partner``,
``apportion``, ``band_crossings``, ``score_history``); ``partner_view`` (which indicator
reads which sharing dimension, and the partner's view of each part); ``simulation.submit``,
``simulation.get``, ``simulation.process_one`` (the worker's hook; it lends the run
``simulation.READERS`` connections), ``simulation.SimulationSpec``, ``simulation.summarize``
(pure).
"""
