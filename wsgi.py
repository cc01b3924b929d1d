"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import sys

from gaia_app import create_app
from gaia_app.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"gaia: configuration error: {error}", file=sys.stderr)
    # 4 is gunicorn's "app failed to load": the arbiter stops instead of respawning workers.
    raise SystemExit(4) from None
