"""Every knob of the service, read from ``NSER_*`` environment variables."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "NSER_"
# NSER_ names read by the test suite and the benchmarks themselves, never by the service:
# accepted by their prefix (docs/operations.md, "Configuration is checked").
FOREIGN_PREFIXES = ("NSER_TEST_", "NSER_BENCH_")

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "dev-only-key-encryption-secret-change-me"  # noqa: S105 - refused outside development


def bundled_migrations_dir() -> Path:
    """The Alembic scripts this code was released with.

    An installed wheel carries the top-level ``migrations/`` folder as ``app/migrations``
    (pyproject.toml maps it with ``package-dir``); a checkout or an editable install uses
    the top-level folder itself. NSER_MIGRATIONS_DIR overrides both.
    """
    packaged = Path(__file__).resolve().parent / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return ROOT / "migrations"


_NEXT_URL = re.compile(r",\s*(?=postgres(?:ql)?(?:\+asyncpg)?://)", re.IGNORECASE)


def split_urls(value: object) -> list[str]:
    """NSER_READ_DATABASE_URL as a list: a JSON list, or URLs separated by commas. A comma
    inside a URL (libpq's several hosts, ``postgresql://a:5432,b:5432/db``) stays in it:
    only a comma followed by the next URL's scheme separates two."""
    if isinstance(value, list | tuple):
        items = [str(item) for item in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            items = [str(item) for item in json.loads(text)]
        else:
            items = _NEXT_URL.split(text) if text else []
    else:
        raise ValueError("URLs, comma-separated, or a JSON list")
    # Not checked further here: an error would quote the value, passwords included
    # (app.replicas.open_reads checks each URL's scheme, naming only its position).
    return [item.strip().rstrip(",").strip() for item in items if item.strip()]


class UnknownSetting(ValueError):
    """An NSER_* variable the service does not know (a misspelt name would otherwise be
    silently ignored: NSER_READ_DATABSE_URL would run without the replica)."""


def known_names() -> list[str]:
    """Every NSER_* variable the service reads."""
    return [PREFIX + name.upper() for name in Settings.model_fields]


def check_names(names: Mapping[str, object]) -> None:
    """Refuse an NSER_* name that is no setting, naming the closest known one."""
    known = set(known_names())
    unknown = sorted(
        name
        for name in names
        if name.upper().startswith(PREFIX)
        and name.upper() not in known
        and not name.upper().startswith(FOREIGN_PREFIXES)
    )
    if not unknown:
        return
    said = []
    bare = [name.removeprefix(PREFIX) for name in sorted(known)]  # the prefix says nothing
    for name in unknown:
        close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), bare, n=1)
        hint = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
        said.append(f"{name}{hint}")
    raise UnknownSetting(
        f"unknown setting{'s' if len(said) > 1 else ''}: {'; '.join(said)}. "
        "Every NSER_* variable must be one the service knows (docs/operations.md, "
        '"Configuration is checked")'
    )


def _env_file_names(env_file: object) -> list[str]:
    from dotenv import dotenv_values

    paths = env_file if isinstance(env_file, list | tuple) else [env_file]
    names: list[str] = []
    for path in paths:
        if path is not None and Path(str(path)).is_file():
            names.extend(dotenv_values(Path(str(path))))
    return names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore")

    def __init__(self, **values: object) -> None:
        # Configuration is input too: the environment (and .env) is checked before use.
        env_file = values.get("_env_file", self.model_config.get("env_file"))
        check_names({**dict.fromkeys(_env_file_names(env_file)), **os.environ})
        super().__init__(**values)  # type: ignore[arg-type]

    environment: Literal["development", "test", "production"] = "development"
    # The service's database role; empty means: start the embedded PostgreSQL in ``data_dir``.
    database_url: str = ""
    # The schema owner's URL, for `nser db upgrade`/`downgrade` and `nser seed`; empty: the
    # service's URL (one role for everything). See docs/operations.md, "Database roles".
    owner_database_url: str = ""
    data_dir: Path = Path(".nser")
    migrations_dir: Path = Field(default_factory=bundled_migrations_dir)
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_pool_max_overflow: int = Field(default=10, ge=0, le=1000)
    # Behind a connection pooler in transaction mode (pgbouncer < 1.21, which does not track
    # prepared statements): the request paths' pools then prepare no named statements
    # (asyncpg's and SQLAlchemy's statement caches off). See docs/operations.md.
    db_statement_cache: bool = True
    # The connections that keep session state (the ingest workers' staging tables and
    # snapshots, the public products' refresher's session lock, `nser` commands) use this
    # URL, straight to PostgreSQL, when NSER_DATABASE_URL goes through a transaction pooler;
    # empty: NSER_DATABASE_URL.
    direct_database_url: str = ""
    # Read replicas (streaming standbys of the primary), comma-separated or a JSON list: the
    # public look-up, lists, exports, eligibility, products and the website read there
    # (app/replicas.py; docs/operations.md, "Read replicas"). Empty: every read on the primary.
    read_database_url: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A replica further behind the primary than this is not read; a read that must see a
    # newer state than its replica replayed waits this long, then reads the primary.
    read_max_lag_seconds: float = Field(default=5.0, ge=0.1, le=3600)
    read_wait_seconds: float = Field(default=0.5, ge=0, le=10)
    read_check_seconds: float = Field(default=1.0, ge=0.05, le=60)

    # Rate limiting: "memory://" or "redis://host:port/db".
    rate_limit_storage: str = "memory://"
    # Per-IP budgets count an IPv6 client by its network of this many bits (IPv4: per address).
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    public_lookup_limits: str = "10/minute;100/day"
    # Answer the public look-up in a pure-ASGI shortcut ahead of FastAPI's routing (same
    # code, same answers; see app/public_fastpath.py). Off: the FastAPI route answers.
    public_fast_path: bool = True
    # The website's /check page: look-ups per client IP per hour before each further one
    # needs a solved proof-of-work challenge (0: always). Counted besides, not instead of,
    # NSER_PUBLIC_LOOKUP_LIMITS, which the page shares with the API.
    check_free_lookups: int = Field(default=3, ge=0, le=10_000)
    token_limits: str = "20/minute"  # noqa: S105 - a rate, not a secret
    partner_default_limits: str = "600/minute"
    # Staff reads of personal data (household histories, full score explanations, the staff
    # views of requests and grievances): one budget per staff client over all of them.
    staff_read_limits: str = "120/minute;2000/day"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Partner tokens.
    jwt_issuer: str = "nser"
    jwt_audience: str = "nser-partner-api"
    jwt_algorithm: Literal["RS256", "ES256"] = "ES256"
    token_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    key_encryption_secret: SecretStr = SecretStr(DEV_SECRET)

    # Audit chain keys, "ID=SECRET[,ID=SECRET...]": the first signs new audit rows, all
    # verify. Empty: a key derived from NSER_KEY_ENCRYPTION_SECRET (app/services/audit/keys.py).
    audit_keys: SecretStr = SecretStr("")
    # Independent hash chains of the audit log (each with its own lock): up to this many
    # audited requests append at once (app/services/audit/trail.py).
    audit_chains: int = Field(default=16, ge=1, le=256)
    # External anchors of the audit chain (every chain's head, signed), one file each, in
    # this directory; empty: no anchors. `nser worker` writes one every
    # ``audit_anchor_seconds`` when the log has grown (app/services/audit/anchor.py).
    audit_anchor_dir: str = ""
    audit_anchor_seconds: float = Field(default=300.0, ge=1, le=86_400)

    # Data-sharing request forms (POST /v1/requests, no credentials): per client IP.
    request_form_limits: str = "5/minute;50/day"
    request_form_max_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    # Grievances (POST /v1/public/grievances, no credentials): filings per client IP, counted
    # like the look-up (unset: NSER_PUBLIC_LOOKUP_LIMITS); service-level targets in days
    # from filing to triage and to resolution (overdue cases show in the M&E report).
    grievance_limits: str | None = None
    # The website's /grievance form: filings per client IP per hour before each further one
    # needs the proof-of-work challenge (0: always), besides the filing limits above.
    grievance_free_filings: int = Field(default=3, ge=0, le=10_000)
    grievance_triage_days: int = Field(default=7, ge=1, le=365)
    grievance_resolve_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("grievance_limits")
    @classmethod
    def _grievance_limits_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_many(value)  # a ValueError names the limit it cannot read
        return value

    @field_validator("staff_read_limits", "staff_sign_in_limits")
    @classmethod
    def _staff_limits_parse(cls, value: str) -> str:
        parse_many(value)  # a ValueError names the limit it cannot read
        return value

    # The staff's "my work" queues (app/services/console): an active agreement is due for a
    # spot check this many days after its last one (or its start); an open obligation shows
    # from this many days before it is due.
    spot_check_interval_days: int = Field(default=180, ge=1, le=3650)
    obligation_notice_days: int = Field(default=30, ge=0, le=3650)

    # The M&E team's analyses (category ii for the registry's own staff): the locked
    # dimensions (viii-xvii) they may use besides the unlocked ones, checked like an
    # agreement's (never all of them). Comma-separated; empty: the unlocked ones only.
    staff_analysis_dimensions: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("staff_analysis_dimensions", mode="before")
    @classmethod
    def _split_dimensions(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("staff_analysis_dimensions")
    @classmethod
    def _granted_like_an_agreement(cls, value: list[str]) -> list[str]:
        from app.services.sharing.rules import check_dimensions  # the sharing rules' own check

        return check_dimensions(value)

    # Disclosure control of every published aggregate (summaries, analysis, maps): a count
    # below this is null; published counts are rounded to the base.
    suppress_below: int = Field(default=10, ge=3, le=1000)
    disclosure_rounding_base: int = Field(default=5, ge=1, le=100)
    # The public summaries and maps are refreshed by the worker at most this often after a
    # change (and never sooner after a refresh than it took).
    public_refresh_seconds: float = Field(default=60.0, ge=0.05, le=3600)

    # Anonymized extracts.
    k_anonymity: int = Field(default=5, ge=2, le=1000)
    # The largest scope one request may stream (422 problem past it, before the audit row
    # and the first byte): households of a beneficiary or geo NDJSON/CSV list, member
    # records of an anonymized extract. A bigger scope is several requests (narrower geography) or
    # the JSON list's pages. See docs/operations.md, "Limits and timeouts".
    export_max_households: int = Field(default=1_000_000, ge=1, le=100_000_000)
    extract_max_records: int = Field(default=5_000_000, ge=1, le=500_000_000)

    # Updates back.
    updates_max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    updates_max_records: int = Field(default=50_000, ge=1, le=10_000_000)
    # Records one agreement may send in any hour, dry runs included (429 past it): update
    # batches match records against the registry, so their volume is bounded like a read.
    updates_records_per_hour: int = Field(default=200_000, ge=1, le=100_000_000)
    in_process_workers: int = Field(default=1, ge=0, le=64)
    # Records per ingest transaction, and whether a worker reads and applies the next chunk
    # on a second connection while the previous one is written.
    ingest_chunk_records: int = Field(default=2000, ge=1, le=20_000)
    ingest_pipeline: bool = True

    # DCI callbacks (app/services/dci/callbacks.py). NSER's sender id in the signature's
    # kidId. Callback URLs must be https unless http is allowed, and must not resolve to a
    # private, loopback, link-local, multicast or reserved address unless that is allowed
    # (a test set-up or a closed network: both false in production). Each delivery attempt
    # gets ``dci_callback_timeout_seconds`` in all; a failure is retried after a back-off
    # doubling from ``dci_callback_backoff_seconds`` up to ``..._backoff_max_seconds``
    # (with jitter), and after ``dci_callback_max_attempts`` attempts the callback is dead.
    # At most ``dci_callback_concurrency`` deliveries to one agreement are in flight at once
    # (over every worker), at most ``dci_callback_workers`` per worker process in all.
    dci_sender_id: str = Field(default="nser", min_length=1, max_length=100)
    dci_allow_http_callbacks: bool = False
    dci_allow_private_callbacks: bool = False
    dci_callback_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    dci_callback_backoff_seconds: float = Field(default=5.0, gt=0, le=3600)
    dci_callback_backoff_max_seconds: float = Field(default=3600.0, gt=0, le=86_400)
    dci_callback_max_attempts: int = Field(default=12, ge=1, le=100)
    dci_callback_concurrency: int = Field(default=2, ge=1, le=64)
    dci_callback_workers: int = Field(default=16, ge=1, le=256)
    dci_callback_poll_seconds: float = Field(default=0.5, ge=0.01, le=60)
    # The DCI notifier (app.services.dci.notify) reads new history rows this often.
    dci_notify_poll_seconds: float = Field(default=0.2, ge=0.01, le=60)
    # How long a signature NSER makes stays valid (its ``expires`` minus ``created``).
    dci_signature_ttl_seconds: int = Field(default=300, ge=10, le=86_400)

    # The staff console (/staff/): the origin staff open it at, exactly as the browser shows
    # it (scheme://host[:port]; https in production unless on localhost), and the WebAuthn
    # relying-party id passkeys are bound to (empty: the origin's host; or a parent domain
    # of it). Browsers refuse an IP address as RP id: a demo here uses http://localhost:8000.
    staff_origin: str = "http://localhost:8000"
    webauthn_rp_id: str = ""
    # Console sessions end after this long without a request, and this long after sign-in
    # whatever happens; sensitive actions need a passkey verification this recent (step-up).
    staff_idle_timeout_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    staff_session_max_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 24 * 3600)
    staff_step_up_seconds: int = Field(default=5 * 60, ge=30, le=3600)
    # A one-time enrolment link works this many hours after it is issued.
    staff_enrol_link_hours: int = Field(default=24, ge=1, le=14 * 24)
    # Passkey ceremonies begun per client IP (sign-in, enrolment, step-up options).
    staff_sign_in_limits: str = "30/minute;300/day"

    # The HTTP server's own limits (app/http_guard.py, `nser serve`; docs/operations.md,
    # "Limits and timeouts"): a request line and headers over ``http_max_head_bytes`` are
    # 431; a head not complete ``http_head_timeout_seconds`` after its first byte, or a body
    # not complete ``http_body_timeout_seconds`` after its head, is 408 and the connection
    # closed; an idle kept-alive connection is closed after ``http_keep_alive_seconds``.
    # Past ``http_max_connections`` open connections (per worker) a request is 503;
    # ``http_backlog`` connections may wait to be accepted. More than
    # ``http_max_query_params`` query parameters are 414.
    http_max_head_bytes: int = Field(default=32 * 1024, ge=4 * 1024, le=1024 * 1024)
    http_head_timeout_seconds: float = Field(default=10.0, ge=0.5, le=300)
    http_body_timeout_seconds: float = Field(default=120.0, ge=1, le=3600)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    http_max_connections: int = Field(default=4096, ge=16, le=100_000)
    http_backlog: int = Field(default=2048, ge=16, le=65_535)
    http_max_query_params: int = Field(default=1024, ge=16, le=100_000)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    log_json: bool = True
    # GET /metrics answers only "Authorization: Bearer <this token>"; unset, /metrics is off.
    metrics_token: SecretStr | None = None

    @property
    def max_request_body_bytes(self) -> int:
        """The largest request body any endpoint takes (a batch of updates; 1 MiB at the
        least): a longer declared body is 413 before routing (``app.middleware.RequestLimits``)."""
        return max(self.updates_max_body_bytes, self.request_form_max_bytes, 1024 * 1024)

    def session_database_url(self) -> str:
        """The service's URL for connections that keep session state: the direct one if
        set, else NSER_DATABASE_URL (after ``app.db.resolve_database_url``)."""
        return self.direct_database_url or self.database_url

    @field_validator("read_database_url", mode="before")
    @classmethod
    def _split_read_urls(cls, value: object) -> object:
        return split_urls(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_strong(cls, value: SecretStr | None) -> SecretStr | None:
        token = value.get_secret_value() if value is not None else ""
        if not token:
            return None  # set but empty: off, as unset
        if not 32 <= len(token) <= 512 or not all("!" <= char <= "~" for char in token):
            raise ValueError(
                "NSER_METRICS_TOKEN must be 32 to 512 visible ASCII characters without spaces "
                "(openssl rand -hex 32)"
            )
        return value

    @field_validator("staff_origin")
    @classmethod
    def _staff_origin_is_an_origin(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                "NSER_STAFF_ORIGIN must be an origin, scheme://host[:port] "
                "(e.g. https://registry.example.pk)"
            )
        try:
            ipaddress.ip_address(parts.hostname)
        except ValueError:
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{parts.hostname}{port}"
        raise ValueError(
            "NSER_STAFF_ORIGIN must name a host, not an IP address: browsers refuse passkeys "
            "on an IP address (on this machine use http://localhost:PORT)"
        )

    @model_validator(mode="after")
    def _staff_origin_and_rp_id(self) -> Settings:
        host = urlsplit(self.staff_origin).hostname or ""
        rp_id = self.webauthn_rp_id.strip().lower()
        if rp_id and host != rp_id and not host.endswith("." + rp_id):
            raise ValueError(
                f"NSER_WEBAUTHN_RP_ID {rp_id!r} must be the staff origin's host ({host}) or "
                "a parent domain of it"
            )
        # Plain http only where nothing crosses a network: a console on this machine.
        if self.environment == "production" and not (
            self.staff_origin_secure or host == "localhost"
        ):
            raise ValueError("NSER_STAFF_ORIGIN must be https:// in production")
        return self

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying-party id: NSER_WEBAUTHN_RP_ID, else the staff origin's host."""
        return self.webauthn_rp_id.strip().lower() or (urlsplit(self.staff_origin).hostname or "")

    @property
    def staff_origin_secure(self) -> bool:
        """Whether the console is served over TLS (its cookies are then ``Secure``)."""
        return self.staff_origin.startswith("https://")

    @model_validator(mode="after")
    def _rounding_keeps_the_threshold(self) -> Settings:
        # A count at the threshold must not be published rounded below it (12 -> 10).
        if self.suppress_below % self.disclosure_rounding_base:
            raise ValueError(
                "NSER_SUPPRESS_BELOW must be a multiple of NSER_DISCLOSURE_ROUNDING_BASE"
            )
        return self

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if (
            self.environment == "production"
            and self.key_encryption_secret.get_secret_value() == DEV_SECRET
        ):
            raise ValueError("NSER_KEY_ENCRYPTION_SECRET must be set in production")
        return self

    @property
    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]


def explain(exc: ValueError) -> str:
    """One line saying what is wrong with the configuration, values left out (a URL's
    password, a secret): each refused NSER_* name with pydantic's reason."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = PREFIX + str(error["loc"][0]).upper()
            parts.append(f"{name}: {message}")
        else:
            parts.append(message)
    return "invalid setting" + ("s" if len(parts) > 1 else "") + ": " + "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    return Settings()
