"""The WebAuthn ceremonies of the staff console: enrolment (a passkey is created through a
one-time link), sign-in (any of the registry's passkeys, discoverable: no user name typed)
and step-up (one of the signed-in member's own passkeys, again).

Each is two steps: ``begin_*`` stores a challenge (``challenges``) and returns the options
for ``navigator.credentials.create``/``get`` as JSON; ``finish_*`` takes the challenge the
answer carries (once only, whatever the outcome) and has py_webauthn verify the answer
against the relying party (``NSER_WEBAUTHN_RP_ID``, ``NSER_STAFF_ORIGIN``) with user
verification required. Every outcome, failures included, is written to the audit log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, parse_client_data_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from app.errors import Conflict, SignInFailed
from app.services.audit import trail as audit
from app.services.staff import actors, challenges, enrolment, sessions
from app.settings import Settings

RP_NAME = "National Socio-Economic Registry"
TIMEOUT_MS = 120_000
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
TRANSPORTS = {t.value for t in AuthenticatorTransport}
LABEL_MAX = 100


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str

    @classmethod
    def of(cls, settings: Settings) -> RelyingParty:
        return cls(settings.rp_id, settings.staff_origin)


class Rejected(SignInFailed):
    """A ceremony's answer was not accepted; ``code`` says why (the page shows it in the
    visitor's language), ``staff_id`` whose passkey it was, if known."""

    def __init__(self, detail: str, code: str, staff_id: str | None = None) -> None:
        super().__init__(detail, extra={"code": code})
        self.code = code
        self.staff_id = staff_id


@dataclass(frozen=True)
class Verified:
    staff_id: str
    passkey_id: uuid.UUID


def _challenge_of(credential: dict[str, Any]) -> bytes:
    """The challenge the browser signed (clientDataJSON), to find what it answers."""
    try:
        response = credential["response"]
        challenge: bytes = parse_client_data_json(
            base64url_to_bytes(response["clientDataJSON"])
        ).challenge
        return challenge
    except Exception as exc:  # any malformed answer is the caller's mistake, never a 500
        raise Rejected("the passkey's answer is malformed", "malformed") from exc


def _raw_id(credential: dict[str, Any]) -> bytes:
    try:
        raw = base64url_to_bytes(credential["rawId"])
    except Exception as exc:
        raise Rejected("the passkey's answer is malformed", "malformed") from exc
    if not 16 <= len(raw) <= 1023:
        raise Rejected("the passkey's answer is malformed", "malformed")
    return raw


def _label(label: str | None) -> str:
    text = " ".join((label or "").split())[:LABEL_MAX]
    return text or "Passkey"


# --- enrolment ------------------------------------------------------------------------


async def begin_enrolment(conn: asyncpg.Connection, rp: RelyingParty, token: str | None) -> str:
    """Options to create a passkey for the member of the link ``token`` (not consumed)."""
    link = await enrolment.live(conn, token)
    known = await conn.fetch(
        "SELECT credential_id FROM staff_passkeys WHERE staff_id = $1", link.staff_id
    )
    challenge = await challenges.issue(conn, "enrol", link.token_hash)
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=RP_NAME,
        user_name=link.name,
        user_id=link.staff_id.encode(),
        user_display_name=link.name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=bytes(row["credential_id"])) for row in known
        ],
        supported_pub_key_algs=ALGORITHMS,
    )
    return str(options_to_json(options))


async def finish_enrolment(
    conn: asyncpg.Connection,
    rp: RelyingParty,
    token: str | None,
    credential: dict[str, Any],
    label: str | None,
    *,
    client: str,
) -> Verified:
    """Register the passkey ``credential`` for the link's member and use the link up."""
    link = await enrolment.live(conn, token)
    challenge = _challenge_of(credential)
    try:
        if not await challenges.take(conn, challenge, "enrol", link.token_hash):
            raise Rejected("the registration expired; please start again", "challenge")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                require_user_verification=True,
                supported_pub_key_algs=ALGORITHMS,
            )
        except Exception as exc:
            raise Rejected("the passkey could not be verified", "not_accepted") from exc
        if not 16 <= len(verified.credential_id) <= 1023:  # the spec's bounds
            raise Rejected("the passkey could not be verified", "not_accepted")
    except Rejected as exc:
        await audit.append_action(
            conn,
            actors.member(link.staff_id),
            "POST /staff/enrol",
            {"outcome": "failed", "reason": exc.code, "client": client},
        )
        raise
    transports = credential.get("response", {}).get("transports")
    listed = transports if isinstance(transports, list) else []
    kept = [t for t in listed if isinstance(t, str) and t in TRANSPORTS]
    name = _label(label)
    async with conn.transaction():
        link = await enrolment.live(conn, token, lock=True)  # used meanwhile? refused
        try:
            passkey_id: uuid.UUID = await conn.fetchval(
                """INSERT INTO staff_passkeys (staff_id, credential_id, public_key, sign_count,
                       transports, label)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                link.staff_id,
                verified.credential_id,
                verified.credential_public_key,
                verified.sign_count,
                kept,
                name,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(
                "this passkey is registered already", extra={"code": "passkey_known"}
            ) from exc
        await enrolment.use(conn, link)
        await audit.append_action(
            conn,
            actors.member(link.staff_id),
            "POST /staff/enrol",
            {"outcome": "enrolled", "passkey": passkey_id, "label": name, "client": client},
        )
    return Verified(link.staff_id, passkey_id)


# --- assertions: sign-in and step-up ------------------------------------------------------


def _request_options(rp: RelyingParty, challenge: bytes, allow: list[asyncpg.Record]) -> str:
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=[
            PublicKeyCredentialDescriptor(
                id=bytes(row["credential_id"]),
                transports=[AuthenticatorTransport(t) for t in row["transports"]] or None,
            )
            for row in allow
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return str(options_to_json(options))


async def _assert(
    conn: asyncpg.Connection,
    rp: RelyingParty,
    credential: dict[str, Any],
    purpose: str,
    binding: bytes | None,
    staff_id: str | None,
) -> Verified:
    """Verify an assertion of one of the registry's passkeys (of ``staff_id``'s, if given)
    answering a live challenge of ``purpose``; the passkey's counter and last use follow."""
    raw_id = _raw_id(credential)
    challenge = _challenge_of(credential)
    taken = await challenges.take(conn, challenge, purpose, binding)
    row = await conn.fetchrow(
        """SELECT p.id, p.staff_id, p.public_key, p.sign_count, c.staff_disabled_at
             FROM staff_passkeys p JOIN api_clients c ON c.client_id = p.staff_id
            WHERE p.credential_id = $1""",
        raw_id,
    )
    if row is None:
        raise Rejected("this passkey is not registered", "unknown_passkey")
    owner: str = row["staff_id"]
    if staff_id is not None and owner != staff_id:
        raise Rejected("this passkey belongs to someone else", "not_yours", staff_id)
    if not taken:
        raise Rejected("the sign-in expired; please try again", "challenge", owner)
    if row["staff_disabled_at"] is not None:
        raise Rejected("this staff member is disabled", "disabled", owner)
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=bytes(row["public_key"]),
            credential_current_sign_count=row["sign_count"],
            require_user_verification=True,
        )
    except Exception as exc:
        raise Rejected("the passkey could not be verified", "not_accepted", owner) from exc
    # A discoverable passkey names its user (the staff id it was created for): the same one.
    handle = credential.get("response", {}).get("userHandle")
    if handle and _bytes_or_none(handle) != owner.encode():
        raise Rejected("the passkey could not be verified", "not_accepted", owner)
    await conn.execute(
        "UPDATE staff_passkeys SET sign_count = $2, last_used_at = now() WHERE id = $1",
        row["id"],
        verified.new_sign_count,
    )
    return Verified(owner, row["id"])


def _bytes_or_none(text: Any) -> bytes | None:
    try:
        data: bytes = base64url_to_bytes(text)
    except Exception:
        return None
    return data


async def begin_sign_in(conn: asyncpg.Connection, rp: RelyingParty) -> str:
    """Options to sign in with any passkey of this registry (the browser offers its own)."""
    challenge = await challenges.issue(conn, "sign_in", None)
    return _request_options(rp, challenge, [])


async def finish_sign_in(
    conn: asyncpg.Connection, rp: RelyingParty, credential: dict[str, Any], *, client: str
) -> tuple[str, Verified]:
    """A new session's token for the passkey's member, audited (failures too)."""
    try:
        verified = await _assert(conn, rp, credential, "sign_in", None, None)
    except Rejected as exc:
        actor = actors.member(exc.staff_id) if exc.staff_id else actors.ANONYMOUS
        await audit.append_action(
            conn,
            actor,
            "POST /staff/sign-in",
            {"outcome": "failed", "reason": exc.code, "client": client},
        )
        raise
    async with conn.transaction():
        token = await sessions.open_session(conn, verified.staff_id, verified.passkey_id)
        await audit.append_action(
            conn,
            actors.member(verified.staff_id),
            "POST /staff/sign-in",
            {"outcome": "signed_in", "passkey": verified.passkey_id, "client": client},
        )
    return token, verified


async def begin_step_up(
    conn: asyncpg.Connection, rp: RelyingParty, session: sessions.StaffSession
) -> str:
    """Options to verify one of the signed-in member's own passkeys again."""
    own = await conn.fetch(
        "SELECT credential_id, transports FROM staff_passkeys WHERE staff_id = $1",
        session.staff_id,
    )
    challenge = await challenges.issue(conn, "step_up", session.id_hash)
    return _request_options(rp, challenge, own)


async def finish_step_up(
    conn: asyncpg.Connection,
    rp: RelyingParty,
    session: sessions.StaffSession,
    credential: dict[str, Any],
    *,
    client: str,
) -> Verified:
    """The session's passkey verification renewed (``last_verified_at``), audited."""
    try:
        verified = await _assert(conn, rp, credential, "step_up", session.id_hash, session.staff_id)
    except Rejected as exc:
        await audit.append_action(
            conn,
            session,
            "POST /staff/step-up",
            {"outcome": "failed", "reason": exc.code, "client": client},
        )
        raise
    async with conn.transaction():
        await sessions.mark_verified(conn, session.id_hash)
        await audit.append_action(
            conn,
            session,
            "POST /staff/step-up",
            {"outcome": "verified", "passkey": verified.passkey_id, "client": client},
        )
    return verified
