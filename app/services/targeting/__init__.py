"""Targeting: why a household scored what it did, and what a change of model or rule would do.

Owns the score explanation (each indicator's points under the household's PMT model
version, the nearest single-indicator changes that cross each band edge, the score's
history with what moved it) and what-if targeting simulations (a candidate PMT model
version and/or a candidate programme rule run against the live ones over the whole
registry, on the worker, read-only; results stored in ``simulations``).

Public: ``explanation.explain`` (and its pure parts ``apportion``, ``band_crossings``,
``score_history``); ``simulation.submit``, ``simulation.get``, ``simulation.process_one``
(the worker's hook), ``simulation.SimulationSpec``, ``simulation.summarize`` (pure).
"""
