"""The website's "Check a poverty level" page (``/check``): the public look-up as a form.

It answers what ``GET /v1/public/scores/{cnic}`` answers — the same CNIC parsing, query,
masking and "no living member" answer — and spends the same per-IP fair-usage budget
(``public_scores.fair_usage_wait``): a visitor has one budget, whether they use the page or
the API. The CNIC travels only in the POST body, never in a URL, so it never reaches an
access log. After ``NSER_CHECK_FREE_LOOKUPS`` checks an hour from one IP, each check needs
a solved proof-of-work challenge (:mod:`app.web.public.challenge`, solved by
``/static/js/challenge.js``).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from app import rate_limit
from app.routers import public_scores
from app.schemas.public import parse_cnic
from app.services.pmt.model import InvalidModel, current_model
from app.services.registry import lookup as lookup_service
from app.strict import read_capped
from app.web.i18n import LOCALES, N_
from app.web.public import challenge
from app.web.render import WebContext, WebDep, WebError, page, web_secret
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)

FIELDS = frozenset({"csrf_token", "cnic", "altcha"})
FORM = "check"  # the challenge's name for this form's free sends
# The form is three short fields: a CSRF token, a CNIC and a challenge solution.
MAX_BODY = 4096
FORM_TYPE = "application/x-www-form-urlencoded"

# The default bands of the PMT model, from the poorest; a model may name others.
BANDS: dict[str, tuple[str, str]] = {
    "ultra_poor": (
        N_("Ultra poor"),
        N_(
            "The poorest households in the registry. Their survey shows very few assets "
            "and very hard living conditions."
        ),
    ),
    "very_poor": (
        N_("Very poor"),
        N_(
            "Households in deep poverty, just above the poorest. They have few assets and "
            "struggle to meet basic needs."
        ),
    ),
    "poor": (
        N_("Poor"),
        N_(
            "Households below the poverty line, though less deeply poor than the two "
            "bands below them."
        ),
    ),
    "non_poor": (
        N_("Not poor"),
        N_(
            "Households above the poverty line. Some of them may still be at risk of "
            "falling into poverty."
        ),
    ),
    "well_off": (
        N_("Well off"),
        N_("Households with the most assets and the best living conditions in the registry."),
    ),
}


def _bands(web: WebContext) -> list[dict[str, str]]:
    return [
        {"name": name, "label": web.gettext(label), "meaning": web.gettext(meaning)}
        for name, (label, meaning) in BANDS.items()
    ]


def _challenge(request: Request, web: WebContext, needed: bool) -> str | None:
    if not needed:
        return None
    return challenge.offer(web_secret(request, "altcha"), now=time.time())


def _render(
    request: Request,
    web: WebContext,
    *,
    status: int = 200,
    cnic: str = "",
    field_error: str | None = None,
    notice: str | None = None,
    notice_title: str | None = None,
    result: dict[str, Any] | None = None,
    needs_challenge: bool | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    state = request.app.state
    if needs_challenge is None:
        needs_challenge = not challenge.free_left(
            state.rate_limit_backend,
            state.settings.check_free_lookups,
            rate_limit.client_ip(request),
            form=FORM,
        )
    return page(
        web,
        "check/check.html",
        status=status,
        headers=headers,
        cnic=cnic,
        field_error=field_error,
        notice=notice,
        notice_title=notice_title,
        result=result,
        challenge=_challenge(request, web, needs_challenge),
        free=state.settings.check_free_lookups,
        bands=_bands(web),
    )


@router.get("/check", response_class=HTMLResponse)
async def check_form(request: Request, web: WebDep) -> HTMLResponse:
    """The form: a CNIC, and the challenge once the free checks of the hour are used."""
    return _render(request, web)


async def _form_fields(request: Request, web: WebContext) -> dict[str, str]:
    """The urlencoded body, capped; unknown, repeated or undecodable fields are a 422."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise WebError(400, web.gettext("Please go back and try again."))
    raw = await read_capped(request, MAX_BODY)
    invalid = WebError(422, web.gettext("Please check the address or the form and try again."))
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=6
        )
    except (UnicodeDecodeError, ValueError):
        raise invalid from None
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names) or not set(names) <= FIELDS:
        raise invalid
    return dict(pairs)


async def _band_range(
    request: Request, band: str | None, version: str | None
) -> tuple[float, float] | None:
    """The scores a band covers in the household's scoring model, if that is the current one."""
    if band is None or version is None:
        return None
    try:
        model = await request.app.state.reads.run(current_model)
    except (*public_scores.UNAVAILABLE, InvalidModel):
        return None  # the answer stands without the range
    if model.version != version:
        return None
    low = 0.0
    for name, bound in model.bands:
        if name == band:
            return low, 100.0 if bound is None else bound
        low = 0.0 if bound is None else bound
    return None


@router.post("/check", response_class=HTMLResponse)
async def check(request: Request, web: WebDep) -> HTMLResponse:
    """One check: CSRF, the free checks or a solved challenge, the shared budget, the look-up."""
    fields = await _form_fields(request, web)
    if not web.csrf_ok(fields.get("csrf_token")):
        raise WebError(
            403, web.gettext("For your security the form expired. Please open it again and retry.")
        )
    state = request.app.state
    client = rate_limit.client_ip(request)
    written = fields.get("cnic", "").strip()[:40]
    if not written:
        return _render(
            request, web, status=422, field_error=web.gettext("Enter the CNIC to check.")
        )

    verdict = challenge.admit(
        state.rate_limit_backend,
        web_secret(request, "altcha"),
        fields.get("altcha", ""),
        free=state.settings.check_free_lookups,
        client=client,
        form=FORM,
        now=time.time(),
    )
    if verdict is challenge.Verdict.NEEDED:
        return _render(
            request,
            web,
            status=403,
            cnic=written,
            notice=web.gettext(
                "Each further check needs your browser to do a short calculation first. "
                "Please press “Check” again."
            ),
            notice_title=web.gettext("Please confirm the check"),
            needs_challenge=True,
        )
    if verdict is not challenge.Verdict.OK:
        message = {
            challenge.Verdict.EXPIRED: web.gettext(
                "The page was open for too long. Please press “Check” again."
            ),
            challenge.Verdict.REPLAYED: web.gettext(
                "This confirmation was already used. Please press “Check” again."
            ),
        }.get(
            verdict,
            web.gettext(
                "Your browser's confirmation could not be verified. Please press “Check” again."
            ),
        )
        return _render(
            request,
            web,
            status=403,
            cnic=written,
            notice=message,
            notice_title=web.gettext("Please confirm the check again"),
            needs_challenge=True,
        )

    # From here on exactly the API's look-up: budget, CNIC, query, answer.
    wait = public_scores.fair_usage_wait(state, client)
    if wait is not None:
        return _render(
            request,
            web,
            status=429,
            cnic=written,
            notice=web.gettext(
                "You have reached the fair-usage limit of checks. Please try again in %(wait)s.",
                wait=challenge.wait_words(wait, LOCALES[web.lang]),
            ),
            notice_title=web.gettext("Too many checks"),
            headers={"Retry-After": str(wait)},
        )
    try:
        cnic = parse_cnic(written)
    except ValueError:
        return _render(
            request,
            web,
            status=422,
            cnic=written,
            field_error=web.gettext(
                "Enter the CNIC as 13 digits, with or without dashes, like 12345-1234567-1."
            ),
        )
    try:
        answer = await lookup_service.public_score(state.reads, cnic)
    except public_scores.UNAVAILABLE:
        return _render(
            request,
            web,
            status=503,
            cnic=written,
            notice=web.gettext(
                "The registry is temporarily unavailable. Please try again in a few minutes."
            ),
            notice_title=web.gettext("The registry is busy"),
            headers={"Retry-After": "5"},
        )
    if answer is None:
        return _render(
            request,
            web,
            status=404,
            cnic=written,
            notice=web.gettext("No living member of the registry has this CNIC."),
            notice_title=web.gettext("CNIC not found"),
        )
    score = orjson.loads(answer)
    band = score["poverty_band"]
    label, meaning = BANDS.get(band, (band, "")) if band else (None, "")
    result = {
        "cnic": score["cnic"],  # masked by the look-up, as the API answers it
        "score": score["pmt_score"],
        "band": band,
        "band_label": web.gettext(label) if label else None,
        "band_meaning": web.gettext(meaning) if meaning else "",
        "surveyed_on": date.fromisoformat(score["surveyed_on"]),
        "pmt_version": score["pmt_version"],
        "range": await _band_range(request, band, score["pmt_version"]),
    }
    return _render(request, web, result=result)
