"""DCI signatures and callback URL rules, pure (no database, no HTTP).

The canonical form is checked against bytes written out by hand and a hash computed here,
and one signature against a fixed key (Ed25519 is deterministic), so the documented
algorithm cannot drift from the code without a test failing.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.services.dci import callbacks, registration, signing
from app.settings import Settings

# RFC 8032, section 7.1, TEST 1: the secret key and its public key.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
NOW = 1_765_000_000


def envelope() -> dict[str, Any]:
    return {
        "header": {
            "version": "1.0.0",
            "message_id": "m-1",
            "message_ts": "2026-12-11T09:00:00+05:00",
            "action": "on-search",
            "status": "succ",
            "sender_id": "nser",
        },
        "message": {"transaction_id": "t-1", "b": 1.0, "a": ["é", 1e21, -0.0, "\n"]},
    }


def test_the_canonical_form_is_jcs_of_header_then_message() -> None:
    env = envelope()
    expected = (
        b'{"action":"on-search","message_id":"m-1","message_ts":"2026-12-11T09:00:00+05:00",'
        b'"sender_id":"nser","status":"succ","version":"1.0.0"}'
        + '{"a":["é",1e+21,0,"\\n"],"b":1,"transaction_id":"t-1"}'.encode()
    )
    assert signing.canonical(env["header"], env["message"]) == expected
    assert (
        signing.digest(expected)
        == "BLAKE-512="
        + base64.b64encode(hashlib.blake2b(expected, digest_size=64).digest()).decode()
    )


def test_what_json_cannot_carry_exactly_is_refused() -> None:
    with pytest.raises(ValueError, match="not canonicalisable"):
        signing.canonical({"n": 2**53}, {})
    with pytest.raises(ValueError, match="not canonicalisable"):
        signing.canonical({}, {"x": float("nan")})


def test_a_known_signature() -> None:
    assert signing.public_jwk(KEY.public_key())["x"] == PUBLIC_X
    text = signing.sign(envelope(), KEY, key_id="nser|k1|ed25519", ttl_seconds=300, now=NOW)
    prefix = (
        'Signature: namespace="dci", kidId="nser|k1|ed25519", algorithm="ed25519", '
        f'created="{NOW}", expires="{NOW + 300}", headers="(created) (expires) digest", '
        'signature="'
    )
    assert text.startswith(prefix)
    assert text.endswith('"')
    content = signing.canonical(envelope()["header"], envelope()["message"])
    signed = (
        f"(created): {NOW}\n(expires): {NOW + 300}\ndigest: {signing.digest(content)}"
    ).encode()
    value = base64.b64decode(text[len(prefix) : -1])
    KEY.public_key().verify(value, signed)  # raises if the documented string differs
    assert value == KEY.sign(signed)


def signed(env: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    env = env or envelope()
    env["signature"] = signing.sign(env, KEY, key_id="nser|k1|ed25519", now=kwargs.get("now", NOW))
    return env


def test_verify_accepts_the_same_content_in_any_key_order_and_spacing() -> None:
    env = signed()
    reordered = {
        "message": dict(reversed(list(env["message"].items()))),
        "header": dict(sorted(env["header"].items(), reverse=True)),
        "signature": env["signature"],
    }
    sig = signing.verify(reordered, KEY.public_key(), now=NOW + 10)
    assert (sig.kid, sig.created, sig.expires) == ("k1", NOW, NOW + 300)
    # The "Signature:" prefix is optional, and keyId is read as kidId.
    bare = dict(
        env, signature=env["signature"].removeprefix("Signature: ").replace("kidId", "keyId")
    )
    signing.verify(bare, KEY.public_key(), now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["header"].update(action="on-subscribe"),
        lambda e: e["message"].update(transaction_id="t-2"),
        lambda e: e["message"]["a"].append(1),
        lambda e: e["header"].update(extra=None),
    ],
)
def test_a_changed_header_or_message_does_not_verify(change: Any) -> None:
    env = signed()
    change(env)
    with pytest.raises(signing.SignatureInvalid) as caught:
        signing.verify(env, KEY.public_key(), now=NOW)
    assert caught.value.code == "err.signature.invalid"


def test_missing_and_invalid_signatures_are_told_apart() -> None:
    env = envelope()
    for missing in (None, ""):
        env["signature"] = missing
        with pytest.raises(signing.SignatureMissing) as caught:
            signing.verify(env, KEY.public_key(), now=NOW)
        assert caught.value.code == "err.signature.missing"
    env.pop("signature")
    with pytest.raises(signing.SignatureMissing):
        signing.verify(env, KEY.public_key(), now=NOW)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(signing.SignatureInvalid, match="does not verify"):
        signing.verify(signed(), other, now=NOW)


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (NOW + 300 + signing.CLOCK_SKEW_SECONDS + 1, "expired"),
        (NOW - signing.CLOCK_SKEW_SECONDS - 1, "future"),
    ],
)
def test_signatures_outside_their_lifetime_are_refused(now: int, reason: str) -> None:
    with pytest.raises(signing.SignatureInvalid, match=reason):
        signing.verify(signed(), KEY.public_key(), now=now)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: 42,
        lambda s: "not a signature",
        lambda s: s.replace('algorithm="ed25519"', 'algorithm="rsa-sha256"'),
        lambda s: s.replace("(created) (expires) digest", "digest"),
        lambda s: s.replace('created="', 'created="x'),
        lambda s: s.replace('signature="', 'signature="!!'),
        lambda s: s + ', created="1"',
        lambda s: s.replace(', kidId="nser|k1|ed25519"', ""),
        lambda s: s.replace('signature="', 'signature="AAAA'),
    ],
)
def test_malformed_signatures_are_invalid(mangle: Any) -> None:
    env = signed()
    env["signature"] = mangle(env["signature"])
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(env, KEY.public_key(), now=NOW)


def test_an_envelope_without_header_or_message_objects_is_invalid() -> None:
    env = signed()
    env["message"] = ["not", "an", "object"]
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(env, KEY.public_key(), now=NOW)


def test_public_keys_from_jwks() -> None:
    good = {"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X, "kid": "p1", "use": "sig"}
    assert signing.public_jwk(signing.public_key_from_jwk(good))["x"] == PUBLIC_X
    for bad, reason in [
        ({**good, "d": "secret"}, "private"),
        ({**good, "kty": "EC"}, "OKP"),
        ({**good, "crv": "X25519"}, "Ed25519"),
        ({**good, "x": PUBLIC_X[:-3]}, "32 bytes"),
        ({**good, "x": PUBLIC_X[:-2]}, "base64url"),
        ({**good, "x": PUBLIC_X + "="}, "base64url"),
        ({**good, "use": "enc"}, "signatures"),
        ({**good, "n": "1"}, "unknown"),
        ("a PEM", "JWK"),
    ]:
        with pytest.raises(ValueError, match=reason):
            signing.public_key_from_jwk(bad)


def settings(**overrides: Any) -> Settings:
    return Settings(environment="test", **overrides)


def test_base_urls_are_checked_and_normalised() -> None:
    s = settings()
    assert registration.check_base_url("HTTPS://SPMIS.Example.org:443/dci", s) == (
        "https://spmis.example.org/dci/"
    )
    assert registration.check_base_url("https://spmis.example.org", s) == (
        "https://spmis.example.org/"
    )
    for bad, reason in [
        ("http://spmis.example.org/", "https"),
        ("ftp://spmis.example.org/", "https"),
        ("https://user:pw@spmis.example.org/", "user name"),
        ("https://spmis.example.org/#frag", "fragment"),
        ("https://spmis.example.org/?q=1", "query"),
        ("https://spmis.example.org/a/../b/", '".."'),
        ("https:///nohost", "host"),
        ("https://spmis.example.org/a b", "whitespace"),
        ("https://10.0.0.1/", "private"),
        ("https://127.0.0.1/", "loopback"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://spmis.example.org:99999/", "URL"),
        (42, "required"),
    ]:
        with pytest.raises(registration.UrlRefused, match=reason):
            registration.check_base_url(bad, s)
    relaxed = settings(dci_allow_http_callbacks=True, dci_allow_private_callbacks=True)
    assert registration.check_base_url("http://127.0.0.1:8080/cb", relaxed) == (
        "http://127.0.0.1:8080/cb/"
    )


def test_callback_urls_lie_under_the_base() -> None:
    s = settings()
    base = "https://spmis.example.org/dci/"
    for good in (
        "https://spmis.example.org/dci",
        "https://spmis.example.org/dci/",
        "https://spmis.example.org/dci/on-search",
        "https://SPMIS.example.org:443/dci/on-search?x=1",
    ):
        registration.check_callback_url(good, base, s)
    for bad in (
        "https://spmis.example.org/dcix/on-search",
        "https://spmis.example.org/",
        "https://spmis.example.org.evil.example/dci/on-search",
        "https://spmis.example.org:8443/dci/on-search",
        "https://evil.example/dci/on-search",
    ):
        with pytest.raises(registration.UrlRefused, match="not under"):
            registration.check_callback_url(bad, base, s)
    with pytest.raises(registration.UrlRefused, match="user name"):
        registration.check_callback_url("https://a@spmis.example.org/dci/x", base, s)
    with pytest.raises(registration.UrlRefused, match=r'"\.\."'):
        registration.check_callback_url("https://spmis.example.org/dci/../admin", base, s)


def test_address_rules() -> None:
    refused = [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "2002:0a00:0001::",
    ]
    for text in refused:
        assert registration.address_refused(ipaddress.ip_address(text)), text
    for text in ("8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert registration.address_refused(ipaddress.ip_address(text)) is None, text


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    s = settings(dci_callback_backoff_seconds=2, dci_callback_backoff_max_seconds=60)
    rng = random.Random(1)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (40, 60)]:
        delays = [callbacks.backoff_seconds(attempts, s, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempts
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one value


def test_the_worked_example_in_the_docs_is_what_the_code_makes() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    env = {
        "header": {
            "version": "1.0.0",
            "message_id": "789",
            "message_ts": "2026-12-11T09:00:00+05:00",
            "action": "on-search",
            "status": "succ",
            "sender_id": "nser",
        },
        "message": {"transaction_id": "T1", "correlation_id": "C1", "search_response": []},
    }
    content = signing.canonical(env["header"], env["message"])
    text = signing.sign(
        env,
        KEY,
        key_id="nser|dci-20261211-0a1b2c3d4e5f|ed25519",
        ttl_seconds=300,
        now=1765425600,
    )
    lines = docs.splitlines()
    for expected in (content.decode(), signing.digest(content), text, PUBLIC_X):
        assert any(expected in line for line in lines), expected
    env["signature"] = text
    signing.verify(env, KEY.public_key(), now=1765425700)
