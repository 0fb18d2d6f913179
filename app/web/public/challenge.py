"""The public forms' abuse control: free sends per IP, then a proof-of-work challenge.

Used by ``/check`` (``NSER_CHECK_FREE_LOOKUPS``) and ``/grievance``
(``NSER_GRIEVANCE_FREE_FILINGS``): a visitor gets that many sends of a form per IP per
hour; after that each must carry a solved challenge. Each form counts its own free sends
(``form=`` names it) and signs its challenges with its own key, so a solution for one form
is no use on another. The challenge is ALTCHA's (v1) self-hosted proof of work: the server
signs ``challenge = SHA-256(salt + number)`` with an HMAC key and the browser
(``static/js/challenge.js``, WebCrypto) searches ``0..max_number`` for the number. No third
party is involved. A solution is accepted once: its signature is remembered in the
rate-limit storage (Redis when configured, else memory) until the challenge expires.

The fair-usage budgets are not counted here: each page spends the same per-IP budget as
its API (``app.routers.public_scores.fair_usage_wait``, the grievance filing limits).

The challenge functions are pure (the clock is a parameter); the counters take the
application's rate-limit backend (``app.state.rate_limit_backend``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import math
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from altcha.v1 import SHA256, ChallengeOptions, create_challenge
from babel.dates import format_timedelta
from limits import RateLimitItemPerHour, RateLimitItemPerSecond

from app import rate_limit

# Seconds a challenge stays valid (its solution too); the used-signature record lives as long.
CHALLENGE_TTL = 600
# Numbers the browser may have to try: about 25,000 SHA-256 on average, under a second.
MAX_NUMBER = 50_000
ALGORITHM = SHA256
# A solution's size, base64 of a small JSON object; anything larger is refused unread.
MAX_PAYLOAD = 1024
# The used solutions of every form (a signature is unique; the name is the first form's).
USED_KEY = "check_challenge"


class Verdict(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    NEEDED = "needed"  # no solution sent, and no free send left


def new_challenge(key: bytes, *, now: float, max_number: int = MAX_NUMBER) -> dict[str, Any]:
    """A signed challenge expiring ``CHALLENGE_TTL`` seconds after ``now``, as the browser
    gets it (ALTCHA's JSON: algorithm, challenge, maxNumber, salt, signature)."""
    expires = datetime.fromtimestamp(now + CHALLENGE_TTL, tz=UTC)
    challenge = create_challenge(
        ChallengeOptions(algorithm=ALGORITHM, max_number=max_number, hmac_key=key, expires=expires)
    )
    result: dict[str, Any] = challenge.to_dict()
    return result


def _expires(salt: str) -> float | None:
    _, _, query = salt.partition("?")
    values = urllib.parse.parse_qs(query).get("expires")
    if not values or len(values) != 1:
        return None
    try:
        return float(int(values[0]))
    except ValueError:
        return None


def verify(payload: str, key: bytes, *, now: float) -> tuple[Verdict, str | None]:
    """Check a solution (base64 JSON: algorithm, challenge, number, salt, signature).

    Returns the verdict and, when it is OK, the signature to claim with :func:`claim`.
    Only SHA-256 and a salt carrying exactly one ``expires`` are accepted; the comparisons
    are constant-time.
    """
    if not payload or len(payload) > MAX_PAYLOAD:
        return Verdict.INVALID, None
    try:
        data = orjson.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return Verdict.INVALID, None
    if not isinstance(data, dict):
        return Verdict.INVALID, None
    algorithm, challenge = data.get("algorithm"), data.get("challenge")
    number, salt, signature = data.get("number"), data.get("salt"), data.get("signature")
    if (
        algorithm != ALGORITHM
        or not isinstance(challenge, str)
        or not isinstance(salt, str)
        or not isinstance(signature, str)
        or type(number) is not int
        or not 0 <= number <= 10**9
        or len(signature) != 64
    ):
        return Verdict.INVALID, None
    expires = _expires(salt)
    if expires is None:
        return Verdict.INVALID, None
    delimited = salt if salt.endswith("&") else salt + "&"
    expected = hashlib.sha256(f"{delimited}{number}".encode()).hexdigest()
    expected_signature = hmac.new(key, expected.encode(), hashlib.sha256).hexdigest()
    if not (
        hmac.compare_digest(expected, challenge)
        and hmac.compare_digest(expected_signature, signature)
    ):
        return Verdict.INVALID, None
    if expires < now:
        return Verdict.EXPIRED, None
    return Verdict.OK, signature


def offer(key: bytes, *, now: float) -> str:
    """A new challenge as the form's ``data-challenge`` attribute (JSON)."""
    return orjson.dumps(new_challenge(key, now=now)).decode()


def admit(
    backend: Any, key: bytes, solution: str, *, free: int, client: str, form: str, now: float
) -> Verdict:
    """Whether a send goes ahead (OK): a solution sent is verified and claimed; without
    one, ``client`` spends one of ``form``'s free sends, if any is left (else NEEDED)."""
    if not solution:
        return Verdict.OK if spend_free(backend, free, client, form=form) else Verdict.NEEDED
    verdict, signature = verify(solution, key, now=now)
    if verdict is Verdict.OK and signature is not None and not claim(backend, signature):
        return Verdict.REPLAYED
    return verdict


def claim(backend: Any, signature: str) -> bool:
    """Mark a verified solution used: True the first time, False for a replay."""
    once = RateLimitItemPerSecond(1, CHALLENGE_TTL)
    return rate_limit.hit(backend, [once], USED_KEY, signature) is None


def spend_free(backend: Any, free: int, client: str, *, form: str) -> bool:
    """Count a send of ``form`` without a challenge: True while ``client`` has free sends
    of it this hour."""
    if free <= 0:
        return False
    return rate_limit.hit(backend, [RateLimitItemPerHour(free)], f"{form}_free", client) is None


def free_left(backend: Any, free: int, client: str, *, form: str) -> bool:
    """Whether ``client``'s next send of ``form`` is still free (nothing counted). If the
    storage cannot say, the answer is no: the page then asks for a challenge, and the form
    still works."""
    if free <= 0:
        return False
    strategy = backend.fallback if backend.storage_dead else backend.strategy
    try:
        allowed: bool = strategy.test(
            RateLimitItemPerHour(free), backend.key_prefix, f"{form}_free", client
        )
    except Exception:
        return False
    return allowed


def wait_words(seconds: int, locale: str) -> str:
    """A wait as the locale writes it, rounded up: "45 seconds", "3 minutes", "2 hours"."""
    seconds = max(1, int(seconds))
    if seconds < 60:
        rounded = timedelta(seconds=seconds)
    elif seconds < 3600:
        rounded = timedelta(minutes=math.ceil(seconds / 60))
    else:
        rounded = timedelta(hours=math.ceil(seconds / 3600))
    return format_timedelta(rounded, threshold=1, format="long", locale=locale)
