"""Service levels of grievances: when triage and resolution are due, and what is overdue.

Pure: no database. Targets are whole days (``NSER_GRIEVANCE_TRIAGE_DAYS``,
``NSER_GRIEVANCE_RESOLVE_DAYS``) counted from the filing instant. A grievance is
*triage-overdue* while it is still ``received`` past its triage due time, and
*resolve-overdue* while it is open (neither resolved nor rejected) past its resolution due
time; a resolve-overdue case is reported as such even if it was never triaged (the later,
graver breach). The M&E report (``report``) counts the same way in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from app.services.grievances.machine import TERMINAL, State
from app.settings import Settings

Breach = Literal["triage", "resolve"]


@dataclass(frozen=True)
class Targets:
    triage_days: int = 7
    resolve_days: int = 30

    def triage_due(self, filed_at: datetime) -> datetime:
        return filed_at + timedelta(days=self.triage_days)

    def resolve_due(self, filed_at: datetime) -> datetime:
        return filed_at + timedelta(days=self.resolve_days)

    @classmethod
    def of(cls, settings: Settings) -> Targets:
        """``NSER_GRIEVANCE_TRIAGE_DAYS`` and ``NSER_GRIEVANCE_RESOLVE_DAYS``."""
        return cls(settings.grievance_triage_days, settings.grievance_resolve_days)


def overdue(
    state: State | str, filed_at: datetime, now: datetime, targets: Targets
) -> Breach | None:
    """The target an open grievance has missed by ``now`` (``resolve`` before ``triage``)."""
    state = State(state)
    if state in TERMINAL:
        return None
    if now > targets.resolve_due(filed_at):
        return "resolve"
    if state is State.received and now > targets.triage_due(filed_at):
        return "triage"
    return None


def days_between(start: datetime, end: datetime) -> float:
    """Elapsed days, to the hundredth (service-level figures)."""
    return round((end - start).total_seconds() / 86400, 2)


def service_level(
    state: State | str,
    filed_at: datetime,
    triaged_at: datetime | None,
    closed_at: datetime | None,
    now: datetime,
    targets: Targets,
) -> dict[str, object]:
    """What the staff see of one grievance's service level."""
    return {
        "triage_due": targets.triage_due(filed_at),
        "resolve_due": targets.resolve_due(filed_at),
        "days_to_triage": days_between(filed_at, triaged_at) if triaged_at else None,
        "days_to_close": days_between(filed_at, closed_at) if closed_at else None,
        "overdue": overdue(state, filed_at, now, targets),
    }
