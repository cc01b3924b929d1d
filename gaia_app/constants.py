"""Names every part of Gaia may use: the version, where the project lives, the API prefix.
No dependencies."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.2.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
API_PREFIX = "/api/v0.2"
