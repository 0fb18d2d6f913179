# syntax=docker/dockerfile:1
# NSER service image: `nser serve` (uvicorn workers, uvloop, httptools) against NSER_DATABASE_URL.
#   docker build -t nser .
#   docker run --rm -e NSER_OWNER_DATABASE_URL=postgresql://owner... \
#              -e NSER_DATABASE_URL=postgresql://service... -e NSER_KEY_ENCRYPTION_SECRET=... \
#              nser nser db upgrade   # once per release, as the schema owner
#   docker run -p 8000:8000 -e NSER_DATABASE_URL=postgresql://... -e NSER_KEY_ENCRYPTION_SECRET=... \
#              -e NSER_RATE_LIMIT_STORAGE=redis://redis:6379/0 nser
# Both settings are required: `nser serve` refuses the development encryption secret, and its
# two workers refuse in-memory rate limits (each worker would count budgets of its own).

# --- build: build the wheel, install it and its dependencies into a self-contained venv ----
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY app ./app
COPY migrations ./migrations
# The wheel carries the migrations (as app/migrations), app/data and the website (templates,
# static files, and the Urdu catalogues setup.py compiles): the venv needs nothing else.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir /wheels/nser-*.whl

# --- runtime: the venv and a non-root user; no compilers, no sources -------------------------
FROM python:3.11.7-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NSER_ENVIRONMENT=production \
    NSER_DATA_DIR=/var/lib/nser
RUN groupadd --system --gid 10001 nser \
    && useradd --system --uid 10001 --gid nser --home-dir /app --shell /usr/sbin/nologin nser \
    && mkdir -p /var/lib/nser \
    && chown nser:nser /var/lib/nser
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
# /healthz answers while the process is up; python is used because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# uvicorn drains in-flight requests on SIGTERM (timeout_graceful_shutdown) before exiting.
STOPSIGNAL SIGTERM
# Two workers: NSER_RATE_LIMIT_STORAGE must name a Redis, or the service refuses to start.
CMD ["nser", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
