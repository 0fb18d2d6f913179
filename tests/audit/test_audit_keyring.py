"""The audit keyring (pure): which key signs, which keys verify, and the derived key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.services.audit.keys import InvalidAuditKeys, fingerprint_id, keyring, new_entry

SECRET = "the-key-encryption-secret-of-this-deployment"
OLD_SECRET = "the-key-encryption-secret-it-had-last-year-00"
EXPLICIT = "a1=" + "an-explicit-audit-key-secret-0123456789"


def test_without_explicit_keys_the_derived_key_signs() -> None:
    ring = keyring("", SECRET)
    assert ring.current.id == fingerprint_id(SECRET)
    assert ring.current.id.startswith("kes-")
    assert list(ring.known) == [ring.current.id]


def test_the_first_explicit_key_signs_and_the_derived_key_still_verifies() -> None:
    ring = keyring(f"{EXPLICIT}, b2={'b' * 32}", SECRET)
    assert ring.current.id == "a1"
    assert set(ring.known) == {"a1", "b2", fingerprint_id(SECRET)}


def test_a_former_derived_key_is_named_by_its_fingerprint() -> None:
    """After NSER_KEY_ENCRYPTION_SECRET changes, the rows signed under the old one verify
    with ``kes-…=OLD_SECRET`` in the list: the same HMAC key as the old derivation."""
    before = keyring("", OLD_SECRET).current
    after = keyring(f"{fingerprint_id(OLD_SECRET)}={OLD_SECRET}", SECRET)
    kept = after.get(before.id)
    assert kept is not None
    data = b"previous hash and canonical row"
    assert kept.mac(data) == before.mac(data)
    assert after.current.id == before.id  # listed first, so it signs


def test_keys_differ_and_are_not_the_secret_itself() -> None:
    one, other = keyring("", SECRET).current, keyring("", OLD_SECRET).current
    data = b"row"
    assert one.mac(data) != other.mac(data)
    assert one.mac(data) != hmac.new(SECRET.encode(), data, hashlib.sha256).digest()
    assert SECRET not in repr(one)


def test_new_entries_are_valid_and_fresh() -> None:
    first, second = new_entry(), new_entry()
    assert first != second
    ring = keyring(f"{first},{second}", SECRET)
    assert ring.current.id == first.partition("=")[0]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("a1", "is not ID=SECRET"),
        ("a1=", "is not ID=SECRET"),
        ("a1=short", "at least 32"),
        ("-a=" + "s" * 32, "the id must be"),
        ("a" * 33 + "=" + "s" * 32, "the id must be"),
        ("legacy=" + "s" * 32, "rows written before audit keys"),
        (f"{EXPLICIT},{EXPLICIT}", "twice"),
        (f"kes-000000000000={OLD_SECRET}", "fingerprint"),
    ],
)
def test_unreadable_keys_are_refused_without_the_secret(value: str, says: str) -> None:
    with pytest.raises(InvalidAuditKeys) as refused:
        keyring(value, SECRET)
    assert says in str(refused.value)
    assert "NSER_AUDIT_KEYS" in str(refused.value)
    for entry in value.split(","):
        secret = entry.partition("=")[2]
        if secret:
            assert secret not in str(refused.value)
