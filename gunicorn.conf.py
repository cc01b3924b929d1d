"""gunicorn settings for every Gaia service: `gunicorn -c gunicorn.conf.py wsgi:app`.

Each value can be set from the environment, so Fly configs and local runs share this file.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Without REDIS_URL, rate limits, credential caches and Retry-After pauses live in each process:
# one gevent worker (which holds hundreds of streams) keeps them exact. With Redis they are
# shared, and a second worker uses the second core.
workers = int(os.environ.get("WEB_CONCURRENCY") or ("2" if os.environ.get("REDIS_URL", "").strip() else "1"))
# gevent: a worker holds many open chat streams (each waits on its provider, not on a CPU),
# and keeps client connections alive. `sync` and `gthread` remain available.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 5
# The runtime control socket is not used; without it many servers can share one home folder.
control_socket_disable = True
# Gaia writes its own access line per request (logger `gaia.request`, with the request id and
# the user); gunicorn's own is for debugging the server itself.
accesslog = "-" if os.environ.get("GAIA_ACCESS_LOG", "") not in ("", "0") else None


def _json_logs() -> bool:
    """The rule of `gaia_app.logs.log_format`, read here without importing the app (the
    master must not load the app's libraries before gevent patches the workers)."""
    chosen = os.environ.get("LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "json"
    return os.environ.get("ENVIRONMENT", "local").strip().lower() not in ("", "local")


if _json_logs():
    # gunicorn's own lines (start, workers booting and exiting) as JSON too.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": True,
                "static_fields": {"service": os.environ.get("SERVICE_NAME", "all").strip().lower() or "all"},
            },
        },
        "handlers": {
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "none": {"class": "logging.NullHandler"},
        },
        # The root logger stays the app's: `create_app` gives it Gaia's handler.
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {
                "level": "INFO", "handlers": ["console" if accesslog else "none"], "propagate": False,
            },
        },
    }


def on_starting(server):
    """Check the settings once, so a bad one stops gunicorn with one clear line before any
    worker starts (instead of every worker failing on its own).

    The check runs in a forked child: the master itself then never imports the app's
    libraries, which gevent workers must patch before anything creates locks or sockets.
    """
    import sys

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            from gaia_app import PROJECT_ROOT, instance_path_from
            from gaia_app.config import ConfigError, load_settings

            load_settings(os.environ, instance_path_from(os.environ), PROJECT_ROOT)
        except ConfigError as error:
            print(f"gaia: configuration error: {error}", file=sys.stderr, flush=True)
            code = 4
        except BaseException as error:  # noqa: BLE001 - reported, and the workers will say more
            print(f"gaia: could not check the configuration: {error!r}", file=sys.stderr, flush=True)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 4:
        sys.exit(4)


# glibc's M_MMAP_THRESHOLD (mallopt), and the size from which allocations are mapped.
_M_MMAP_THRESHOLD = -3
_MMAP_FROM_BYTES = 256 * 1024


def post_fork(server, worker):
    """Large allocations go straight back to the system when freed.

    By default glibc raises its mmap threshold to the size of the first large block freed, so
    after one sign-in every later Argon2 hash (a 19 MiB work area) is carved from the heap and
    that memory stays with the worker for good. A fixed threshold keeps the worker at its idle
    size (bench/README.md, "Memory per worker"); elsewhere than glibc this does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES)
    except OSError:
        pass


def post_worker_init(worker):
    """On the embedded default (no Redis), asset jobs run in this process: start their runner
    now, so jobs left queued or running by a previous process are taken up without waiting
    for a new request. With Redis, Celery workers run them and this does nothing.

    Everything the app made at start-up (modules, settings, schemas) lives as long as the
    worker: frozen out of the garbage collector's reach, a full collection, which took 88 ms
    in a web worker, takes a fraction of a millisecond (tail latency, bench/README.md)."""
    import gc

    gc.freeze()
    state = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("gaia")
    if state is not None and "asset" in state.settings.services:
        state.assets.start_background()
