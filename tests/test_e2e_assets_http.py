"""The asset service as a client and an operator use it: gunicorn serving the API, a separate
`celery -A celery_worker worker`, PostgreSQL, Redis, and files in S3 (moto's S3 server on
127.0.0.1). Every category is asked for over HTTP, followed to its end, downloaded and
checked, and the bytes are found in the bucket under their hash.

Skipped without PostgreSQL or Redis (a failure in CI).
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import subprocess
import time
import uuid

import pytest
import requests

from tests.test_e2e_asset_worker import RedisServer
from tests.test_e2e_gunicorn import NO_PROXY, ROOT, VENV_BIN, base_env, flask, start_server

KEY_RE = re.compile(r"^API key: (gaia_local_\w+)$", re.MULTILINE)
AWS = {"AWS_ACCESS_KEY_ID": "test-access", "AWS_SECRET_ACCESS_KEY": "test-secret",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
REQUESTS = {
    "image": {"description": "a blue planet at night", "options": {"width": 256, "height": 256}},
    "texture": {"description": "red brick wall", "options": {"size": 256}},
    "audio": {"description": "laser zap", "options": {"duration": 0.5}},
    "model3d": {"description": "a green tree", "options": {"detail": 16}},
}


@pytest.fixture(scope="module")
def s3_bucket():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    client.create_bucket(Bucket="gaia-assets")
    yield endpoint, client
    server.stop()


@pytest.fixture(scope="module")
def stack(postgres, redis_url, s3_bucket, tmp_path_factory):
    """gunicorn and a Celery worker on one database, a Redis of their own and one bucket."""
    endpoint, _ = s3_bucket
    directory = tmp_path_factory.mktemp("assets-http")
    database_url = postgres.create()
    broker = RedisServer(directory)
    broker.start()
    settings = {"REDIS_URL": broker.url, "ASSET_STORAGE_URL": "s3://gaia-assets/e2e",
                "S3_ENDPOINT_URL": endpoint, "ASSET_JOB_SWEEP_INTERVAL": "1", **AWS}
    env = base_env(database_url, directory / "instance", **settings)
    flask(env, "db", "upgrade")
    key = KEY_RE.search(flask(env, "create-admin", "--email", "admin@gaia.dev").stdout).group(1)
    server = start_server(database_url, directory / "instance", directory, workers=2,
                          RATE_LIMIT_DEFAULT="100000/minute", **settings)
    with open(directory / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [str(VENV_BIN / "celery"), "-A", "celery_worker", "worker", "--concurrency", "2",
             "--loglevel", "INFO", "--hostname", f"http-{uuid.uuid4().hex[:6]}@%h"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield server, key, directory / "worker.log"
    finally:
        worker.kill()
        worker.wait(timeout=10)
        server.stop()
        broker.kill()


def call(server, method: str, path: str, key: str, **kwargs) -> requests.Response:
    return requests.request(method, server.url + path, headers={"X-API-Key": key, **kwargs.pop("headers", {})},
                            proxies=NO_PROXY, timeout=30, **kwargs)


def header_problem(file_format: str, data: bytes) -> str | None:
    if file_format == "png":
        return None if data[:8] == b"\x89PNG\r\n\x1a\n" else "not a PNG"
    if file_format == "wav":
        return None if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else "not a WAV"
    magic, version, length = struct.unpack_from("<4sII", data)
    return None if (magic, version, length) == (b"glTF", 2, len(data)) else "not a GLB"


def test_every_category_over_http_with_a_worker_and_s3(stack, s3_bucket):
    server, key, worker_log = stack
    _, s3 = s3_bucket
    accepted = {}
    for category, body in REQUESTS.items():
        answer = call(server, "POST", "/api/v0.2/assets/generate", key, json={"category": category, **body})
        assert answer.status_code == 202, answer.text
        accepted[category] = answer.json()

    deadline = time.monotonic() + 60
    finished = {}
    while len(finished) < len(accepted) and time.monotonic() < deadline:
        for category, job in accepted.items():
            state = call(server, "GET", f"/api/v0.2/jobs/{job['job_id']}", key).json()
            if state["status"] in ("succeeded", "failed", "cancelled"):
                finished[category] = state
        time.sleep(0.2)
    assert {c: s["status"] for c, s in finished.items()} == dict.fromkeys(REQUESTS, "succeeded"), \
        worker_log.read_text(errors="replace")[-3000:]

    stored = {item["Key"] for item in s3.list_objects_v2(Bucket="gaia-assets").get("Contents", [])}
    for category, job in accepted.items():
        asset = call(server, "GET", f"/api/v0.2/assets/{job['asset_id']}", key).json()
        download = call(server, "GET", f"/api/v0.2/assets/{job['asset_id']}/file", key)
        assert download.status_code == 200 and download.headers["Content-Type"] == asset["content_type"]
        assert hashlib.sha256(download.content).hexdigest() == asset["sha256"]
        assert header_problem(asset["format"], download.content) is None, category
        assert f"e2e/{asset['sha256'][:2]}/{asset['sha256']}" in stored
        part = call(server, "GET", f"/api/v0.2/assets/{job['asset_id']}/file", key, headers={"Range": "bytes=4-11"})
        assert part.status_code == 206 and part.content == download.content[4:12]


def test_a_worker_job_is_someone_elses_404_and_deleting_removes_the_s3_object(stack, s3_bucket):
    server, key, _ = stack
    _, s3 = s3_bucket
    body = {"category": "texture", "description": "unique sand dunes for deletion", "seed": 424242,
            "options": {"size": 64}}
    job = call(server, "POST", "/api/v0.2/assets/generate", key, json=body).json()
    deadline = time.monotonic() + 30
    while call(server, "GET", f"/api/v0.2/jobs/{job['job_id']}", key).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)
    asset = call(server, "GET", f"/api/v0.2/assets/{job['asset_id']}", key).json()
    object_key = f"e2e/{asset['sha256'][:2]}/{asset['sha256']}"
    s3.head_object(Bucket="gaia-assets", Key=object_key)

    register = requests.post(server.url + "/api/v0.2/auth/register", proxies=NO_PROXY, timeout=30,
                             json={"email": "stranger@example.com", "password": "a long passphrase"}).json()
    stranger = {"Authorization": f"Bearer {register['access_token']}"}
    for path in (f"/api/v0.2/assets/{job['asset_id']}", f"/api/v0.2/assets/{job['asset_id']}/file",
                 f"/api/v0.2/jobs/{job['job_id']}"):
        refused = requests.get(server.url + path, headers=stranger, proxies=NO_PROXY, timeout=30)
        assert refused.status_code == 404 and refused.headers["Content-Type"] == "application/problem+json"

    assert call(server, "DELETE", f"/api/v0.2/assets/{job['asset_id']}", key).status_code == 204
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="gaia-assets").get("Contents", [])}
    assert object_key not in keys


def test_the_embedded_default_finishes_jobs_after_gunicorn_is_killed(tmp_path):
    """SQLite, no Redis: jobs run in the web process. gunicorn killed (SIGKILL) with one job
    running and others queued behind it; the next gunicorn on the same instance finishes all."""
    instance = tmp_path / "instance"
    database_url = f"sqlite:///{tmp_path / 'gaia.db'}"
    settings = {"ASSET_BUILTIN_LATENCY_MS": "1500", "ASSET_INLINE_WORKERS": "1",
                "ASSET_JOB_LEASE_SECONDS": "1", "ASSET_JOB_SWEEP_INTERVAL": "0.5",
                "RATE_LIMIT_DEFAULT": "100000/minute"}
    env = base_env(database_url, instance, **settings)
    flask(env, "db", "upgrade")
    key = KEY_RE.search(flask(env, "create-admin", "--email", "admin@gaia.dev").stdout).group(1)
    first = start_server(database_url, instance, tmp_path, workers=None, **settings)
    try:
        jobs = [call(first, "POST", "/api/v0.2/assets/generate", key,
                     json={"category": "audio", "description": f"beep {n}", "options": {"duration": 0.2}}).json()
                for n in range(3)]
        deadline = time.monotonic() + 20
        while call(first, "GET", f"/api/v0.2/jobs/{jobs[0]['job_id']}", key).json()["progress"] == 0:
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.05)
    finally:
        first.process.kill()  # SIGKILL to the master: its worker goes with it below
        subprocess.run(["pkill", "-KILL", "-g", str(first.process.pid)], check=False)
        first.process.wait(timeout=10)
    second = start_server(database_url, instance, tmp_path, workers=None, **settings)
    try:
        deadline = time.monotonic() + 40
        states = []
        while time.monotonic() < deadline:
            states = [call(second, "GET", f"/api/v0.2/jobs/{job['job_id']}", key).json() for job in jobs]
            if all(state["status"] == "succeeded" for state in states):
                break
            time.sleep(0.2)
        assert [state["status"] for state in states] == ["succeeded"] * 3, states
        assert states[0]["attempts"] == 2  # taken over after its lease ran out
    finally:
        second.stop()
