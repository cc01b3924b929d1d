"""Behaviour tests of the asset file stores, the same tests run on a local folder and on a real
S3-compatible server: moto's standalone server, started on 127.0.0.1 for the session and
spoken to over HTTP by boto3 (no mocking of boto3). Also `storage_from_url` and `parse_range`.

S3 tests run with dummy credentials set in the environment by a fixture, every other AWS_*
variable removed, and config/credential files pointed at nothing, so no real ~/.aws is read.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gaia_app.storage import (
    CHUNK_SIZE,
    AssetStorage,
    LocalAssetStorage,
    RangeNotSatisfiable,
    StorageError,
    parse_range,
    storage_from_url,
)
from gaia_app.storage.local import STALE_TEMP_SECONDS, TEMP_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "dummy-secret-never-shown"
PREFIX = "gaia/assets"
PATTERN = bytes(range(256)) * 40  # 10240 bytes; every offset's value is predictable


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    previous_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug_log.setLevel(previous_level)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dummy-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws/credentials")


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    """A plain client to look at the bucket from outside the store (explicit credentials)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="dummy-access-key",
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    return session.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    name = f"gaia-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    return name


@dataclass
class Backend:
    name: str
    storage: AssetStorage
    stored_names: Callable[[], list[str]]  # every file or object the backend holds
    location: Callable[[str], str]  # where it keeps a key


def local_backend(root: Path) -> Backend:
    def stored_names() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    storage = storage_from_url(root.as_uri(), instance_path="/unused")
    return Backend("local", storage, stored_names, lambda key: f"{key[:2]}/{key[2:4]}/{key}")


def s3_backend(bucket: str, endpoint: str, admin: Any) -> Backend:
    def stored_names() -> list[str]:
        listing = admin.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    storage = storage_from_url(
        f"s3://{bucket}/{PREFIX}/", instance_path="/unused", endpoint_url=endpoint
    )
    return Backend("s3", storage, stored_names, lambda key: f"{PREFIX}/{key[:2]}/{key}")


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "assets")
    request.getfixturevalue("aws_env")
    return s3_backend(
        request.getfixturevalue("bucket"),
        request.getfixturevalue("s3_endpoint"),
        request.getfixturevalue("s3_admin"),
    )


@pytest.fixture
def s3(aws_env: None, bucket: str, s3_endpoint: str, s3_admin: Any) -> Backend:
    return s3_backend(bucket, s3_endpoint, s3_admin)


def read_all(storage: AssetStorage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.open_range(key, start, end))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- both backends


def test_put_then_read_back(backend: Backend) -> None:
    data = os.urandom(70_000)
    stored = backend.storage.put(data, "image/png")
    digest = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.sha256, stored.size) == (digest, digest, len(data))
    assert stored.content_type == "image/png"
    assert read_all(backend.storage, stored.key) == data
    assert backend.storage.size(stored.key) == len(data)
    assert backend.storage.exists(stored.key)
    assert backend.stored_names() == [backend.location(stored.key)]


def test_same_content_is_stored_once(backend: Backend) -> None:
    first = backend.storage.put(b"same bytes", "audio/wav")
    writes = count_writes(backend, first.key)
    second = backend.storage.put(b"same bytes", "audio/wav")
    assert second == first
    assert writes() == 0
    other = backend.storage.put(b"other bytes", "audio/wav")
    expected = sorted(backend.location(key) for key in (first.key, other.key))
    assert backend.stored_names() == expected


def count_writes(backend: Backend, key: str) -> Callable[[], int]:
    """How many times the file or object is written from now on."""
    if backend.name == "local":
        path = backend.storage.path_for(key)  # type: ignore[attr-defined]
        before = (path.stat().st_ino, path.stat().st_mtime_ns)
        return lambda: int((path.stat().st_ino, path.stat().st_mtime_ns) != before)
    uploads: list[object] = []
    events = backend.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3.PutObject", lambda **_: uploads.append(1))
    return lambda: len(uploads)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", PATTERN[:10]),
        ("bytes=300-555", PATTERN[300:556]),
        ("bytes=-10", PATTERN[-10:]),
        ("bytes=10000-", PATTERN[10000:]),
        ("bytes=10230-99999", PATTERN[10230:]),
    ],
    ids=["first-bytes", "middle", "suffix", "to-the-end", "past-the-end"],
)
def test_byte_ranges(backend: Backend, header: str, expected: bytes) -> None:
    key = backend.storage.put(PATTERN, "image/png").key
    byte_range = parse_range(header, len(PATTERN))
    assert byte_range is not None
    assert read_all(backend.storage, key, *byte_range) == expected


def test_unsatisfiable_range(backend: Backend) -> None:
    key = backend.storage.put(PATTERN, "image/png").key
    with pytest.raises(RangeNotSatisfiable) as raised:
        backend.storage.open_range(key, len(PATTERN))
    assert raised.value.size == len(PATTERN)
    with pytest.raises(RangeNotSatisfiable):
        parse_range(f"bytes={len(PATTERN)}-", len(PATTERN))


def test_empty_file(backend: Backend) -> None:
    key = backend.storage.put(b"", "image/png").key
    assert backend.storage.size(key) == 0
    assert read_all(backend.storage, key) == b""
    with pytest.raises(RangeNotSatisfiable):
        backend.storage.open_range(key, 0, 0)


def test_large_file_is_streamed_in_chunks(backend: Backend) -> None:
    data = os.urandom(5 * 1024 * 1024)
    key = backend.storage.put(data, "model/gltf-binary").key
    digest = hashlib.sha256()
    sizes = []
    for chunk in backend.storage.open_range(key):
        digest.update(chunk)
        sizes.append(len(chunk))
    assert max(sizes) <= CHUNK_SIZE
    assert sum(sizes) == len(data) and len(sizes) >= len(data) // CHUNK_SIZE
    assert digest.hexdigest() == key


def test_stream_closed_early_stops(backend: Backend) -> None:
    key = backend.storage.put(PATTERN * 20, "image/png").key
    stream = backend.storage.open_range(key)
    assert next(stream) == (PATTERN * 20)[:CHUNK_SIZE]
    stream.close()  # type: ignore[attr-defined]
    assert list(stream) == []


def test_delete(backend: Backend) -> None:
    key = backend.storage.put(b"to be deleted", "image/png").key
    backend.storage.delete(key)
    assert not backend.storage.exists(key)
    assert backend.storage.size(key) is None
    assert backend.stored_names() == []
    backend.storage.delete(key)  # absent is fine


@pytest.mark.parametrize("key", ["0" * 64, "../../etc/passwd", "ABC", ""])
def test_absent_key(backend: Backend, key: str) -> None:
    assert backend.storage.size(key) is None
    assert backend.storage.exists(key) is False
    with pytest.raises(StorageError) as raised:
        backend.storage.open_range(key)
    assert raised.value.kind == "not_found"
    backend.storage.delete(key)


def test_shared_between_threads(backend: Backend) -> None:
    payloads = [os.urandom(30_000) for _ in range(6)] + [b"everyone writes this"] * 6

    def round_trip(data: bytes) -> bool:
        return read_all(backend.storage, backend.storage.put(data, "image/png").key) == data

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert all(pool.map(round_trip, payloads))
    assert len(backend.stored_names()) == 7


def test_check_passes(backend: Backend) -> None:
    backend.storage.check()
    assert backend.storage.describe()


# ---------------------------------------------------------------- local folder


def test_local_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalAssetStorage(tmp_path)
    data = b"half written"
    final = storage.path_for(hashlib.sha256(data).hexdigest())

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError) as raised:
        storage.put(data, "image/png")
    assert raised.value.kind == "unavailable"
    assert not final.exists()
    assert os.listdir(final.parent) == []
    monkeypatch.undo()
    storage.put(data, "image/png")
    assert os.listdir(final.parent) == [final.name]


CRASH_MID_WRITE = """
import os, signal, sys
from gaia_app.storage.local import LocalAssetStorage
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die after writing, before rename
LocalAssetStorage(sys.argv[1]).put(sys.stdin.buffer.read(), "image/png")
"""


def test_local_crash_mid_write(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    storage = LocalAssetStorage(tmp_path)
    final = storage.path_for(hashlib.sha256(data).hexdigest())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_MID_WRITE, str(tmp_path)], input=data, env=env, timeout=30
    )
    assert crashed.returncode == -signal.SIGKILL
    assert not final.exists()
    (leftover,) = final.parent.iterdir()
    assert leftover.name.startswith(TEMP_PREFIX)

    # A young temporary file may belong to a live writer: left alone.
    storage.put(data, "image/png")
    assert sorted(os.listdir(final.parent)) == sorted([final.name, leftover.name])

    # Once old, the next write into that folder removes it.
    stale = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(leftover, (stale, stale))
    storage.delete(final.name)
    storage.put(data, "image/png")
    assert os.listdir(final.parent) == [final.name]
    assert final.read_bytes() == data


def test_local_check_fails_when_root_is_unusable(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(StorageError) as raised:
        LocalAssetStorage(not_a_folder).check()
    assert raised.value.kind == "unavailable"


def test_local_backend_does_not_load_boto3(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from gaia_app.storage import storage_from_url\n"
        "storage = storage_from_url(sys.argv[1], instance_path=sys.argv[1])\n"
        "storage.put(b'x', 'image/png')\n"
        "loaded = [m for m in ('boto3', 'botocore', 'gaia_app.storage.s3') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, check=True, timeout=30)


# ---------------------------------------------------------------- S3


def test_s3_upload_carries_checksums_and_content_type(
    s3: Backend, s3_admin: Any, bucket: str
) -> None:
    sent: list[Any] = []
    events = s3.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3.PutObject", lambda request, **_: sent.append(request.headers))
    data = os.urandom(1000)
    key = s3.storage.put(data, "audio/wav").key
    (headers,) = sent
    assert headers["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(data).digest())
    assert headers["Content-MD5"] == base64.b64encode(hashlib.md5(data).digest())
    assert s3_admin.head_object(Bucket=bucket, Key=s3.location(key))["ContentType"] == "audio/wav"


def test_s3_upload_damaged_on_the_way_is_refused(s3: Backend) -> None:
    def flip_first_byte(request: Any, **_: Any) -> None:
        body = request.body.read()
        request.body = bytes([body[0] ^ 0xFF]) + body[1:]

    events = s3.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-send.s3.PutObject", flip_first_byte)
    with pytest.raises(StorageError) as raised:
        s3.storage.put(b"precious bytes", "image/png")
    assert raised.value.kind == "corrupt"
    assert s3.stored_names() == []


def test_s3_damaged_object_is_replaced_by_next_put(
    s3: Backend, s3_admin: Any, bucket: str
) -> None:
    data = b"the real content"
    key = hashlib.sha256(data).hexdigest()
    s3_admin.put_object(Bucket=bucket, Key=s3.location(key), Body=b"the fake content")
    s3.storage.put(data, "image/png")
    assert read_all(s3.storage, key) == data


def test_s3_check_fails_for_missing_bucket(aws_env: None, s3_endpoint: str) -> None:
    url = "s3://no-such-bucket-here"
    storage = storage_from_url(url, instance_path="/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError) as raised:
        storage.check()
    assert raised.value.kind == "unavailable"
    assert "no-such-bucket-here" in str(raised.value)


def test_s3_unreachable_endpoint(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    storage = storage_from_url("s3://some-bucket", instance_path="/x", endpoint_url=endpoint)
    for attempt in (storage.check, lambda: storage.put(b"x", "image/png")):
        with pytest.raises(StorageError) as raised:
            attempt()
        assert raised.value.kind == "unavailable"


def test_s3_describe(aws_env: None) -> None:
    url = "s3://my-bucket/p"
    storage = storage_from_url(url, instance_path="/x", endpoint_url="http://127.0.0.1:9")
    assert storage.describe() == "S3 bucket my-bucket prefix p/ at http://127.0.0.1:9"
    on_aws = storage_from_url("s3://my-bucket", instance_path="/x")
    assert on_aws.describe() == "S3 bucket my-bucket at AWS"


@pytest.mark.parametrize(
    "endpoint", ["ftp://127.0.0.1:9", "127.0.0.1:9000", f"http://user:{SECRET_KEY}@127.0.0.1:9"]
)
def test_s3_bad_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="S3_ENDPOINT_URL") as raised:
        storage_from_url("s3://my-bucket", instance_path="/x", endpoint_url=endpoint)
    assert SECRET_KEY not in str(raised.value)


# ---------------------------------------------------------------- storage_from_url


@pytest.mark.parametrize(
    ("url", "root"),
    [
        (None, "/srv/instance/assets"),
        ("", "/srv/instance/assets"),
        ("file:///data/gaia%20assets", "/data/gaia assets"),
        ("file://localhost/data/assets", "/data/assets"),
        ("/data/assets", "/data/assets"),
        ("files/assets", "/srv/instance/files/assets"),
    ],
)
def test_storage_from_url_local(url: str | None, root: str) -> None:
    storage = storage_from_url(url, instance_path="/srv/instance")
    assert isinstance(storage, LocalAssetStorage)
    assert storage.root == Path(root)


@pytest.mark.parametrize(
    ("url", "prefix", "object_key"),
    [
        ("s3://assets-bucket", "", "ab/ab{hash}"),
        ("s3://assets-bucket/", "", "ab/ab{hash}"),
        ("s3://assets-bucket/deep/prefix/", "deep/prefix", "deep/prefix/ab/ab{hash}"),
        ("s3://assets-bucket//deep//prefix", "deep/prefix", "deep/prefix/ab/ab{hash}"),
    ],
)
def test_storage_from_url_s3(aws_env: None, url: str, prefix: str, object_key: str) -> None:
    storage = storage_from_url(url, instance_path="/x", endpoint_url="http://127.0.0.1:9000")
    key = "ab" + "0" * 62
    from gaia_app.storage.s3 import S3AssetStorage

    assert isinstance(storage, S3AssetStorage)
    assert (storage.bucket, storage.prefix) == ("assets-bucket", prefix)
    assert storage.object_key(key) == object_key.format(hash="0" * 62)
    assert storage.endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/assets", "gs://bucket", "file://otherhost/assets", "file:relative",
        "s3://", "s3://Upper_Case", "s3://key:secret@bucket", "s3://bucket?region=x",
    ],
)
def test_storage_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="ASSET_STORAGE_URL") as raised:
        storage_from_url(url, instance_path="/x")
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)


# ---------------------------------------------------------------- parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # satisfiable: inclusive offsets, clipped to the file
        ("bytes=0-0", 100, (0, 0)), ("bytes=0-99", 100, (0, 99)), ("bytes=10-20", 100, (10, 20)),
        ("bytes=90-500", 100, (90, 99)), ("bytes=50-", 100, (50, 99)),
        ("bytes=-1", 100, (99, 99)), ("bytes=-500", 100, (0, 99)),
        ("BYTES = 5-6", 100, (5, 6)), ("bytes= 5-6 ,", 100, (5, 6)),
        # ignored, the whole file is sent: none, several ranges, other unit, invalid
        (None, 100, None), ("", 100, None), ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None), ("bytes 0-1", 100, None), ("bytes=5-4", 100, None),
        ("bytes=-", 100, None), ("bytes=a-b", 100, None), ("bytes=1-2-3", 100, None),
        ("bytes=\u0661-2", 100, None), ("bytes=-5", 0, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0)],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, size)
    assert raised.value.size == size
