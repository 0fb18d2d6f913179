"""Apply for data (``/apply``): the Data Request Form of Annex I, and the request's status page.

The form posts to the same service the API's ``POST /v1/requests`` calls
(``store.submit``), validated by the same model (``RequestForm``, through
:mod:`app.web.public.apply.page`), under the same caps:

- the body is read up to ``NSER_REQUEST_FORM_MAX_BYTES`` (413 page beyond it);
- the submissions of one client IP share ONE budget, ``NSER_REQUEST_FORM_LIMITS``, with the
  API's. slowapi (``key_style="endpoint"``) keys the API's limit by
  ``(key prefix, client IP, "app.routers.requests.submit_request")``; this page counts with
  :func:`app.rate_limit.hit` under exactly that key (the endpoint name is read from the API
  handler itself), so ten forms a minute cannot be had by alternating the website and the
  API. As with the API, a submission is counted once it passes the form's model (the API's
  decorator runs after its body is parsed): a visitor correcting mistakes does not spend it.

The status page (``/apply/status/{reference}?token=…``) reads ``store.public_view``; an
unknown reference and a wrong token give the same 404 page. Before approval the requester
may withdraw there (a POST carrying the CSRF field and the token).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Query, Request
from limits import parse_many
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app import rate_limit
from app.deps import PoolDep
from app.errors import Conflict, ValidationFailed
from app.routers import requests as requests_api
from app.services.registry import geography
from app.services.requests import pricing, store
from app.strict import read_capped
from app.web.public.apply import page as apply
from app.web.public.status_link import open_link
from app.web.render import WebContext, WebDep, WebError, page
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# The API's rate-limit scope: slowapi keys an endpoint limit by the handler's dotted name.
SHARED_SCOPE = f"{requests_api.submit_request.__module__}.{requests_api.submit_request.__name__}"
REFERENCE = re.compile(r"^DSR-[0-9]{4}-[0-9]{6}$")
FORM_TYPE = "application/x-www-form-urlencoded"


async def _areas(pool: Any) -> list[dict[str, Any]]:
    """Provinces, each with its districts: the options of the geography select."""
    provinces = orjson.loads(await geography.units(pool, "province", None, None))["items"]
    out = []
    for province in provinces:
        districts = orjson.loads(await geography.units(pool, "district", province["code"], None))
        out.append({**province, "districts": districts["items"]})
    return out


async def _form_page(
    web: WebContext,
    pool: Any,
    *,
    sub: apply.Submission | None = None,
    errors: dict[str, apply.FieldError] | None = None,
    status: int = 200,
) -> HTMLResponse:
    messages = {
        name: web.gettext(err.message, **dict(err.values)) for name, err in (errors or {}).items()
    }
    return page(
        web,
        "apply/form.html",
        status=status,
        apply=apply,
        pricing=pricing,
        sub=sub or apply.Submission(),
        errors=messages,
        areas=await _areas(pool),
        example=apply.example_quote(),
    )


@router.get("/apply", response_class=HTMLResponse)
async def apply_form(web: WebDep, pool: PoolDep) -> HTMLResponse:
    """The Data Request Form, and how the price is worked out."""
    return await _form_page(web, pool)


def _pairs(body: bytes, max_fields: int, web: WebContext) -> list[tuple[str, str]]:
    """A url-encoded body's (name, value) pairs; malformed or too many fields is a 422 page."""
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=max_fields,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise WebError(
            422, web.gettext("Please check the address or the form and try again.")
        ) from None


async def _read_form(request: Request, web: WebContext) -> apply.Submission:
    """The posted fields: capped, url-encoded, CSRF-checked, no unknown names."""
    cap: int = request.app.state.settings.request_form_max_bytes
    body = await read_capped(request, cap)  # over the cap: PayloadTooLarge, a 413 page
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise WebError(400, web.gettext("Please go back and try again."))
    pairs = _pairs(body, apply.max_fields(), web)
    csrf = [value for name, value in pairs if name == "csrf_token"]
    if len(csrf) != 1 or not web.csrf_ok(csrf[0]):
        raise WebError(
            403, web.gettext("Please reload the form and send it again. Nothing was saved.")
        )
    try:
        return apply.read_fields(pairs)
    except apply.UnknownField:
        raise WebError(
            422, web.gettext("The form sent fields it does not have. Nothing was saved.")
        ) from None


def _spend_budget(request: Request) -> int | None:
    """Count one submission against the API's per-IP budget; seconds to wait if it is spent."""
    state = request.app.state
    limits = parse_many(state.settings.request_form_limits)
    return rate_limit.hit(
        state.rate_limit_backend, limits, rate_limit.client_ip(request), SHARED_SCOPE
    )


@router.post("/apply", response_class=HTMLResponse)
async def apply_submit(request: Request, web: WebDep, pool: PoolDep) -> Response:
    """Validate with RequestForm; store through store.submit; show the reference once."""
    sub = await _read_form(request, web)
    form, errors = apply.validate(sub)
    if form is None:
        return await _form_page(web, pool, sub=sub, errors=errors, status=422)
    retry_after = _spend_budget(request)
    if retry_after is not None:
        raise WebError(
            429,
            web.gettext(
                "Too many forms were sent from your connection. Please try again in"
                " %(seconds)s seconds.",
                seconds=web.fmt.number(retry_after),
            ),
            headers={"Retry-After": str(retry_after)},
        )
    try:
        made = await store.submit(pool, form)
    except ValidationFailed as exc:
        found = apply.service_errors(exc.errors or [])
        if not found:
            raise
        return await _form_page(web, pool, sub=sub, errors=found, status=422)
    # Post/redirect/get: reloading the confirmation must not send the form again.
    sent = f"/apply/sent/{made.reference}?" + urlencode({"token": made.token, "lang": web.lang})
    return RedirectResponse(sent, status_code=303)


@router.get("/apply/sent/{reference}", response_class=HTMLResponse)
async def apply_sent(
    request: Request,
    web: WebDep,
    pool: PoolDep,
    reference: str,
    token: Annotated[str | None, Query(description="the request's status token")] = None,
) -> HTMLResponse:
    """The confirmation after sending: the reference and the status link to keep."""
    await _view(web, pool, reference, token)  # the same 404 as the status page
    assert token is not None
    status_path = "/apply/status/" + reference + "?" + urlencode({"token": token})
    base = str(request.base_url).rstrip("/")
    return page(
        web,
        "apply/done.html",
        reference=reference,
        status_url=base + status_path,
        status_path=status_path,
    )


def _not_found(web: WebContext) -> WebError:
    # One answer for an unknown reference and a wrong token: the link is the only key.
    return WebError(
        404,
        web.gettext(
            "No request matches this link. Check that you copied the whole link you were"
            " given when you applied."
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


@router.get("/apply/status/{reference}", response_class=HTMLResponse)
async def apply_status(
    web: WebDep,
    pool: PoolDep,
    reference: str,
    token: Annotated[str | None, Query(description="the request's status token")] = None,
) -> HTMLResponse:
    """The request's status in plain words and the dates of its steps."""
    view = await _view(web, pool, reference, token)
    return page(
        web,
        "apply/status.html",
        apply=apply,
        view=view,
        token=token,
    )


@router.post("/apply/status/{reference}/withdraw", response_class=HTMLResponse)
async def apply_withdraw(request: Request, web: WebDep, pool: PoolDep, reference: str) -> Response:
    """Withdraw before approval; then back to the status page (303)."""
    body = await read_capped(request, 4096)
    pairs = _pairs(body, 3, web)
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in ("csrf_token", "token") or name in fields:
            raise WebError(
                422, web.gettext("The form sent fields it does not have. Nothing was saved.")
            )
        fields[name] = value
    if not web.csrf_ok(fields.get("csrf_token")):
        raise WebError(
            403, web.gettext("Please reload the form and send it again. Nothing was saved.")
        )
    token = fields.get("token")
    await _view(web, pool, reference, token)  # same 404 for a wrong link
    assert token is not None
    try:
        await store.withdraw_by_requester(pool, reference, token)
    except Conflict:
        pass  # approved or closed meanwhile: the status page shows where it stands
    target = f"/apply/status/{reference}?" + urlencode({"token": token, "lang": web.lang})
    return RedirectResponse(target, status_code=303)
