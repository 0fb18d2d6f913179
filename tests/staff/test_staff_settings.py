"""The console's settings and cookie, as pure logic: origin and RP id, TLS, ``next``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.responses import Response

from app.settings import Settings
from app.web.staff.auth import local_next, set_session_cookie


def test_the_rp_id_follows_the_origin_unless_set() -> None:
    demo = Settings()
    assert (demo.staff_origin, demo.rp_id, demo.staff_origin_secure) == (
        "http://localhost:8000",
        "localhost",
        False,
    )
    live = Settings(staff_origin="https://Staff.Registry.example.pk/", webauthn_rp_id="")
    assert live.staff_origin == "https://staff.registry.example.pk"
    assert live.rp_id == "staff.registry.example.pk"
    parent = Settings(
        staff_origin="https://staff.registry.example.pk", webauthn_rp_id="registry.example.pk"
    )
    assert parent.rp_id == "registry.example.pk"


@pytest.mark.parametrize(
    ("origin", "rp_id"),
    [
        ("http://127.0.0.1:8000", ""),  # browsers refuse passkeys on an IP address
        ("https://[::1]:8443", ""),
        ("https://staff.example.pk/console", ""),  # an origin has no path
        ("ftp://staff.example.pk", ""),
        ("https://user@staff.example.pk", ""),
        ("https://staff.example.pk", "other.example.pk"),  # not the host or a parent of it
        ("https://staff.example.pk", "xample.pk"),
    ],
)
def test_origins_and_rp_ids_that_cannot_work_are_refused(origin: str, rp_id: str) -> None:
    with pytest.raises(ValidationError):
        Settings(staff_origin=origin, webauthn_rp_id=rp_id)


def test_production_wants_tls_except_on_this_machine() -> None:
    secret = "x" * 48
    Settings(environment="production", key_encryption_secret=secret)  # localhost: allowed
    with pytest.raises(ValidationError, match="https"):
        Settings(
            environment="production",
            key_encryption_secret=secret,
            staff_origin="http://staff.example.pk",
        )


def test_behind_tls_the_cookie_is_secure_and_host_only() -> None:
    response = Response()
    set_session_cookie(response, Settings(staff_origin="https://staff.example.pk"), "t" * 43)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-nser_staff=" + "t" * 43)
    for part in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert part in cookie
    assert "Domain" not in cookie
    assert "Max-Age" not in cookie


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/staff/"),
        (
            "/staff/admin/staff/nss_0?done=roles&lang=ur",
            "/staff/admin/staff/nss_0?done=roles&lang=ur",
        ),
        ("/staff//evil.example", "/staff/"),
        ("//evil.example/staff/", "/staff/"),
        ("https://evil.example/staff/", "/staff/"),
        ("/staff/\\evil", "/staff/"),
        ("/staff/../v1/partner", "/staff/"),
        ("/check", "/staff/"),
        ("/staff/\n", "/staff/"),
    ],
)
def test_next_is_a_page_of_the_console(value: str | None, expected: str) -> None:
    assert local_next(value) == expected
