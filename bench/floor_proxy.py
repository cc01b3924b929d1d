"""The floor of a Flask LLM gateway: check a key, forward the body, return the answer.

A minimal Flask app, for benchmarks: `POST /v1/chat/completions` checks the caller's key
(`X-API-Key`, or `Authorization: Bearer <key>`) in a dict and forwards the request body as it
came to the upstream OpenAI-compatible server with one pooled `requests.Session` (module
level). Non-streamed, it returns the upstream body and status. When the body asks for
`"stream": true`, it passes the upstream bytes through as they arrive (`stream=True`,
`iter_content(chunk_size=None)`, `Response(generator, mimetype="text/event-stream")`).
`GET /health/live` answers 200 (for readiness checks).

No database, no conversation, no usage record, no validation beyond reading `stream`: what
any gateway has to do at least. Serve it exactly like Gaia, from the repository root:

    FLOOR_UPSTREAM=http://127.0.0.1:8099/v1 FLOOR_API_KEYS=floor-key \\
        python -m gunicorn -c gunicorn.conf.py bench.floor_proxy:app

Settings (environment):
    FLOOR_UPSTREAM       the upstream base URL, e.g. http://127.0.0.1:8099/v1 (required)
    FLOOR_API_KEYS       comma-separated keys callers may use (required)
    FLOOR_UPSTREAM_KEY   sent upstream as `Authorization: Bearer` (default sk-bench)

The session's connection pool holds up to 256 connections (like Gaia's provider sessions),
so that no connection is thrown away under concurrency, and it reads no proxy or .netrc
settings from the environment on each call (`trust_env = False`, as Gaia's does).
"""

from __future__ import annotations

import json
import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "").rstrip("/")
if not UPSTREAM:
    raise RuntimeError("set FLOOR_UPSTREAM, e.g. http://127.0.0.1:8099/v1")
KEYS = {key.strip(): {"name": f"key-{index}"}
        for index, key in enumerate(os.environ.get("FLOOR_API_KEYS", "").split(",")) if key.strip()}
if not KEYS:
    raise RuntimeError("set FLOOR_API_KEYS to one or more comma-separated keys")
UPSTREAM_HEADERS = {
    "Authorization": f"Bearer {os.environ.get('FLOOR_UPSTREAM_KEY', 'sk-bench')}",
    "Content-Type": "application/json",
}
TIMEOUT = (3.0, 60.0)

session = requests.Session()
session.trust_env = False
_adapter = HTTPAdapter(pool_connections=2, pool_maxsize=256, max_retries=0)
session.mount("http://", _adapter)
session.mount("https://", _adapter)

app = Flask(__name__)


def _error(status: int, message: str) -> Response:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": None}})
    return Response(body, status=status, mimetype="application/json")


@app.get("/health/live")
def live():
    return {"status": "ok"}


@app.post("/v1/chat/completions")
def chat_completions():
    key = request.headers.get("X-API-Key")
    if key is None:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            key = authorization[7:].strip()
    if key not in KEYS:
        return _error(401, "Incorrect API key provided.")
    body = request.get_data()
    try:
        stream = json.loads(body).get("stream") is True
    except (ValueError, AttributeError):
        return _error(400, "We could not parse the JSON body of your request.")
    try:
        upstream = session.post(UPSTREAM + "/chat/completions", data=body,
                                headers=UPSTREAM_HEADERS, stream=stream, timeout=TIMEOUT)
    except requests.RequestException as exc:
        return _error(502, f"upstream unreachable: {type(exc).__name__}")
    content_type = upstream.headers.get("Content-Type", "application/json")
    if not stream or upstream.status_code != 200:
        return Response(upstream.content, status=upstream.status_code, content_type=content_type)

    def relay():
        try:
            for block in upstream.iter_content(chunk_size=None):
                yield block
        finally:
            upstream.close()

    return Response(relay(), status=200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache"})
