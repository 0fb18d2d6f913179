"""The pure rules of reads on replicas: the setting's URL list, replica names, lag."""

from __future__ import annotations

import json
import math

import pytest

from app.replicas import open_reads, replica_name, staleness
from app.settings import Settings, split_urls


def test_urls_split_on_commas_that_start_a_new_url() -> None:
    value = (
        "postgresql://app:s3cret@replica-1:5432/nser, "
        "postgresql://app:s3cret@replica-2:5432,replica-3:5432/nser?target_session_attrs=any"
    )
    assert split_urls(value) == [
        "postgresql://app:s3cret@replica-1:5432/nser",
        "postgresql://app:s3cret@replica-2:5432,replica-3:5432/nser?target_session_attrs=any",
    ]


def test_urls_as_a_json_list_or_nothing() -> None:
    assert split_urls('["postgresql://a/db", "postgres://b/db"]') == [
        "postgresql://a/db",
        "postgres://b/db",
    ]
    assert split_urls("") == []
    assert split_urls("  ") == []
    with pytest.raises(json.JSONDecodeError):
        split_urls('["postgresql://a/db"')


async def test_a_value_that_is_not_urls_stops_the_start_without_quoting_it() -> None:
    settings = Settings(read_database_url='["postgresql://a/db", "app:s3cret@b:5432/db"]')
    with pytest.raises(ValueError, match="replica 2 is not") as refused:
        await open_reads(None, settings)
    assert "s3cret" not in str(refused.value)


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSER_READ_DATABASE_URL", "postgresql://a/db,postgresql://b/db")
    assert Settings().read_database_url == ["postgresql://a/db", "postgresql://b/db"]
    monkeypatch.delenv("NSER_READ_DATABASE_URL")
    assert Settings().read_database_url == []


def test_a_replica_is_named_without_its_credentials() -> None:
    assert replica_name("postgresql://app:s3cret@replica-1:5432/nser") == "replica-1:5432/nser"
    assert replica_name("postgresql://app@a:5432,b:5433/nser") == "a:5432,b:5433/nser"
    assert replica_name("postgresql:///nser?host=/run/postgresql&user=app") == (
        "/run/postgresql/nser"
    )


SAMPLES = [(100.0, 1000), (101.0, 1500), (102.0, 1500), (103.0, 2400)]


def test_lag_is_the_age_of_the_newest_primary_sample_replayed() -> None:
    # Replayed up to 2400 (the newest sample): as fresh as the primary at 103.
    assert staleness(SAMPLES, 2400, 103.5) == (pytest.approx(0.5), True)
    # Between samples: holds what the primary had at 102 (1500), not yet 103's.
    assert staleness(SAMPLES, 2000, 103.5) == (pytest.approx(1.5), True)
    # An idle primary: its position does not move, a replica at it is not behind.
    assert staleness([(100.0, 1000), (101.0, 1000)], 1000, 101.2) == (pytest.approx(0.2), True)


def test_a_replica_behind_every_sample_has_an_unknown_lag() -> None:
    lag, known = staleness(SAMPLES, 999, 104.0)
    assert not known
    assert lag == pytest.approx(4.0)  # at least the oldest sample's age
    lag, known = staleness([], 5000, 1.0)
    assert not known
    assert math.isinf(lag)
