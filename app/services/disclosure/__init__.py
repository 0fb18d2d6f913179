"""Disclosure control for every aggregate the registry publishes (issue #10).

Pure: no database, no FastAPI. Public and partner summaries, custom cross-tab analysis
and hex-bin maps build their count tables with ``with_margins`` and pass them through
``protect`` before publishing; ``audit`` re-checks a protected table as an adversary would.

Owns: the disclosure ``Policy`` (threshold = NSER_SUPPRESS_BELOW, rounding base, dominance
share, sensitive dimensions); count tables (``Cell``, ``with_margins``, the additivity
equations in ``table.Lattice``); primary, dominance and LP-checked complementary
suppression and rounding (``protect``, ``Published``, ``Disclosure``); the linear
programs themselves (``solver.feasible_ranges`` and ``solver.check``, HiGHS through
``highspy``); and the audit (``feasible_ranges``, ``violations``).

Public: ``Policy``, ``Cell``, ``with_margins``, ``Published``, ``Disclosure``, ``protect``,
``feasible_ranges``, ``violations``; also ``protect.suppression`` (the withheld cells and
their rules, without publishing), ``protect.round_half_up`` and ``Policy.dominance_fraction``.
"""

from app.services.disclosure.audit import feasible_ranges, violations
from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import Disclosure, Published, protect
from app.services.disclosure.table import Cell, with_margins

__all__ = [
    "Cell",
    "Disclosure",
    "Policy",
    "Published",
    "feasible_ranges",
    "protect",
    "violations",
    "with_margins",
]
