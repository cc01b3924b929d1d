"""gunicorn settings for every Gaia service: `gunicorn -c gunicorn.conf.py wsgi:app`.

Each value can be set from the environment, so Fly configs and local runs share this file.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 5
# The runtime control socket is not used; without it many servers can share one home folder.
control_socket_disable = True
accesslog = "-" if os.environ.get("GAIA_ACCESS_LOG", "") not in ("", "0") else None
