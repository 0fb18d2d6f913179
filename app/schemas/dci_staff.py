"""Bodies of the staff's DCI endpoints: an agreement's registration (app/routers/dci_staff.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.schemas.base import StrictModel


class Ed25519Jwk(StrictModel):
    """An Ed25519 public key as a JWK (RFC 8037); the private member ``d`` is refused."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: Annotated[str, Field(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")]
    kid: Annotated[str | None, Field(max_length=200)] = None
    use: Literal["sig"] | None = None
    alg: Literal["EdDSA", "Ed25519"] | None = None


class DciRegistrationIn(StrictModel):
    """``PUT /v1/staff/agreements/{agreement_id}/dci``: the whole registration (replaced)."""

    callback_base_url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2000,
            description="https URL every DCI callback URL of the agreement lies under",
            examples=["https://spmis.example.org/dci/"],
        ),
    ]
    public_key: Ed25519Jwk | None = Field(
        default=None,
        description="the sender's Ed25519 public key; when set, every message must be signed",
    )
