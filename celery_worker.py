"""The Celery entry point: `celery -A celery_worker worker`."""

import sys

from gaia_app import create_app
from gaia_app.celery_app import celery_init_app
from gaia_app.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as error:
    print(f"gaia: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

celery_app = flask_app.extensions.get("celery") or celery_init_app(flask_app)
app = celery_app
