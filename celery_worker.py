"""The Celery entry point: `celery -A celery_worker worker` (and `celery -A celery_worker flower`).

The app factory sets Celery up (`gaia_app.celery_app`); this module only exposes it.
"""

import sys

from gaia_app import create_app
from gaia_app.celery_app import celery_for
from gaia_app.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as error:
    print(f"gaia: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

celery_app = app = celery_for(flask_app)
