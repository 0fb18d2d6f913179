"""Pure validation rules of updates sent back (no database)."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.ingest import rules
from app.services.ingest import state as ingest_state
from app.services.pmt import model as pmt

TODAY = date(2026, 6, 1)


@settings(deadline=None)
@given(st.from_regex(r"3[0-9]{9}", fullmatch=True))
def test_phone_national_formats_normalize_to_plus92(rest: str) -> None:
    assert rules.normalize_phone(f"0{rest}") == f"+92{rest}"
    assert rules.normalize_phone(f"+92{rest}") == f"+92{rest}"
    assert rules.normalize_phone(f"0{rest[:3]}-{rest[3:]}") == f"+92{rest}"


@settings(deadline=None)
@given(st.text(max_size=20))
def test_phone_rejects_everything_else(value: str) -> None:
    phone = rules.normalize_phone(value)
    assert phone is None or (phone.startswith("+923") and len(phone) == 13)


def test_phone_reason_is_actionable() -> None:
    _, reasons = rules.phone_reasons("12345")
    assert reasons == [
        "phone '12345' is not a Pakistani mobile number (+923xxxxxxxxx or 03xxxxxxxxx)"
    ]


def test_derived_fields_refused_with_reason() -> None:
    _, reasons = rules.parse_record(
        {"ref": "1", "kind": "phone_change", "household_id": 1, "phone": "x", "version": 3}
    )
    assert reasons == ["'version' is derived by the registry and cannot be set"]
    _, reasons = rules.parse_record(
        {"ref": "1", "kind": "member_birth", "household_id": 1, "member": {"id": 5}}
    )
    assert reasons == ["'member.id' is derived by the registry and cannot be set"]


def test_schema_errors_name_the_field() -> None:
    _, reasons = rules.parse_record(
        {"ref": "1", "kind": "household_survey", "household_id": 1, "indicators": {"rooms": 99}}
    )
    assert reasons == ["indicators.rooms: Input should be less than or equal to 50"]
    _, reasons = rules.parse_record({"ref": "1", "kind": "teleport"})
    assert reasons[0].startswith("unknown kind 'teleport'")
    _, reasons = rules.parse_record({"ref": "1", "kind": "member_death", "cnic": "12-3"})
    assert reasons[0].startswith("cnic: a CNIC is 13 digits")
    _, reasons = rules.parse_record([1])
    assert reasons == ["a record must be a JSON object"]


def test_dates_and_family_rules() -> None:
    assert rules.death_reasons(date(2021, 5, 4), date(2020, 1, 1), TODAY) == [
        "date_of_death 2020-01-01 is before the member's date of birth"
    ]
    assert rules.death_reasons(date(2000, 1, 1), date(2027, 1, 1), TODAY) == [
        "date_of_death 2027-01-01 is in the future"
    ]
    assert rules.mother_reasons(date(2015, 1, 1), date(2026, 1, 1)) == [
        "the mother named is not at least 12 years older than a child born on 2026-01-01"
    ]
    assert rules.mother_reasons(date(2000, 1, 1), date(2026, 1, 1)) == []


@settings(deadline=None)
@given(st.dates(min_value=date(1900, 1, 1), max_value=TODAY))
def test_married_children_and_unmarried_spouses_are_refused(born: date) -> None:
    age = TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
    reasons = rules.person_reasons(
        relationship="son", marital_status="married", born=born, today=TODAY
    )
    assert bool(reasons) == (age < rules.MIN_MARRIED_AGE or age > 125)
    spouse = rules.person_reasons(
        relationship="spouse", marital_status="never_married", born=born, today=TODAY
    )
    assert "member with relationship spouse cannot be never_married" in spouse


@settings(deadline=None)
@given(st.dates(min_value=date(1900, 1, 1), max_value=TODAY))
def test_a_registry_date_of_birth_is_never_repeated(born: date) -> None:
    """Checks against a member's recorded birth say the rule, never the date or the age."""
    age = TODAY.year - born.year - ((TODAY.month, TODAY.day) < (born.month, born.day))
    said = " ".join(
        [
            reason
            for relationship in ("head", "son")
            for reason in rules.person_reasons(
                relationship=relationship,
                marital_status="married",
                born=born,
                today=TODAY,
                registry_birth=True,
            )
        ]
        + rules.death_reasons(born, date(1899, 12, 31), TODAY)
        # The child's date is the sender's own and may be said; it is a date the
        # strategy never draws, so only the mother's recorded birth could match.
        + rules.mother_reasons(born, date(1899, 12, 31))
    )
    assert born.isoformat() not in said
    assert f"aged {age}" not in said
    assert f"be {age}" not in said


def test_geography_nesting() -> None:
    units = {
        u.code: u
        for u in [
            rules.GeoUnit("P", "province", None),
            rules.GeoUnit("V", "division", "P"),
            rules.GeoUnit("D", "district", "V"),
            rules.GeoUnit("D2", "district", "V"),
            rules.GeoUnit("T", "tehsil", "D"),
            rules.GeoUnit("U", "union_council", "T"),
            rules.GeoUnit("U01", "village", "U"),
        ]
    }
    geo = rules.Geography(units)
    chain, reasons = geo.resolve(district="D", tehsil="T", union_council="U", village=None)
    assert reasons == []
    assert chain == {
        "village": "U01",
        "union_council": "U",
        "tehsil": "T",
        "district": "D",
        "division": "V",
        "province": "P",
    }
    _, reasons = geo.resolve(district="D2", tehsil="T", union_council="U", village=None)
    assert reasons == ["tehsil 'T' is not inside district 'D2'"]
    _, reasons = geo.resolve(district="D", tehsil="X", union_council="U", village=None)
    assert reasons == ["unknown tehsil code 'X'"]
    _, reasons = geo.resolve(district="D", tehsil="U", union_council="U", village=None)
    assert reasons == ["code 'U' is a union_council, not a tehsil"]


def _scored_state() -> tuple[ingest_state.State, dict[str, object]]:
    state = ingest_state.State()
    hh: dict[str, object] = {
        "id": 1,
        "surveyed_on": date(2020, 1, 1),
        "rooms": 2,
        "toilet_type": "none",
        "electrical": [],
        "gas": [],
        "kitchen": [],
        **dict.fromkeys(("cows", "goats", "buffaloes", "bullocks", "lambs"), 0),
        **dict.fromkeys(ingest_state.LAND, 0.0),
        "version": 3,
        "pmt_score": 99.0,
        "poverty_band": "well_off",
        "pmt_version": pmt.ILLUSTRATIVE.version,
    }
    state.households[1] = hh
    state.members_loaded.add(1)
    for i, (rel, edu) in enumerate((("head", "matric"), ("spouse", None), ("son", None)), 1):
        state.add_member(
            {
                "id": i,
                "household_id": 1,
                "cnic": None,
                "relationship": rel,
                "education": edu,
                "date_of_birth": date(1990 + 10 * (rel == "son"), 1, 1),
                "disabilities": None,
                "deceased_on": None,
            }
        )
    state.rescore.add(1)
    return state, hh


def test_prescore_is_final_and_logs_the_change() -> None:
    state, hh = _scored_state()
    assert ingest_state.prescore(state, pmt.ILLUSTRATIVE) == []
    value, band = pmt.score(pmt.ILLUSTRATIVE, hh, state.household_members(1))
    assert (hh["pmt_score"], hh["poverty_band"]) == (value, band)
    assert 1 in state.dirty_households
    (row,) = state.history
    assert (row["change"], row["version"], row["source"]) == ("pmt_rescore", 3, "pmt_recompute")
    assert row["before"]["pmt_score"] == 99.0
    assert row["after"]["pmt_score"] == value


def test_prescore_writes_the_score_change_into_the_change_that_caused_it() -> None:
    state, hh = _scored_state()
    shared_before, shared_after = {"rooms": 2}, {"rooms": 5}
    for version in (4, 5):  # two changes to the household in this chunk
        state.history.append(
            {
                "household_id": 1,
                "member_id": None,
                "version": version,
                "change": "household_survey",
                "before": shared_before,
                "after": shared_after,
                "batch_id": "b",
                "ref": str(version),
                "actor": "partner",
            }
        )
    assert ingest_state.prescore(state, pmt.ILLUSTRATIVE) == []
    first, last = state.history  # no row of its own
    assert first["after"] == {"rooms": 5}  # untouched, and the shared dicts too
    assert shared_after == {"rooms": 5}
    assert shared_before == {"rooms": 2}
    assert last["before"] == {
        "rooms": 2,
        "pmt_score": 99.0,
        "poverty_band": "well_off",
        "pmt_version": pmt.ILLUSTRATIVE.version,
    }
    assert last["after"]["pmt_score"] == hh["pmt_score"] != 99.0
    assert last["after"]["rooms"] == 5


def test_prescore_leaves_to_the_sql_what_memory_cannot_vouch_for() -> None:
    # Two living heads: the Python twin takes the first one's education, the SQL the highest.
    state, hh = _scored_state()
    state.members[2]["relationship"] = "head"
    assert ingest_state.prescore(state, pmt.ILLUSTRATIVE) == [1]
    assert hh["pmt_score"] == 99.0
    assert not state.history
    # Members not all loaded (the household was named only by a phone/address change).
    state, hh = _scored_state()
    state.members_loaded.clear()
    assert ingest_state.prescore(state, pmt.ILLUSTRATIVE) == [1]
    assert hh["pmt_score"] == 99.0
    assert not state.dirty_households


def test_dates_in_records_must_be_written_as_dates() -> None:
    from pydantic import ValidationError

    from app.schemas.updates import MemberIn

    member = {"name": "Ayesha Bibi", "gender": "female", "relationship": "head"}
    ok = MemberIn.model_validate_json(orjson.dumps({**member, "date_of_birth": "1990-05-01"}))
    assert str(ok.date_of_birth) == "1990-05-01"
    # 0 would otherwise be read as 1970-01-01 (seconds since the epoch).
    for written in (0, "0", 1.5, "1990-5-1"):
        with pytest.raises(ValidationError, match="ISO 8601"):
            MemberIn.model_validate_json(orjson.dumps({**member, "date_of_birth": written}))
