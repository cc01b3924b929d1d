"""Celery tasks (asset generation, maintenance). They take ids, never ORM objects."""
