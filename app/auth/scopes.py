"""Scopes: ``resource:action`` strings; a partner's come from its live agreement."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    SCORES_READ = "scores:read"
    BENEFICIARIES_READ = "beneficiaries:read"
    EXTRACTS_READ = "extracts:read"
    UPDATES_WRITE = "updates:write"
    SUMMARIES_READ = "summaries:read"
    ANALYSIS_READ = "analysis:read"
    MAPS_READ = "maps:read"
    GEO_READ = "geo:read"
    STAFF_READ = "staff:read"
    REQUESTS_READ = "requests:read"
    REQUESTS_ACT = "requests:act"
    AGREEMENTS_OVERSEE = "agreements:oversee"
    REPORTS_READ = "reports:read"
    SIMULATIONS_RUN = "simulations:run"
    PROGRAMMES_MANAGE = "programmes:manage"
    GRIEVANCES_READ = "grievances:read"
    GRIEVANCES_ACT = "grievances:act"
    AUDIT_READ = "audit:read"
    DCI_REGISTER = "dci:register"
    DCI_DELIVERIES = "dci:deliveries"


PARTNER_SCOPES = frozenset(
    {
        Scope.SUMMARIES_READ,
        Scope.ANALYSIS_READ,
        Scope.SCORES_READ,
        Scope.BENEFICIARIES_READ,
        Scope.EXTRACTS_READ,
        Scope.MAPS_READ,
        Scope.GEO_READ,
        Scope.UPDATES_WRITE,
    }
)
# The scope each category (§4.2.4) opens; iv and v share the beneficiary lists (v adds
# dimensions, checked per request).
CATEGORY_SCOPES: dict[str, Scope] = {
    "i": Scope.SUMMARIES_READ,
    "ii": Scope.ANALYSIS_READ,
    "iii": Scope.SCORES_READ,
    "iv": Scope.BENEFICIARIES_READ,
    "v": Scope.BENEFICIARIES_READ,
    "vi": Scope.EXTRACTS_READ,
    "vii": Scope.MAPS_READ,
    "viii": Scope.GEO_READ,
}


# What each staff role may reach over the API, read live on every request. Which workflow
# action a role may take is the request machine's rule (app.services.requests.machine).
# ``staff:read`` opens personal data (household histories, full score explanations): the
# officers who work the cases and the M&E team who check them hold it; the staff
# administrator does not (separation of duties: who manages accounts and programmes does
# not also read people's records).
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "officer": frozenset(
        {
            Scope.REQUESTS_READ,
            Scope.REQUESTS_ACT,
            Scope.STAFF_READ,
            Scope.REPORTS_READ,
            Scope.GRIEVANCES_READ,
            Scope.GRIEVANCES_ACT,
            Scope.PROGRAMMES_MANAGE,
        }
    ),
    "committee": frozenset({Scope.REQUESTS_READ, Scope.REQUESTS_ACT}),
    "secretary": frozenset(
        {Scope.REQUESTS_READ, Scope.REQUESTS_ACT, Scope.AGREEMENTS_OVERSEE, Scope.REPORTS_READ}
    ),
    "me": frozenset(
        {
            Scope.REQUESTS_READ,
            Scope.AGREEMENTS_OVERSEE,
            Scope.REPORTS_READ,
            Scope.STAFF_READ,
            Scope.GRIEVANCES_READ,
        }
    ),
    "admin": frozenset({Scope.REQUESTS_READ, Scope.REPORTS_READ, Scope.PROGRAMMES_MANAGE}),
}

# What-if targeting simulations (policy analysis over the whole registry): the Secretary,
# M&E and admins.
for _role in ("secretary", "me", "admin"):
    ROLE_SCOPES[_role] = ROLE_SCOPES[_role] | {Scope.SIMULATIONS_RUN}
# Custom analyses (category ii, whose recipients include the registry's own staff): the M&E
# team, through the partners' disclosure control (POST /v1/staff/analysis).
ROLE_SCOPES["me"] = ROLE_SCOPES["me"] | {Scope.ANALYSIS_READ}
# Searching the audit log and checking its chain (the console's audit page): M&E, who
# oversee how partners and staff use the data, and the staff administrators, who answer for
# the staff's accounts. Neither works the cases whose access the log records, so the
# overseers are not the overseen. A search is itself audited.
for _role in ("me", "admin"):
    ROLE_SCOPES[_role] = ROLE_SCOPES[_role] | {Scope.AUDIT_READ}

# DCI (app/services/dci). Registering where an agreement's callbacks go (and the key its
# messages are signed with) decides where personal data is sent: the officers, who sign
# agreements. The callbacks that failed for good (dead letters) and their retry: the
# officers and the staff administrators, who run the service; the list shows no payload.
ROLE_SCOPES["officer"] = ROLE_SCOPES["officer"] | {Scope.DCI_REGISTER, Scope.DCI_DELIVERIES}
ROLE_SCOPES["admin"] = ROLE_SCOPES["admin"] | {Scope.DCI_DELIVERIES}


def staff_scopes(roles: Iterable[str]) -> frozenset[str]:
    """A staff client's scopes now: exactly those its roles carry. A client with no role
    holds none (the ``scopes`` stored on an older staff client add nothing)."""
    out: set[str] = set()
    for role in roles:
        out |= ROLE_SCOPES.get(role, frozenset())
    return frozenset(out)


def agreement_scopes(categories: Iterable[str], update_kinds: Iterable[str]) -> frozenset[str]:
    """What an agreement's categories (§4.2.4) and update kinds allow over the API."""
    scopes: set[str] = {CATEGORY_SCOPES[c] for c in categories if c in CATEGORY_SCOPES}
    if any(True for _ in update_kinds):
        scopes.add(Scope.UPDATES_WRITE)
    return frozenset(scopes)


def parse_scope(value: str | None) -> frozenset[str]:
    """An OAuth2 ``scope`` parameter: space-separated (commas tolerated)."""
    if not value:
        return frozenset()
    return frozenset(part for part in value.replace(",", " ").split() if part)
