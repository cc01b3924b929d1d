"""Smoke-test a running Gaia deployment over HTTP (stdlib only: runs wherever python3 does).

    scripts/test.sh --url https://gaia-gateway-dev.fly.dev [--api-key KEY] health providers models

Exit status 0 only when every named check passes; each failure is printed with the reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

CHECKS = ("health", "providers", "models", "auth", "chat", "assets")


class CheckFailed(Exception):
    pass


class Client:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, auth: bool = True, key: str | None = None):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        credential = key if key is not None else (self.api_key if auth else None)
        if credential:
            headers["X-API-Key"] = credential
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            raise CheckFailed(f"{method} {path}: cannot connect ({error})") from None
        elapsed = (time.perf_counter() - started) * 1000
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise CheckFailed(f"{method} {path}: {status} with a body that is not JSON") from None
        return status, payload, elapsed

    def stream_chat(self, conversation_id: str) -> tuple[str, float]:
        """A streamed answer in the conversation: (its text, ms to the first token)."""
        body = {"message": "And streamed?", "conversation_id": conversation_id, "stream": True}
        request = urllib.request.Request(
            self.base_url + "/api/v0.2/chat", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/event-stream",
                     "X-API-Key": self.api_key or ""},
        )
        started = time.perf_counter()
        first_ms = None
        parts = []
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                for raw_line in response:
                    line = raw_line.decode().strip()
                    if line == "event: error":
                        raise CheckFailed(f"the stream failed: {response.readline().decode().strip()}")
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        return "".join(parts), first_ms or 0.0
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    delta = choices[0].get("delta") or {}
                    if delta.get("content"):
                        first_ms = first_ms or (time.perf_counter() - started) * 1000
                        parts.append(delta["content"])
        except urllib.error.HTTPError as error:
            raise CheckFailed(f"streamed /api/v0.2/chat is {error.code}: {error.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as error:
            raise CheckFailed(f"streamed /api/v0.2/chat: {error}") from None
        raise CheckFailed("the stream ended without data: [DONE]")

    def need_key(self) -> None:
        if not self.api_key:
            raise CheckFailed("needs an API key: --api-key KEY or GAIA_API_KEY")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_health(client: Client) -> str:
    status, body, ms = client.request("GET", "/health", auth=False)
    _expect(isinstance(body, dict), f"/health answered {status} without a JSON object")
    database = body.get("database", {})
    _expect(status == 200, f"/health is {status} ({body.get('status')}): database {database}")
    _expect(database.get("status") == "connected", f"database is {database.get('status')}: {database}")
    notes = [f"{body.get('status')}", f"service {body.get('service')}", f"version {body.get('version')}"]
    migrations = database.get("migrations", {})
    if migrations.get("status") != "current":
        notes.append(f"migrations {migrations.get('status')}")
    if body.get("version_skew"):
        notes.append(f"VERSION SKEW {body['version_skew']}")
    return ", ".join(notes) + f" ({ms:.0f} ms)"


def check_providers(client: Client) -> str:
    client.need_key()
    status, body, ms = client.request("GET", "/api/v0.2/providers")
    _expect(status == 200, f"/api/v0.2/providers is {status}: {body}")
    ids = [p.get("id") for p in body.get("providers", [])]
    _expect(ids, "no provider configured")
    return f"{len(ids)} provider(s): {', '.join(ids)} ({ms:.0f} ms)"


def check_models(client: Client) -> str:
    client.need_key()
    status, body, ms = client.request("GET", "/api/v0.2/models")
    _expect(status == 200, f"/api/v0.2/models is {status}: {body}")
    _expect(body.get("total", 0) > 0, "no model available")
    return f"{body['total']} model(s) ({ms:.0f} ms)"


def check_auth(client: Client) -> str:
    status, body, _ = client.request("GET", "/api/v0.2/models", auth=False)
    _expect(status == 401, f"a request without credentials got {status}, not 401")
    status, body, _ = client.request("GET", "/api/v0.2/models", key="gaia_dev_" + "A" * 49)
    _expect(status == 401, f"a forged key got {status}, not 401")
    client.need_key()
    status, body, _ = client.request("GET", "/api/v0.2/models")
    _expect(status == 200, f"the given key got {status}: {body}")
    return "no key 401, forged key 401, real key 200"


def check_chat(client: Client) -> str:
    client.need_key()
    status, body, ms = client.request("POST", "/api/v0.2/chat", {"message": "Hello from the smoke test"})
    _expect(status == 200, f"/api/v0.2/chat is {status}: {body}")
    _expect(bool(body.get("response")), "the chat answer is empty")
    answered = f"{body.get('provider')}/{body.get('model')} answered ({ms:.0f} ms)"
    text, first_ms = client.stream_chat(body["conversation_id"])
    _expect(bool(text), "the streamed answer is empty")
    status, completion, _ = client.request("POST", "/v1/chat/completions", {
        "model": body.get("model"), "messages": [{"role": "user", "content": "Hello from the smoke test"}],
    })
    _expect(status == 200, f"/v1/chat/completions is {status}: {completion}")
    _expect(bool(completion["choices"][0]["message"]["content"]), "the /v1 answer is empty")
    return f"{answered}, streamed (first token {first_ms:.0f} ms), /v1 answered"


ASSET_REQUESTS = {
    "image": "a red sunset over mountains",
    "texture": "mossy stone wall",
    "audio": "coin pickup",
    "model3d": "a wooden crate",
}


def check_assets(client: Client) -> str:
    """One file of each category, made, downloaded and checked (type, size, hash, header)."""
    client.need_key()
    jobs = {}
    for category, description in ASSET_REQUESTS.items():
        status, body, _ = client.request("POST", "/api/v0.2/assets/generate",
                                         {"category": category, "description": description})
        _expect(status == 202, f"generate {category} is {status}: {body}")
        jobs[category] = body
    deadline = time.monotonic() + 120
    waiting = dict(jobs)
    while waiting and time.monotonic() < deadline:
        for category, job in list(waiting.items()):
            status, body, _ = client.request("GET", f"/api/v0.2/jobs/{job['job_id']}")
            _expect(status == 200, f"/api/v0.2/jobs/{job['job_id']} is {status}: {body}")
            if body.get("status") in ("succeeded", "failed", "cancelled"):
                _expect(body["status"] == "succeeded", f"{category} job {body['status']}: {body.get('error')}")
                del waiting[category]
        time.sleep(0.25 if waiting else 0)
    _expect(not waiting, f"jobs not finished within 120 s: {', '.join(waiting)}")
    made = [_check_asset_file(client, category, job["asset_id"]) for category, job in jobs.items()]
    return ", ".join(made)


def _check_asset_file(client: Client, category: str, asset_id: str) -> str:
    status, asset, _ = client.request("GET", f"/api/v0.2/assets/{asset_id}")
    _expect(status == 200 and asset.get("status") == "ready", f"asset {asset_id} is {status}: {asset}")
    request = urllib.request.Request(f"{client.base_url}/api/v0.2/assets/{asset_id}/file",
                                     headers={"X-API-Key": client.api_key or ""})
    try:
        with urllib.request.urlopen(request, timeout=client.timeout) as response:
            content_type, data = response.headers.get("Content-Type", ""), response.read()
    except (urllib.error.URLError, OSError) as error:
        raise CheckFailed(f"downloading {category} asset {asset_id}: {error}") from None
    _expect(len(data) == asset["size_bytes"], f"{category}: {len(data)} bytes, metadata says {asset['size_bytes']}")
    _expect(hashlib.sha256(data).hexdigest() == asset["sha256"], f"{category}: the file's SHA-256 differs")
    _expect(content_type.startswith(asset["content_type"]), f"{category}: served as {content_type}")
    problem = _file_problem(asset["format"], data)
    _expect(problem is None, f"{category} file: {problem}")
    return f"{category} {asset['format']} {len(data)} B"


def _file_problem(file_format: str, data: bytes) -> str | None:
    """What is wrong with the file's header, or None."""
    if file_format == "png":
        ok = data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        return None if ok else "not a PNG"
    if file_format == "wav":
        return None if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else "not a WAV"
    if file_format == "glb":
        magic, version, length = struct.unpack_from("<4sII", data) if len(data) >= 12 else (b"", 0, 0)
        ok = magic == b"glTF" and version == 2 and length == len(data)
        return None if ok else "not a binary glTF 2.0"
    return f"unknown format {file_format}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/test.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("GAIA_API_KEY"), help="Or GAIA_API_KEY")
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("checks", nargs="+", choices=CHECKS + ("all",))
    args = parser.parse_args(argv)
    names = list(CHECKS) if "all" in args.checks else list(dict.fromkeys(args.checks))

    client = Client(args.url, args.api_key, args.timeout)
    failed = 0
    for name in names:
        try:
            summary = globals()[f"check_{name}"](client)
        except CheckFailed as failure:
            failed += 1
            print(f"FAIL {name}: {failure}")
        else:
            print(f"ok   {name}: {summary}")
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
