"""The one rate limiter (slowapi): per client IP for the public, per client id for partners.

Counts live in the storage named by ``NSER_RATE_LIMIT_STORAGE``: ``memory://`` (per
process, the default) or ``redis://host:port/db`` so that every uvicorn worker and replica
shares one count. An optional ``key_prefix`` query parameter on that URL
(``redis://127.0.0.1:6379/0?key_prefix=nser-prod``) separates deployments sharing a Redis.
If Redis fails, slowapi's in-memory fallback keeps the limit per process and the request
is still answered; it re-checks Redis with a back-off and returns to it when it is back.

A per-IP budget counts an IPv4 client by its address and an IPv6 client by its network of
``NSER_RATE_LIMIT_IPV6_PREFIX`` bits (/64: one subscriber's, who may rotate through all of
it), through :func:`client_ip` and :func:`scope_client_ip`.

Limits are given as callables so each request can carry its own limit string: the token
endpoint reads ``NSER_TOKEN_LIMITS``; partner routes read ``request.state.rate_limits``
(set by the auth dependency from the agreement) and fall back to
``NSER_PARTNER_DEFAULT_LIMITS``. The public look-up, the hottest path, counts
``NSER_PUBLIC_LOOKUP_LIMITS`` with :func:`hit` on the same storage, without the decorator::

    @router.get("/scores/{cnic}")
    @rate_limit.limit(partner_limits, key_func=partner_client_key)
    async def get_partner_score(request: Request, partner: PartnerDep, ...): ...

The decorated handler must take ``request: Request``. FastAPI resolves dependencies before
calling the handler, so anything an auth dependency puts on ``request.state`` is visible here.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.datastructures import State
from starlette.responses import Response

from app.errors import problem
from app.settings import Settings

log = logging.getLogger("nser.rate_limit")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_current_request: ContextVar[Request | None] = ContextVar("rate_limited_request", default=None)


# -- who is calling ---------------------------------------------------------------------


def forwarded_client(peer: str, forwarded_for: list[str], trusted: list[IpNetwork]) -> str:
    """The client address: the socket peer, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy.

    Hops left of that one were written by the client and can be anything, so they are never
    read; a spoofed header from an untrusted peer is ignored altogether.
    """
    if not trusted or not forwarded_for:
        return peer
    if not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a malformed hop: nothing left of it can be trusted
        client = hop
        if not is_trusted(hop, trusted):
            break
    return client


def is_trusted(address: str, trusted: list[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def budget_address(address: str, ipv6_prefix: int) -> str:
    """What a per-IP budget counts for ``address``: an IPv4 address itself, an IPv6 address
    its network of ``ipv6_prefix`` bits (``2001:db8:5:6::/64``).

    An IPv6 subscriber is given a whole /64 (often more) and may use any address in it, so
    counting single IPv6 addresses would give it a fresh budget per address. An IPv4-mapped
    address (``::ffff:203.0.113.7``, an IPv4 client of a dual-stack socket) is its IPv4
    address. Anything that is not an address (no socket peer) is kept as it is.
    """
    if ":" not in address:  # IPv4 (or no address): the hot path does no parsing
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


def scope_client_ip(scope: Mapping[str, Any], state: State) -> str:
    """The client of an ASGI request scope as the per-IP budgets count it: the address
    :func:`forwarded_client` finds, grouped by :func:`budget_address`."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    trusted: list[IpNetwork] = state.trusted_networks
    if trusted:
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        peer = forwarded_client(peer, forwarded, trusted)
    return budget_address(peer, state.rate_limit_ipv6_prefix)


def client_ip(request: Request) -> str:
    """Key function for public routes: the client as :func:`scope_client_ip` counts it."""
    return scope_client_ip(request.scope, request.app.state)


def partner_client_key(request: Request) -> str:
    """Key function for partner routes: the authenticated client id (``request.state.client_id``),
    or the client IP for a request that reached the limit without one."""
    client_id = getattr(request.state, "client_id", None)
    return f"client:{client_id}" if client_id else f"ip:{client_ip(request)}"


# -- how much they may call ---------------------------------------------------------------


def _settings() -> Settings:
    request = _current_request.get()
    assert request is not None, "limit providers run inside a rate-limit check"
    settings: Settings = request.app.state.settings
    return settings


def token_limits() -> str:
    """``NSER_TOKEN_LIMITS`` for the token endpoint."""
    return _settings().token_limits


def request_form_limits() -> str:
    """``NSER_REQUEST_FORM_LIMITS``: data-sharing request forms per client IP."""
    return _settings().request_form_limits


def partner_limits() -> str:
    """The calling agreement's limits (``request.state.rate_limits``), else the default."""
    request = _current_request.get()
    assert request is not None
    own: str | None = getattr(request.state, "rate_limits", None)
    return own or _settings().partner_default_limits


# -- the limiter ---------------------------------------------------------------------------


@dataclass
class _Backend:
    """One application's storage; several apps (tests) can share the one ``limiter``."""

    storage: Any
    strategy: Any
    fallback: Any
    key_prefix: str
    storage_dead: bool = False
    recheck_at: float = 0.0


class AppLimiter(Limiter):  # type: ignore[misc]
    """slowapi's Limiter with its storage taken from the application that serves the request.

    The storage belongs to the app (built from its Settings in :func:`install`), not to the
    import-time limiter, so that each ``create_app(settings)`` gets its own counts. The swap
    is safe under asyncio: slowapi's check is synchronous, nothing else runs meanwhile.
    """

    def _check_request_limit(
        self, request: Request, endpoint_func: Any, in_middleware: bool = True
    ) -> None:
        if _current_request.get() is request:  # slowapi re-enters itself to fall back
            super()._check_request_limit(request, endpoint_func, in_middleware)
            return
        backend: _Backend = request.app.state.rate_limit_backend
        self._storage = backend.storage
        self._limiter = backend.strategy
        self._fallback_limiter = backend.fallback
        self._key_prefix = backend.key_prefix
        self._storage_dead = backend.storage_dead
        token = _current_request.set(request)
        try:
            super()._check_request_limit(request, endpoint_func, in_middleware)
        finally:
            _current_request.reset(token)
            backend.storage_dead = self._storage_dead


# slowapi calls inspect.signature() on key functions and limit providers on every request
# (to see whether they take ``request``/``key``); a precomputed __signature__ makes it cheap.
_function: Any
for _function in (
    client_ip,
    partner_client_key,
    token_limits,
    partner_limits,
):
    _function.__signature__ = inspect.signature(_function)

limiter = AppLimiter(
    key_func=client_ip,
    # Count per endpoint, not per URL: the CNIC is in the path and must not reset the count.
    key_style="endpoint",
    # Redis down: keep limiting per process in memory, and answer anyway if even that fails.
    in_memory_fallback_enabled=True,
    swallow_errors=True,
    # Retry-After is added to the 429 only; X-RateLimit-* on every answer would cost a
    # second storage round trip per request.
    headers_enabled=False,
    storage_uri="memory://",
)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def limit(
    value: str | Callable[[], str], *, key_func: Callable[[Request], str]
) -> Callable[[Handler], Handler]:
    """``limiter.limit`` with types: ``@limit(partner_limits, key_func=partner_client_key)``."""
    decorator: Callable[[Handler], Handler] = limiter.limit(value, key_func=key_func)

    def apply(handler: Handler) -> Handler:
        limited = decorator(handler)
        # Read by app.openapi: the operation documents its 429.
        limited.rate_limited = True  # type: ignore[attr-defined]
        return limited

    return apply


# -- staff reads of personal data: one budget per staff client -----------------------------

STAFF_READS = "staff_personal_reads"


def staff_read_limits() -> str:
    """``NSER_STAFF_READ_LIMITS``: a staff client's reads of personal data, all together."""
    return _settings().staff_read_limits


staff_read_limits.__signature__ = inspect.signature(staff_read_limits)  # type: ignore[attr-defined]


def staff_reads(handler: Handler) -> Handler:
    """Count the decorated staff read against its client's one budget of personal-data
    reads (``NSER_STAFF_READ_LIMITS``), shared by every route so decorated: the partner
    limits' storage and key (the client id), one scope for all the routes instead of one
    per route. The handler must take ``request: Request``."""
    decorator: Callable[[Handler], Handler] = limiter.shared_limit(
        staff_read_limits, scope=STAFF_READS, key_func=partner_client_key
    )
    limited = decorator(handler)
    limited.rate_limited = True  # type: ignore[attr-defined]
    return limited


class LoopMemoryStorage(MemoryStorage):  # type: ignore[misc]
    """limits' MemoryStorage without its sweeper thread.

    The stock storage starts a new ``threading.Timer`` 10 ms after the last one fired, so a
    busy worker creates about a hundred threads a second and its event loop fights them for
    the GIL (it cost the look-up more than half its throughput). Expired counters are already
    dropped when read; the sweep that bounds memory is run inline, at most every few seconds.
    """

    SWEEP_EVERY = 5.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self.timer.cancel()
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the name-mangled hook
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY
            self._MemoryStorage__expire_events()


def _split_prefix(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "key_prefix"), "nser")
    rest = urlencode([(key, value) for key, value in query if key != "key_prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def build_backend(uri: str) -> _Backend:
    uri, prefix = _split_prefix(uri)
    options: dict[str, Any] = {}
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # The storage is synchronous and runs on the event loop: a dead or slow Redis must
        # fail fast (then the in-memory fallback takes over), never retry with back-off.
        options = {
            "socket_connect_timeout": 0.25,
            "socket_timeout": 0.25,
            "retry": Retry(NoBackoff(), 0),
        }
    if urlsplit(uri).scheme == "memory":
        storage = LoopMemoryStorage(uri)
    else:
        storage = storage_from_string(uri, **options)
    return _Backend(
        storage=storage,
        strategy=FixedWindowRateLimiter(storage),
        fallback=FixedWindowRateLimiter(LoopMemoryStorage()),
        key_prefix=prefix,
    )


def retry_after_seconds(request: Request, backend: _Backend) -> int:
    """Seconds until the window of the limit that was hit resets (at least 1)."""
    hit = getattr(request.state, "view_rate_limit", None)
    if not hit:
        return 60
    item, args = hit
    strategy = backend.fallback if backend.storage_dead else backend.strategy
    try:
        reset_at = strategy.get_window_stats(item, *args).reset_time
    except Exception:  # storage gone between the hit and now: the whole window
        return max(1, int(item.get_expiry()))
    return max(1, math.ceil(float(reset_at) - time.time()))


async def _too_many_requests(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    retry_after = retry_after_seconds(request, request.app.state.rate_limit_backend)
    return problem(
        429,
        f"fair-usage limit reached ({exc.detail}); retry after {retry_after} s",
        title="Too Many Requests",
        headers={"Retry-After": str(retry_after)},
    )


# -- the public look-up's own check -------------------------------------------------------

RECHECK_SECONDS = 5.0


def _live_strategy(backend: _Backend) -> Any:
    """The shared storage's strategy, or the per-process fallback while it is down."""
    if backend.storage_dead and time.monotonic() >= backend.recheck_at:
        backend.recheck_at = time.monotonic() + RECHECK_SECONDS
        try:
            backend.storage_dead = not backend.storage.check()
        except Exception:  # still down: keep counting in memory
            backend.storage_dead = True
    return backend.fallback if backend.storage_dead else backend.strategy


def hit(backend: _Backend, items: list[RateLimitItem], *identifiers: str) -> int | None:
    """Count one request against ``items``; the seconds to wait if one is spent, else None.

    The same storage, key prefix and Redis-down fallback as the slowapi limiter, called
    directly: the public look-up is the hottest path of the service and slowapi's
    per-request bookkeeping (route lookup, limit evaluation, signature checks) cost it
    more than the database query did.
    """
    strategy = _live_strategy(backend)
    try:
        for item in items:
            if not strategy.hit(item, backend.key_prefix, *identifiers):
                reset_at = strategy.get_window_stats(item, backend.key_prefix, *identifiers)
                return max(1, math.ceil(float(reset_at.reset_time) - time.time()))
    except Exception:
        if strategy is backend.fallback:  # even memory failed: answer rather than refuse
            log.exception("rate-limit storage failed")
            return None
        log.warning("rate-limit storage unavailable; limiting per process until it is back")
        backend.storage_dead = True
        backend.recheck_at = time.monotonic() + RECHECK_SECONDS
        return hit(backend, items, *identifiers)
    return None


def exhausted(backend: _Backend, items: list[RateLimitItem], *identifiers: str) -> int | None:
    """The seconds to wait if one of ``items`` is already spent for ``identifiers``, else
    None. Counts nothing (see :func:`hit`); the same storage and Redis-down fallback."""
    strategy = _live_strategy(backend)
    try:
        for item in items:
            if not strategy.test(item, backend.key_prefix, *identifiers):
                reset_at = strategy.get_window_stats(item, backend.key_prefix, *identifiers)
                return max(1, math.ceil(float(reset_at.reset_time) - time.time()))
    except Exception:
        if strategy is backend.fallback:  # even memory failed: answer rather than refuse
            log.exception("rate-limit storage failed")
            return None
        log.warning("rate-limit storage unavailable; limiting per process until it is back")
        backend.storage_dead = True
        backend.recheck_at = time.monotonic() + RECHECK_SECONDS
        return exhausted(backend, items, *identifiers)
    return None


def install(app: FastAPI, settings: Settings) -> None:
    """Bind the limiter to this app: its storage, trusted proxies and the 429 handler."""
    app.state.limiter = limiter
    app.state.rate_limit_backend = build_backend(settings.rate_limit_storage)
    app.state.public_lookup_limits = parse_many(settings.public_lookup_limits)
    app.state.token_limits = parse_many(settings.token_limits)
    app.state.trusted_networks = settings.trusted_networks
    app.state.rate_limit_ipv6_prefix = settings.rate_limit_ipv6_prefix
    app.add_exception_handler(RateLimitExceeded, _too_many_requests)
