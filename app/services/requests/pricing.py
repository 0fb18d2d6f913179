"""The price of a data-sharing request (protocol Annexes II-III, §4.2.1): pure ``Decimal`` maths.

Owns the per-household rates by organization type (Annex II), which dimensions are priced
(Annex III V-XVI), which sharing categories the formula covers, the gratis criteria a-d of
§4.2.1, and the ``Quote`` that is shown to staff and frozen (as JSON) at approval. No I/O.

The Annex III formula, for categories iii (score against a CNIC), iv (base list), v (subsets
with selected dimensions) and vi (anonymized data)::

    A = base rate per household, by organization type (Annex II)
    B = households in the reviewed scope
    C = A * B                      total base data cost
    D = granted priced dimensions  (Annex III V-XVI, each counted once)
    E = 15% of A                   unit cost per household per selected dimension
    F = B * D * E                  cost of the selected dimensions
    G = C + F                      total data cost

Rounding (stated in every quote as ``Quote.rounding``): A and E are exact per-household
rates (E may have paisa, e.g. 0.45); C and F are each rounded ROUND_HALF_UP to whole rupees;
G = C + F, so G is whole and the quote always adds up. All arithmetic is exact
(``Decimal`` at maximum precision; a float never enters).

Categories i (summaries), ii (custom analysis), vii (maps) and viii (geo-tagged data) are
priced "on case to case basis" (Annex III): G is the amount an officer sets, rounded the
same way, and A..F are null; until the officer sets it G is null too.

An approved gratis request (§4.2.1 a-d; the caller decides it is approved) costs 0: G = 0,
the reason names the criterion, and for formula categories A..F are still computed, for
information only (they show what was waived; G != C + F in a gratis quote).

Public: ``quote``, ``Quote``, ``RATE_PER_HOUSEHOLD``, ``PRICED_DIMENSIONS``,
``FORMULA_CATEGORIES``, ``CASE_BY_CASE_CATEGORIES``, ``GRATIS_CRITERIA``,
``DIMENSION_SHARE``, ``ROUNDING``.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any, Literal, cast

from app.models.sharing import ORGANIZATION_TYPES
from app.services.sharing.rules import CATEGORIES, DIMENSIONS

Basis = Literal["formula", "case_by_case", "gratis"]
BASES: tuple[Basis, ...] = ("formula", "case_by_case", "gratis")

# Annex II "DATA SHARING RATES", base amount per household in rupees, row by row onto
# app.models.sharing.ORGANIZATION_TYPES (one row each, in the same order):
#   1 Government (Federal/Provincial/Regional/Local)  Rs. 3/-   -> "government"
#   2 Semi-Autonomous Government agencies             Rs. 5/-   -> "semi_autonomous"
#   3 Academic/research institutions                  Rs. 20/-  -> "academic"
#   4 Local NGOs                                      Rs. 25/-  -> "local_ngo"
#   5 Donors                                          Rs. 50/-  -> "donor"
#   6 Business/Private Sector                         Rs. 100/- -> "private"
# (In the text copy of the protocol the "3/-" of row 1 is printed above the row, a
# table-extraction artifact.) These agree with the worked examples: donor A = 50
# (10,000 households, 3 dimensions: G = 725,000) and government A = 3 (1,000,000 households,
# no dimensions: G = 3,000,000).
RATE_PER_HOUSEHOLD: Mapping[str, Decimal] = MappingProxyType(
    {
        "government": Decimal(3),
        "semi_autonomous": Decimal(5),
        "academic": Decimal(20),
        "local_ngo": Decimal(25),
        "donor": Decimal(50),
        "private": Decimal(100),
    }
)

# Annex III "DIMENSIONS" V-XVI, the ones D counts, by their API names (sharing.rules).
# Annex III numbers its own list: V Relationships, VI Disability, VII Marital status,
# VIII Employment status, IX Education status, X Rooms (count), XI Toilet type, XII Electric
# equipment, XIII Gas equipment, XIV Kitchen assets, XV Livestock, XVI Land. The other
# dimensions of §4.2.1 (poverty level, area location, household composition, gender, age
# brackets) are free.
PRICED_DIMENSIONS: tuple[str, ...] = (
    "relationship",
    "disability",
    "marital_status",
    "employment",
    "education",
    "room_count",
    "toilet_type",
    "electrical_equipment",
    "gas_equipment",
    "kitchen_assets",
    "livestock",
    "land",
)
_PRICED = frozenset(PRICED_DIMENSIONS)

# Annex III rows 1-4 have the formula; rows 5-8 (geo-tagged information, information summary,
# custom analysis, information maps) are "decided on case to case basis".
FORMULA_CATEGORIES: frozenset[str] = frozenset({"iii", "iv", "v", "vi"})
CASE_BY_CASE_CATEGORIES: frozenset[str] = frozenset({"i", "ii", "vii", "viii"})

# E = 15% of A (Annex III).
DIMENSION_SHARE = Decimal("0.15")

# §4.2.1 "GRATIS DATA SHARING REQUEST": the grounds on which the Data Sharing Committee may
# recommend data free of cost.
GRATIS_CRITERIA: Mapping[str, str] = MappingProxyType(
    {
        "a": (
            "research organization, or individual consultant/student researching or writing a"
            " dissertation, bound to share the findings with full usage rights to NSER/BISP"
            " (not research sponsored by commercial or donor organizations)"
        ),
        "b": (
            "organization working in collaboration with BISP or for the benefit of BISP"
            " beneficiaries"
        ),
        "c": (
            "non-profit organization working for BISP beneficiaries or the marginalized"
            " segment of society"
        ),
        "d": (
            "government organization working for BISP beneficiaries or the marginalized"
            " segment of society"
        ),
    }
)

ROUNDING = (
    "ROUND_HALF_UP to whole rupees: C and F each rounded half-up, G = C + F;"
    " A and E exact per-household rates; a case-by-case G rounded half-up"
)

_RUPEE = Decimal(1)
# No amount has this many digits before (or after) the point; bounds the work on odd input.
_MAX_DIGITS = 100
_AMOUNTS = ("A", "C", "E", "F", "G")
_COUNTS = ("B", "D")


def _exact() -> decimal.Context:
    """A context in which + and * on finite Decimals never round (so nothing is lost)."""
    return decimal.Context(
        prec=decimal.MAX_PREC,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        rounding=ROUND_HALF_UP,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    )


def _canonical(value: Decimal) -> Decimal:
    """The same number without trailing zeros or an exponent ("7.50" -> 7.5, "7E+2" -> 700)."""
    return Decimal(_text(value))


def _text(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _whole_rupees(value: Decimal) -> Decimal:
    with decimal.localcontext(_exact()):
        return _canonical(value.quantize(_RUPEE, rounding=ROUND_HALF_UP))


def _amount(value: object, what: str) -> Decimal:
    """A finite, non-negative Decimal from a Decimal, int or decimal string (never a float)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"{what} must be a Decimal, an int or a decimal string, not {value!r}")
    try:
        out = Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{what} is not a decimal number: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{what} must be a finite amount, not {value!r}")
    if out and out.adjusted() >= _MAX_DIGITS:
        raise ValueError(f"{what} is implausibly large: {value!r}")
    exponent = out.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_MAX_DIGITS:
        raise ValueError(f"{what} has too many decimal places: {value!r}")
    if out < 0:
        raise ValueError(f"{what} must not be negative: {value!r}")
    return _canonical(out)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative: {value}")
    return value


@dataclass(frozen=True)
class Quote:
    """A priced request: the Annex III letters A..G, how it was priced and rounded, and why.

    ``basis`` is "formula" (G = C + F), "case_by_case" (G is the officer's amount, null until
    set; A..F null) or "gratis" (G = 0; ``reason`` names the §4.2.1 criterion).
    """

    basis: Basis
    A: Decimal | None
    B: int | None
    C: Decimal | None
    D: int | None
    E: Decimal | None
    F: Decimal | None
    G: Decimal | None
    rounding: str
    reason: str | None = None
    currency: str = "PKR"

    def as_json(self) -> dict[str, Any]:
        """The API shape: amounts as decimal strings ("7.5", "725000"), B and D as ints."""
        doc: dict[str, Any] = {"basis": self.basis}
        for letter in "ABCDEFG":
            value = getattr(self, letter)
            doc[letter] = _text(value) if isinstance(value, Decimal) else value
        doc["currency"] = self.currency
        doc["rounding"] = self.rounding
        doc["reason"] = self.reason
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Quote:
        """The quote ``as_json`` gave (as frozen in the database); ValueError if malformed."""
        basis = doc.get("basis")
        if basis not in BASES:
            raise ValueError(f"unknown quote basis {basis!r} (one of {', '.join(BASES)})")
        rounding = doc.get("rounding")
        if not isinstance(rounding, str):
            raise ValueError("a quote states its rounding rule")
        reason = doc.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"quote reason must be text or null, not {reason!r}")
        currency = doc.get("currency", "PKR")
        if not isinstance(currency, str):
            raise ValueError(f"quote currency must be text, not {currency!r}")
        values: dict[str, Any] = {}
        try:
            for letter in _AMOUNTS:
                raw = doc.get(letter)
                values[letter] = None if raw is None else _amount(raw, f"quote {letter}")
            for letter in _COUNTS:
                raw = doc.get(letter)
                values[letter] = None if raw is None else _count(raw, f"quote {letter}")
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            basis=cast(Basis, basis),
            rounding=rounding,
            reason=reason,
            currency=currency,
            **values,
        )


def quote(
    *,
    organization_type: str,
    category: str,
    households: int,
    dimensions: Iterable[str],
    gratis_criterion: str | None = None,
    case_by_case_amount: Decimal | None = None,
) -> Quote:
    """The price of one request for ``category`` by an organization of ``organization_type``.

    ``households`` is B, the households in the reviewed scope; ``dimensions`` the granted
    dimensions (API names; repeats count once, only ``PRICED_DIMENSIONS`` count towards D).
    ``gratis_criterion`` ("a".."d") means the request is approved as gratis: G = 0.
    ``case_by_case_amount`` is the officer's price for categories i, ii, vii and viii (None
    until set); it is refused for a formula category.

    ValueError for an unknown organization type, category, dimension or criterion, a
    negative or non-finite number, or a case-by-case amount for a formula category.
    """
    if organization_type not in RATE_PER_HOUSEHOLD:
        raise ValueError(
            f"unknown organization type {organization_type!r}"
            f" (one of {', '.join(ORGANIZATION_TYPES)})"
        )
    if category not in FORMULA_CATEGORIES | CASE_BY_CASE_CATEGORIES:
        raise ValueError(f"unknown category {category!r} (one of {', '.join(CATEGORIES)})")
    if gratis_criterion is not None and gratis_criterion not in GRATIS_CRITERIA:
        raise ValueError(
            f"unknown gratis criterion {gratis_criterion!r}"
            f" (one of {', '.join(GRATIS_CRITERIA)}, §4.2.1)"
        )
    b = _count(households, "households")
    if isinstance(dimensions, str):
        raise TypeError("dimensions must be an iterable of dimension names, not one string")
    granted = list(dict.fromkeys(dimensions))
    known = set(DIMENSIONS)
    for name in granted:
        if name not in known:
            raise ValueError(f"unknown dimension {name!r}")
    amount = None
    if case_by_case_amount is not None:
        if category in FORMULA_CATEGORIES:
            raise ValueError(
                f"category {category} is priced by the Annex III formula;"
                " a case-by-case amount applies only to categories i, ii, vii and viii"
            )
        amount = _amount(case_by_case_amount, "case-by-case amount")

    gratis_reason = None
    if gratis_criterion is not None:
        gratis_reason = (
            f"gratis under §4.2.1 criterion ({gratis_criterion}):"
            f" {GRATIS_CRITERIA[gratis_criterion]}"
        )

    if category in CASE_BY_CASE_CATEGORIES:
        blank: dict[str, Any] = dict.fromkeys("ABCDEF")
        if gratis_reason is not None:
            return Quote(
                basis="gratis", G=Decimal(0), rounding=ROUNDING, reason=gratis_reason, **blank
            )
        if amount is None:
            return Quote(
                basis="case_by_case",
                G=None,
                rounding=ROUNDING,
                reason=(
                    f"category {category} is priced case by case (Annex III);"
                    " the amount is not set yet"
                ),
                **blank,
            )
        return Quote(
            basis="case_by_case",
            G=_whole_rupees(amount),
            rounding=ROUNDING,
            reason=f"category {category} is priced case by case (Annex III) by an officer",
            **blank,
        )

    d = sum(1 for name in granted if name in _PRICED)
    with decimal.localcontext(_exact()):
        a = RATE_PER_HOUSEHOLD[organization_type]
        e = _canonical(a * DIMENSION_SHARE)
        c = _whole_rupees(a * b)
        f = _whole_rupees(b * d * e)
        g = _canonical(c + f)
    if gratis_reason is not None:
        return Quote(
            basis="gratis",
            A=a,
            B=b,
            C=c,
            D=d,
            E=e,
            F=f,
            G=Decimal(0),
            rounding=ROUNDING,
            reason=f"{gratis_reason}; the formula amount C + F = {_text(g)} is waived",
        )
    return Quote(basis="formula", A=a, B=b, C=c, D=d, E=e, F=f, G=g, rounding=ROUNDING)
