"""One Flask blueprint package per service; `SERVICE_NAME` chooses which are mounted.

Each package exposes `register(app, api)`. A blueprint never imports another blueprint.
"""
