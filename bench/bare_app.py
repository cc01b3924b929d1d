"""The baseline: a bare Flask app serving the same models list as Gaia, with no auth.

Run it under Gaia's own gunicorn settings, from the repository root:

    gunicorn -c gunicorn.conf.py bench.bare_app:app

It uses nothing of Gaia (no extensions, no schemas, no database), so the difference between
it and Gaia's `GET /api/v0.2/models` is what Gaia's request path costs on top of Flask
and gunicorn.
"""

from flask import Flask, jsonify

# Byte for byte the body Gaia returns for GET /api/v0.2/models with the local provider.
MODELS = {
    "models": [
        {
            "id": "gaia-local",
            "name": "Gaia Local",
            "provider": "local",
            "capabilities": ["chat", "streaming"],
            "context_window": 8192,
            "max_tokens": 1024,
            "pricing": {
                "currency": "USD",
                "input_per_million_tokens": 0.0,
                "output_per_million_tokens": 0.0,
            },
        },
        {
            "id": "gaia-local-mini",
            "name": "Gaia Local Mini",
            "provider": "local",
            "capabilities": ["chat", "streaming"],
            "context_window": 4096,
            "max_tokens": 256,
            "pricing": {
                "currency": "USD",
                "input_per_million_tokens": 0.0,
                "output_per_million_tokens": 0.0,
            },
        },
    ],
    "total": 2,
}

app = Flask(__name__)
app.json.sort_keys = False
app.json.compact = True


@app.get("/api/v0.2/models")
def models():
    return jsonify(MODELS)


@app.get("/health/live")
def live():
    return {"status": "alive"}
