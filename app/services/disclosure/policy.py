"""The disclosure policy: the thresholds every published aggregate is protected with."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Policy:
    """What protection a published table gets.

    ``threshold`` is NSER_SUPPRESS_BELOW: a household count below it (zero included) is
    published as null, and every suppressed count must stay uncertain over an interval at
    least this wide. ``rounding_base`` is NSER_DISCLOSURE_ROUNDING_BASE (1 = no rounding).
    ``dominance`` is the share of a group held by one value of a ``sensitive`` dimension
    (or by households below / above the cut-off) at which the breakdown is withheld.
    """

    threshold: int = 10
    rounding_base: int = 5
    dominance: float = 0.9
    sensitive: tuple[str, ...] = ("poverty_band", "disability")

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self.rounding_base < 1:
            raise ValueError("rounding_base must be at least 1")
        if not 0.5 < self.dominance <= 1.0:
            raise ValueError("dominance must be above 0.5 and at most 1")

    @property
    def dominance_fraction(self) -> Fraction:
        """``dominance`` as the exact decimal it was written as (0.9 is 9/10, not a float)."""
        return Fraction(repr(self.dominance))
