# The one image every Gaia app runs (gateway, auth, chat, asset and the Celery worker); the Fly
# configs in fly/ choose the role with SERVICE_NAME and, for the worker, a [processes] command.
# Build from the repository root: `docker build -t gaia .`
FROM python:3.11.11-slim-bookworm

# Reported in /health as `version`; pass the same value to every app of a deploy
# (`--build-arg GAIA_BUILD_ID=...`) so the gateway's version-skew check compares builds.
# Left empty, the package version is used (.git is not copied into the image).
ARG GAIA_BUILD_ID=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    GAIA_BUILD_ID=${GAIA_BUILD_ID}

RUN groupadd --system --gid 10001 gaia \
    && useradd --system --uid 10001 --gid gaia --home-dir /app --shell /usr/sbin/nologin gaia

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root (read-only to the app); only the instance folder
# (local files, and SQLite when no DATABASE_URL is set) is writable.
COPY . .
RUN mkdir -p /app/instance && chown gaia:gaia /app/instance

USER gaia

EXPOSE 8080

# For `docker run` and compose; Fly ignores it and uses the checks in fly/*.toml. The slim
# image has no curl, so Python's standard library asks /health/live (which touches nothing).
# The Celery worker serves no HTTP: run it with `--no-healthcheck`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" \
        "http://127.0.0.1:${PORT:-8080}/health/live" || exit 1

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
