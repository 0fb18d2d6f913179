"""Matching (§5.2.1) and applying each record kind to the chunk's in-memory registry slice.

Each handler checks everything first and mutates the state only once the record is known
to be good, so a rejected record never half-applies. Records are applied in batch order:
the second record for a household sees the first one's effect (and its new version).

An update batch is not a look-up service. A partner's records are matched only inside
its agreement's geography (``Context.scope``): a household, member or CNIC outside it is
answered exactly as one that does not exist. Reasons name the rule a record breaks and
echo only what the partner sent, never the registry's values (a date of birth or death,
another member's id, a household's version, a phone). Where "unchanged" would confirm a
value the agreement does not let the partner read (a guessed phone, a locked PMT
indicator), the partner is told ``applied`` — the registry holds what it sent — and
``Outcome.unchanged`` keeps the truth for the registry's own reports (:func:`partner_view`).
Every household and member a record was matched to is noted (``Context.matched_*``) for
the chunk's audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.models.registry import LIVESTOCK
from app.schemas import updates as s
from app.schemas.cnic import mask_cnic
from app.services.ingest import rules
from app.services.ingest.state import LAND, Row, State, Wanted

log = logging.getLogger("nser.ingest")


@dataclass
class Outcome:
    outcome: str
    reasons: list[str]
    household_id: int | None = None
    member_id: int | None = None
    # The record found the registry already as it said (whatever the partner is shown).
    unchanged: bool = False


class Reject(Exception):
    def __init__(self, reasons: Sequence[str], outcome: str = "rejected") -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)
        self.outcome = outcome


@dataclass
class Context:
    state: State
    geography: rules.Geography
    today: date
    batch_id: str
    actor: str
    ref: str
    new_household_ids: list[int]
    new_member_ids: list[int]
    dry_run: bool
    # household_history.source of the changes: a partner's batch, or registry staff's.
    history_source: str = "partner_batch"
    # The agreement's geography (any of a household's codes); empty: the whole registry.
    scope: frozenset[str] = frozenset()
    # What the partner may read of one household or member (``sharing.rules.
    # readable_dimensions``); None: registry staff, who read everything.
    readable: frozenset[str] | None = None
    # Households and members records were matched to (for the audit row).
    matched_households: set[int] = field(default_factory=set)
    matched_members: set[int] = field(default_factory=set)
    _fake_id: int = -1

    def next_id(self, pool: list[int]) -> int:
        if pool:
            return pool.pop(0)
        # Dry runs allocate nothing: placeholder ids that are never written.
        self._fake_id -= 1
        return self._fake_id


def wanted(records: Sequence[Any]) -> Wanted:
    """Everything a chunk's records name, for one bulk load."""
    w = Wanted()
    for r in records:
        # The model's field values (``getattr`` with a default is slow on pydantic models).
        f = r.__dict__
        if r.kind in ("phone_change", "address_change") and f["cnic"] is None:
            # These read and write the household row only, never its members.
            if f["household_id"] is not None:
                w.bare_household_ids.add(f["household_id"])
            continue
        if r.kind == "household_survey" and f["cnic"] is None:
            # The household row, and of its members only what the re-score needs.
            if f["household_id"] is not None:
                w.scored_household_ids.add(f["household_id"])
            continue
        for attr in ("household_id", "to_household_id"):
            if (v := f.get(attr)) is not None:
                w.household_ids.add(v)
        for attr in ("member_id", "mother_member_id"):
            if (v := f.get(attr)) is not None:
                w.member_ids.add(v)
        for attr in ("cnic", "mother_cnic", "new_cnic"):
            if (v := f.get(attr)) is not None:
                w.cnics.add(v)
        if isinstance(r, s.MemberBirth) and r.member.cnic:
            w.cnics.add(r.member.cnic)
        if isinstance(r, s.NewHousehold):
            w.cnics |= {m.cnic for m in r.household.members if m.cnic}
            if r.household.form_number:
                w.form_numbers.add(r.household.form_number)
    return w


def _mask(cnic: str) -> str:
    return mask_cnic(cnic)


GEO_COLUMNS = (
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
)


def in_scope(ctx: Context, hh: Row) -> bool:
    """Whether a household lies inside the batch's geography (the whole registry if none)."""
    return not ctx.scope or any(hh.get(c) in ctx.scope for c in GEO_COLUMNS)


def _unknown_cnic(cnic: str) -> Reject:
    return Reject([f"unknown CNIC {_mask(cnic)}: no member of the registry holds it"])


def _member_by_cnic(ctx: Context, cnic: str) -> Row:
    owner = ctx.state.cnic_owner.get(cnic)
    if owner is None:
        raise _unknown_cnic(cnic)
    member = ctx.state.members.get(owner)
    if member is None:
        # Found by CNIC, but its household was not loaded with it: it moved meanwhile.
        stray = ctx.state.stray_members.get(owner) or {}
        hh = ctx.state.households.get(stray.get("household_id", 0))
        if hh is None or not in_scope(ctx, hh):
            raise _unknown_cnic(cnic)
        raise Reject(
            ["the member's household changed while this batch ran; send it again"], "conflict"
        )
    if not in_scope(ctx, _household_row(ctx, member["household_id"])):
        raise _unknown_cnic(cnic)
    ctx.matched_members.add(member["id"])
    return member


def _household_row(ctx: Context, household_id: int) -> Row:
    return ctx.state.households.get(household_id) or {}


def _household(ctx: Context, household_id: int, label: str = "") -> Row:
    hh = ctx.state.households.get(household_id)
    if hh is None or not in_scope(ctx, hh):
        raise Reject([f"unknown household {household_id}{label}"])
    ctx.matched_households.add(household_id)
    return hh


def _check_version(hh: Row, expected: int | None) -> None:
    # The same words either way: a partner cannot read versions, so the answer must not
    # say whether the household is ahead of or behind the one it named.
    if expected is not None and expected != hh["version"]:
        raise Reject(
            [f"expected_version {expected} is not the household's current version"], "conflict"
        )


def household_target(ctx: Context, rec: Any) -> Row:
    if rec.household_id is not None:
        hh = _household(ctx, rec.household_id)
        if rec.cnic is not None:
            m = _member_by_cnic(ctx, rec.cnic)
            if m["household_id"] != hh["id"]:
                raise Reject([f"CNIC {_mask(rec.cnic)} is not a member of household {hh['id']}"])
    elif rec.cnic is not None:
        hh = _household(ctx, _member_by_cnic(ctx, rec.cnic)["household_id"])
    else:
        raise Reject(["name the target household with household_id or a member's cnic"])
    _check_version(hh, rec.expected_version)
    return hh


def member_target(ctx: Context, rec: Any) -> tuple[Row, Row]:
    if rec.cnic is not None:
        m = _member_by_cnic(ctx, rec.cnic)
        if rec.member_id is not None and rec.member_id != m["id"]:
            raise Reject([f"CNIC {_mask(rec.cnic)} is not held by member {rec.member_id}"])
    elif rec.member_id is not None:
        found = ctx.state.members.get(rec.member_id)
        if found is None or not in_scope(ctx, _household_row(ctx, found["household_id"])):
            raise Reject([f"unknown member {rec.member_id}"])
        m = found
        ctx.matched_members.add(m["id"])
    else:
        raise Reject(["name the member with cnic, or with household_id and member_id"])
    if rec.household_id is not None and rec.household_id != m["household_id"]:
        raise Reject([f"the member named is not in household {rec.household_id}"])
    hh = _household(ctx, m["household_id"])
    _check_version(hh, rec.expected_version)
    return m, hh


def _alive(m: Row) -> None:
    if m["deceased_on"] is not None:
        raise Reject(["the member named is recorded deceased"])


def _cnic_free(ctx: Context, cnic: str, label: str, member_id: int | None = None) -> None:
    """A CNIC is one person's: registering it again is refused, in the same words wherever
    (and whoever) its holder is, so the refusal never places or names the holder."""
    owner = ctx.state.cnic_owner.get(cnic)
    if owner is not None and owner != member_id:
        raise Reject([f"{label} {_mask(cnic)} is already registered"])


def _bump(
    ctx: Context, hh: Row, change: str, member_id: int | None, before: Row | None, after: Row | None
) -> None:
    hh["version"] += 1
    ctx.state.dirty_households.add(hh["id"])
    ctx.state.history.append(
        {
            "household_id": hh["id"],
            "member_id": member_id,
            "version": hh["version"],
            "change": change,
            "before": before,
            "after": after,
            "batch_id": ctx.batch_id,
            "ref": ctx.ref,
            "actor": ctx.actor,
            "source": ctx.history_source,
        }
    )


def _diff(row: Row, changes: Row) -> tuple[Row, Row]:
    before = {k: row[k] for k, v in changes.items() if row[k] != v}
    after = {k: changes[k] for k in before}
    return before, after


def _member_row(ctx: Context, m: s.MemberIn, household_id: int) -> Row:
    return {
        "id": ctx.next_id(ctx.new_member_ids),
        "household_id": household_id,
        "cnic": m.cnic,
        "name": m.name,
        "gender": m.gender,
        "date_of_birth": m.date_of_birth,
        "relationship": m.relationship,
        "marital_status": m.marital_status,
        "disabilities": m.disabilities,
        "education": m.education,
        "employment": m.employment,
        "deceased_on": None,
    }


def _mother(ctx: Context, rec: s.MemberBirth, hh: Row) -> Row | None:
    living = [m for m in ctx.state.household_members(hh["id"]) if m["deceased_on"] is None]
    if rec.mother_cnic is not None or rec.mother_member_id is not None:
        pick = [
            m
            for m in living
            if (rec.mother_cnic is None or m["cnic"] == rec.mother_cnic)
            and (rec.mother_member_id is None or m["id"] == rec.mother_member_id)
        ]
        if not pick:
            raise Reject([f"the mother named is not a living member of household {hh['id']}"])
        if pick[0]["gender"] != "female":
            raise Reject(["the mother named is not female"])
        return pick[0]
    if rec.member.relationship in ("son", "daughter"):
        for m in living:
            if m["gender"] == "female" and m["relationship"] in ("head", "spouse"):
                return m
    return None


def member_birth(ctx: Context, rec: s.MemberBirth) -> Outcome:
    hh = household_target(ctx, rec)
    m = rec.member
    reasons = rules.person_reasons(
        relationship=m.relationship,
        marital_status=m.marital_status,
        born=m.date_of_birth,
        today=ctx.today,
        who="member",
    )
    if m.relationship not in rules.CHILD_RELATIONSHIPS:
        reasons.append(
            f"a newborn cannot be {m.relationship}; "
            f"use one of {', '.join(rules.CHILD_RELATIONSHIPS)}"
        )
    if m.cnic:
        try:
            _cnic_free(ctx, m.cnic, "member.cnic")
        except Reject as exc:
            reasons += exc.reasons
    mother = _mother(ctx, rec, hh)
    if mother is not None:
        reasons += rules.mother_reasons(mother["date_of_birth"], m.date_of_birth)
    if reasons:
        raise Reject(reasons)
    for existing in ctx.state.household_members(hh["id"]):
        if (existing["name"], existing["date_of_birth"], existing["gender"]) == (
            m.name,
            m.date_of_birth,
            m.gender,
        ):
            return Outcome(
                "unchanged",
                ["already registered as a member of this household"],
                hh["id"],
                existing["id"],
            )
    row = _member_row(ctx, m, hh["id"])
    ctx.state.add_member(row)
    ctx.state.new_members.add(row["id"])
    ctx.state.rescore.add(hh["id"])
    _bump(ctx, hh, "member_birth", row["id"], None, _public(row))
    return Outcome("applied", [], hh["id"], row["id"])


def _public(row: Row) -> Row:
    return {k: v for k, v in row.items() if k not in ("id", "household_id")}


def member_death(ctx: Context, rec: s.MemberDeath) -> Outcome:
    m, hh = member_target(ctx, rec)
    reasons = rules.death_reasons(m["date_of_birth"], rec.date_of_death, ctx.today)
    if reasons:
        raise Reject(reasons)
    if m["deceased_on"] == rec.date_of_death:
        return Outcome("unchanged", [], hh["id"], m["id"])
    _alive(m)
    m["deceased_on"] = rec.date_of_death
    ctx.state.dirty_members.add(m["id"])
    ctx.state.rescore.add(hh["id"])
    _bump(
        ctx, hh, "member_death", m["id"], {"deceased_on": None}, {"deceased_on": rec.date_of_death}
    )
    return Outcome("applied", [], hh["id"], m["id"])


def member_update(ctx: Context, rec: s.MemberUpdate) -> Outcome:
    m, hh = member_target(ctx, rec)
    _alive(m)
    changes: Row = {
        k: getattr(rec, k)
        for k in ("marital_status", "education", "employment", "disabilities")
        if getattr(rec, k) is not None
    }
    reasons: list[str] = []
    if rec.new_cnic is not None:
        if m["cnic"] is not None and m["cnic"] != rec.new_cnic:
            reasons.append("the member named already holds another CNIC")
        else:
            try:
                _cnic_free(ctx, rec.new_cnic, "new_cnic", m["id"])
            except Reject as exc:
                reasons += exc.reasons
            changes["cnic"] = rec.new_cnic
    reasons += rules.person_reasons(
        relationship=m["relationship"],
        marital_status=str(changes.get("marital_status", m["marital_status"])),
        born=m["date_of_birth"],
        today=ctx.today,
        registry_birth=True,
    )
    if reasons:
        raise Reject(reasons)
    before, after = _diff(m, changes)
    if not before:
        return Outcome("unchanged", [], hh["id"], m["id"])
    m.update(after)
    if "cnic" in after:
        ctx.state.cnic_owner[after["cnic"]] = m["id"]
    ctx.state.dirty_members.add(m["id"])
    ctx.state.rescore.add(hh["id"])
    _bump(ctx, hh, "member_update", m["id"], before, after)
    return Outcome("applied", [], hh["id"], m["id"])


def _geo(ctx: Context, rec: Any, village: str | None = None) -> Row:
    chain, reasons = ctx.geography.resolve(
        province=rec.province,
        division=rec.division,
        district=rec.district,
        tehsil=rec.tehsil,
        union_council=rec.union_council,
        village=rec.village if village is None else village,
    )
    if reasons:
        raise Reject(reasons)
    codes = {f"{level}_code": code for level, code in chain.items()}
    if not in_scope(ctx, codes):
        raise Reject(["the place named is outside the agreement's geography"])
    return codes


def address_change(ctx: Context, rec: s.AddressChange) -> Outcome:
    hh = household_target(ctx, rec)
    village = None
    if rec.village is None and rec.union_council == hh["union_council_code"]:
        # Same union council, no village named: the household stays in its village.
        village = hh["village_code"]
    changes = {"address": rec.address, **_geo(ctx, rec, village)}
    return _update_household(ctx, hh, "address_change", changes, rescore=False)


def _update_household(
    ctx: Context, hh: Row, change: str, changes: Row, *, rescore: bool
) -> Outcome:
    before, after = _diff(hh, changes)
    if not before:
        return Outcome("unchanged", [], hh["id"])
    hh.update(after)
    if rescore:
        ctx.state.rescore.add(hh["id"])
    _bump(ctx, hh, change, None, before, after)
    return Outcome("applied", [], hh["id"])


def phone_change(ctx: Context, rec: s.PhoneChange) -> Outcome:
    hh = household_target(ctx, rec)
    phone, reasons = rules.phone_reasons(rec.phone)
    if reasons:
        raise Reject(reasons)
    return _update_household(ctx, hh, "phone_change", {"phone": phone}, rescore=False)


_INDICATORS = frozenset(s.Indicators.model_fields)


def _indicators(ind: s.Indicators) -> Row:
    """The indicators a record sets (the validated fields' values; lists copied)."""
    return {
        k: list(v) if isinstance(v, list) else v
        for k, v in ind.__dict__.items()
        if v is not None and k in _INDICATORS
    }


def household_survey(ctx: Context, rec: s.HouseholdSurvey) -> Outcome:
    hh = household_target(ctx, rec)
    changes = _indicators(rec.indicators)
    if rec.surveyed_on is not None:
        if reasons := rules.not_future("surveyed_on", rec.surveyed_on, ctx.today):
            raise Reject(reasons)
        changes["surveyed_on"] = rec.surveyed_on
    if not changes:
        raise Reject(["indicators: name at least one indicator"])
    return _update_household(ctx, hh, "household_survey", changes, rescore=True)


def new_household(ctx: Context, rec: s.NewHousehold) -> Outcome:
    h = rec.household
    reasons = rules.not_future("household.surveyed_on", h.surveyed_on, ctx.today)
    try:
        geo = _geo(ctx, h)
    except Reject as exc:
        geo, reasons = {}, reasons + exc.reasons
    phone = None
    if h.phone is not None:
        phone, more = rules.phone_reasons(h.phone)
        reasons += more
    if h.form_number and h.form_number in ctx.state.form_numbers:
        reasons.append(f"form_number {h.form_number!r} is already registered")
    heads = sum(1 for m in h.members if m.relationship == "head")
    if heads != 1:
        reasons.append(f"a household needs exactly one head; found {heads}")
    seen: set[str] = set()
    for i, m in enumerate(h.members):
        who = f"members[{i}]"
        reasons += rules.person_reasons(
            relationship=m.relationship,
            marital_status=m.marital_status,
            born=m.date_of_birth,
            today=ctx.today,
            who=who,
        )
        if m.cnic:
            if m.cnic in seen:
                reasons.append(f"{who}.cnic {_mask(m.cnic)} appears twice in the household")
            seen.add(m.cnic)
            try:
                _cnic_free(ctx, m.cnic, f"{who}.cnic")
            except Reject as exc:
                reasons += exc.reasons
    if reasons:
        raise Reject(reasons)
    hid = ctx.next_id(ctx.new_household_ids)
    form = h.form_number or f"P{ctx.batch_id.replace('-', '')[:16]}{ctx.ref[-15:]}"[:32]
    row: Row = {
        "id": hid,
        "form_number": form,
        "address": h.address,
        "phone": phone,
        "surveyed_on": h.surveyed_on,
        "rooms": None,
        "toilet_type": None,
        "electrical": [],
        "gas": [],
        "kitchen": [],
        **dict.fromkeys(LIVESTOCK, 0),
        **dict.fromkeys(LAND, 0.0),
        **geo,
        **_indicators(h),
        "version": 1,
    }
    if form in ctx.state.form_numbers:
        raise Reject([f"form_number {form!r} is already registered; send one"])
    ctx.state.form_numbers.add(form)
    ctx.state.households[hid] = row
    ctx.state.new_households.add(hid)
    ctx.state.rescore.add(hid)
    head_id = None
    for m in h.members:
        mrow = _member_row(ctx, m, hid)
        ctx.state.add_member(mrow)
        ctx.state.new_members.add(mrow["id"])
        if m.relationship == "head":
            head_id = mrow["id"]
    ctx.state.history.append(
        {
            "household_id": hid,
            "member_id": None,
            "version": 1,
            "change": "new_household",
            "before": None,
            "after": {**{k: v for k, v in row.items() if k != "id"}, "members": len(h.members)},
            "batch_id": ctx.batch_id,
            "ref": ctx.ref,
            "actor": ctx.actor,
            "source": ctx.history_source,
        }
    )
    return Outcome("applied", [], hid, head_id)


def member_move(ctx: Context, rec: s.MemberMove) -> Outcome:
    m, src = member_target(ctx, rec)
    _alive(m)
    dest = _household(ctx, rec.to_household_id, " (to_household_id)")
    if dest["id"] == src["id"]:
        return Outcome("unchanged", ["the member is already in that household"], src["id"], m["id"])
    reasons = []
    if m["relationship"] == "head":
        reasons.append("the member named is the head of their household; a head cannot move out")
    if rec.relationship == "head":
        reasons.append("the moving member cannot become head of the receiving household")
    reasons += rules.person_reasons(
        relationship=rec.relationship,
        marital_status=m["marital_status"],
        born=m["date_of_birth"],
        today=ctx.today,
        registry_birth=True,
    )
    if reasons:
        raise Reject(reasons)
    before = {"household_id": src["id"], "relationship": m["relationship"]}
    after = {"household_id": dest["id"], "relationship": rec.relationship}
    ctx.state.by_household[src["id"]].remove(m["id"])
    ctx.state.by_household.setdefault(dest["id"], []).append(m["id"])
    m.update(after)
    ctx.state.dirty_members.add(m["id"])
    ctx.state.rescore |= {src["id"], dest["id"]}
    _bump(ctx, src, "member_move_out", m["id"], before, after)
    _bump(ctx, dest, "member_move_in", m["id"], before, after)
    return Outcome("applied", [], dest["id"], m["id"])


HANDLERS: dict[str, Callable[[Context, Any], Outcome]] = {
    "member_birth": member_birth,
    "member_death": member_death,
    "member_update": member_update,
    "address_change": address_change,
    "phone_change": phone_change,
    "household_survey": household_survey,
    "new_household": new_household,
    "member_move": member_move,
}


def apply(ctx: Context, rec: Any) -> Outcome:
    try:
        outcome = HANDLERS[rec.kind](ctx, rec)
    except Reject as exc:
        return Outcome(exc.outcome, exc.reasons)
    except Exception:
        # A bug must not sink the rest of the batch; handlers mutate only after every check.
        log.exception("record failed", extra={"batch_id": ctx.batch_id, "ref": ctx.ref})
        return Outcome("rejected", ["internal error while checking this record; reported"])
    return partner_view(ctx, rec, outcome)


# The dimension whose values a record compares with the registry's, per field it may set
# (sharing.rules.DIMENSIONS); a field not named here (a phone, an address, a date of death,
# a CNIC, the survey date, a member's household) is never readable by a partner.
INDICATOR_DIMENSIONS = {
    "rooms": "room_count",
    "toilet_type": "toilet_type",
    "electrical": "electrical_equipment",
    "gas": "gas_equipment",
    "kitchen": "kitchen_assets",
    **dict.fromkeys(LIVESTOCK, "livestock"),
    **dict.fromkeys(LAND, "land"),
}
MEMBER_DIMENSIONS = {
    "marital_status": "marital_status",
    "education": "education",
    "employment": "employment",
    "disabilities": "disability",
}


def _compared(rec: Any) -> list[str | None]:
    """The dimension of every registry value an "unchanged" answer to ``rec`` would confirm
    (None for a value no agreement lets a partner read)."""
    f = rec.__dict__
    if rec.kind == "household_survey":
        named = _indicators(rec.indicators)
        dims: list[str | None] = [INDICATOR_DIMENSIONS.get(k) for k in named]
        return dims + ([None] if f["surveyed_on"] is not None else [])
    if rec.kind == "member_update":
        dims = [MEMBER_DIMENSIONS[k] for k in MEMBER_DIMENSIONS if f[k] is not None]
        return dims + ([None] if f["new_cnic"] is not None else [])
    # A phone, an address, a death date, a newborn already registered, a member already in
    # the household named: none of these is a partner's to read.
    return [None]


def partner_view(ctx: Context, rec: Any, outcome: Outcome) -> Outcome:
    """What the sender may be told of an outcome (module docstring): ``unchanged`` only
    when every value it confirms is one the agreement lets the partner read, else
    ``applied`` with no reasons, as if the registry had just taken what it sent. A dry
    run's new household or member has no id yet: none is shown."""
    if ctx.readable is None:
        return outcome
    if outcome.outcome == "unchanged":
        readable = ctx.readable
        if not all(d is not None and d in readable for d in _compared(rec)):
            outcome = Outcome("applied", [], outcome.household_id, outcome.member_id, True)
        else:
            outcome.unchanged = True
    if ctx.dry_run and rec.kind in ("member_birth", "new_household"):
        household = None if rec.kind == "new_household" else outcome.household_id
        outcome = Outcome(outcome.outcome, outcome.reasons, household, None, outcome.unchanged)
    return outcome
