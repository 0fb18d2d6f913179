"""A grievance about a household's score (``/grievance``), and its status page.

The form files through the same service the API's ``POST /v1/public/grievances`` calls
(``store.file``), validated by the same model (``GrievanceForm``, through
:mod:`app.web.public.grievance.page`), under the same caps:

- the body is read up to the API's 16 KiB (413 page beyond it);
- a filing spends the client IP's one filing budget, shared with the API
  (``grievances.filing_wait``, ``NSER_GRIEVANCE_LIMITS``). As on ``/apply``, a form is
  counted when it is sent to the service: a visitor correcting mistakes does not spend it;
- after ``NSER_GRIEVANCE_FREE_FILINGS`` filings an hour from one IP, each needs a solved
  proof-of-work challenge (:mod:`app.web.public.challenge`, ``/static/js/challenge.js``).

The answer is the same whether or not the CNIC is in the registry, as the service's is.
The CNIC travels only in the POST body. The reference and its status link are shown after
a 303 (reloading sends nothing again); the status page
(``/grievance/status/{reference}?token=…``) reads ``store.public_view``: the status, its
dates and the outcome with its reasons, the CNIC masked. An unknown reference and a wrong
token give the same 404 page. The token is in the query, which the access log never holds.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app import rate_limit
from app.deps import PoolDep
from app.routers import grievances as grievances_api
from app.schemas.grievances import GrievanceStatus
from app.services.grievances import store
from app.strict import read_capped
from app.web.i18n import LOCALES
from app.web.public import challenge
from app.web.public.grievance import page as grievance
from app.web.public.status_link import open_link
from app.web.render import WebContext, WebDep, WebError, page, web_secret
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)

FORM = "grievance"  # the challenge's name for this form's free sends
CHALLENGE_KEY = "altcha:grievance"  # its own signing key: another form's solution is no use
FORM_TYPE = "application/x-www-form-urlencoded"
REFERENCE = re.compile(grievances_api.REFERENCE)

TokenParam = Annotated[str | None, Query(description="the grievance's status token")]


def _needs_challenge(request: Request) -> bool:
    state = request.app.state
    return not challenge.free_left(
        state.rate_limit_backend,
        state.settings.grievance_free_filings,
        rate_limit.client_ip(request),
        form=FORM,
    )


def _form_page(
    request: Request,
    web: WebContext,
    *,
    sub: grievance.Submission | None = None,
    errors: dict[str, grievance.FieldError] | None = None,
    notice: tuple[str, str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    offered = None  # a challenge, once the free filings are spent or one was refused
    if status == 403 or _needs_challenge(request):
        offered = challenge.offer(web_secret(request, CHALLENGE_KEY), now=time.time())
    messages = {
        name: web.gettext(err.message, **dict(err.values)) for name, err in (errors or {}).items()
    }
    return page(
        web,
        "grievance/form.html",
        status=status,
        headers=headers,
        grievance=grievance,
        sub=sub or grievance.Submission(),
        errors=messages,
        notice=notice,
        challenge=offered,
    )


@router.get("/grievance", response_class=HTMLResponse)
async def grievance_form(request: Request, web: WebDep) -> HTMLResponse:
    """The form: a CNIC of the household, what is wrong, details, a phone (optional)."""
    return _form_page(request, web)


async def _read_form(request: Request, web: WebContext) -> grievance.Submission:
    """The posted fields: capped, url-encoded, CSRF-checked, no unknown or repeated names."""
    body = await read_capped(request, grievances_api.BODY_CAP)  # over it: a 413 page
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise WebError(400, web.gettext("Please go back and try again."))
    invalid = WebError(422, web.gettext("Please check the address or the form and try again."))
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=8, errors="strict"
        )
        sub = grievance.read_fields(pairs)
    except (UnicodeDecodeError, ValueError):  # UnknownField is a ValueError
        raise invalid from None
    if not web.csrf_ok(sub.csrf):
        raise WebError(
            403, web.gettext("Please reload the form and send it again. Nothing was saved.")
        )
    return sub


def _refused(web: WebContext, verdict: challenge.Verdict) -> tuple[str, str]:
    """The notice (title, text) for a filing the challenge did not let through."""
    if verdict is challenge.Verdict.NEEDED:
        return (
            web.gettext("Please confirm the grievance"),
            web.gettext(
                "Each further grievance from your connection needs your browser to do a short"
                " calculation first. Please press “Send the grievance” again."
            ),
        )
    text = {
        challenge.Verdict.EXPIRED: web.gettext(
            "The page was open for too long. Please press “Send the grievance” again."
        ),
        challenge.Verdict.REPLAYED: web.gettext(
            "This confirmation was already used. Please press “Send the grievance” again."
        ),
    }.get(
        verdict,
        web.gettext(
            "Your browser's confirmation could not be verified. Please press “Send the"
            " grievance” again."
        ),
    )
    return web.gettext("Please confirm the grievance again"), text


@router.post("/grievance", response_class=HTMLResponse)
async def grievance_submit(request: Request, web: WebDep, pool: PoolDep) -> Response:
    """Validate with GrievanceForm; the challenge; the API's budget; store.file; 303."""
    sub = await _read_form(request, web)
    form, errors = grievance.validate(sub)
    if form is None:
        return _form_page(request, web, sub=sub, errors=errors, status=422)
    state = request.app.state
    verdict = challenge.admit(
        state.rate_limit_backend,
        web_secret(request, CHALLENGE_KEY),
        sub.solution,
        free=state.settings.grievance_free_filings,
        client=rate_limit.client_ip(request),
        form=FORM,
        now=time.time(),
    )
    if verdict is not challenge.Verdict.OK:
        return _form_page(request, web, sub=sub, notice=_refused(web, verdict), status=403)
    wait = grievances_api.filing_wait(request)
    if wait is not None:
        notice = (
            web.gettext("Too many grievances"),
            web.gettext(
                "Too many grievances were sent from your connection. Please try again in"
                " %(wait)s. Nothing was saved.",
                wait=challenge.wait_words(wait, LOCALES[web.lang]),
            ),
        )
        headers = {"Retry-After": str(wait)}
        return _form_page(request, web, sub=sub, notice=notice, status=429, headers=headers)
    filed = await store.file(pool, form)
    # Post/redirect/get: reloading the confirmation must not file again.
    sent = f"/grievance/sent/{filed.reference}?" + urlencode(
        {"token": filed.token, "lang": web.lang}
    )
    return RedirectResponse(sent, status_code=303)


def _not_found(web: WebContext) -> WebError:
    # One answer for an unknown reference and a wrong token: the link is the only key.
    return WebError(
        404,
        web.gettext(
            "No grievance matches this link. Check that you copied the whole link you were"
            " given when you sent the grievance."
        ),
    )


async def _view(web: WebContext, pool: Any, reference: str, token: str | None) -> dict[str, Any]:
    return await open_link(
        store.public_view,
        pool,
        reference,
        token,
        reference_pattern=REFERENCE,
        not_found=_not_found(web),
    )


def _status_path(reference: str, token: str) -> str:
    return f"/grievance/status/{reference}?" + urlencode({"token": token})


@router.get("/grievance/sent/{reference}", response_class=HTMLResponse)
async def grievance_sent(
    request: Request, web: WebDep, pool: PoolDep, reference: str, token: TokenParam = None
) -> HTMLResponse:
    """The confirmation after sending: the reference and the status link to keep."""
    await _view(web, pool, reference, token)  # the same 404 as the status page
    assert token is not None
    path = _status_path(reference, token)
    base = str(request.base_url).rstrip("/")
    return page(
        web, "grievance/sent.html", reference=reference, status_url=base + path, status_path=path
    )


@router.get("/grievance/status/{reference}", response_class=HTMLResponse)
async def grievance_status(
    web: WebDep, pool: PoolDep, reference: str, token: TokenParam = None
) -> HTMLResponse:
    """The grievance's status in plain words, the dates of its steps and the outcome."""
    # Read as the API answers it (its response model): the same fields, typed.
    view = GrievanceStatus.model_validate(await _view(web, pool, reference, token))
    return page(web, "grievance/status.html", grievance=grievance, view=view)
