"""Asset files in an S3-compatible bucket: objects `<prefix>/<hash[0:2]>/<hash>`.

boto3 is imported when an `S3AssetStorage` is made, never at import time of the rest of the
app, so processes that store files locally do not pay for loading it. Credentials come from
boto3's usual chain (AWS_ACCESS_KEY_ID and friends, a profile, an instance role); a non-AWS
server is reached through `endpoint_url`.

Uploads carry Content-MD5 and x-amz-checksum-sha256, so a server that checks them refuses
bytes damaged on the way. Not every S3-compatible server checks them, so the ETag the server
answers is also compared with the MD5 of the bytes sent whenever it is a plain MD5 (no
server-side encryption header): a mismatch removes the object and fails the upload.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from gaia_app.storage.base import (
    ChunkStream,
    RangeNotSatisfiable,
    StorageError,
    StoredFile,
    check_range_arguments,
    is_valid_key,
)

CONNECT_TIMEOUT_SECONDS = 5.0
# Between two packets, not for the whole transfer: a 50 MB download may take longer.
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3  # the first try included
# Downloads stream, holding a connection each until the client has read the file.
MAX_POOL_CONNECTIONS = 32

_CORRUPT_CODES = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"}
)
_PLAIN_MD5_ETAG = re.compile(r'"?([0-9a-f]{32})"?', re.IGNORECASE)


class S3AssetStorage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=MAX_POOL_CONNECTIONS,
            # Virtual-host addressing needs DNS for <bucket>.<host>, which servers reached
            # by IP or a plain host name (MinIO, Ceph, a test server) do not have.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session of its own: boto3's default session is not safe to share across
        # threads, while the client made from it is.
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    def object_key(self, key: str) -> str:
        name = f"{key[0:2]}/{key}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, data: bytes, content_type: str) -> StoredFile:
        sha256 = hashlib.sha256(data)
        md5 = hashlib.md5(data, usedforsecurity=False)
        key = sha256.hexdigest()
        stored = StoredFile(key=key, sha256=key, size=len(data), content_type=content_type)
        object_key = self.object_key(key)
        existing = self._head(object_key)
        if existing is not None and _holds(existing, len(data), md5.hexdigest()):
            return stored
        response = self._call(
            "upload",
            self._client.put_object,
            Bucket=self.bucket,
            Key=object_key,
            Body=data,
            ContentType=content_type,
            ContentMD5=base64.b64encode(md5.digest()).decode("ascii"),
            ChecksumSHA256=base64.b64encode(sha256.digest()).decode("ascii"),
        )
        if not _etag_agrees(response, md5.hexdigest()):
            # Never leave damaged bytes under a content hash: readers would trust them.
            with contextlib.suppress(StorageError):
                self._delete_object(object_key)
            raise StorageError("corrupt", f"the server stored other bytes than sent for {key}")
        return stored

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> ChunkStream:
        if not is_valid_key(key):
            raise StorageError("not_found", "no asset file under that key")
        check_range_arguments(start, end)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        # An empty object has no byte 0: ask for a range only when one is wanted.
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self._call("download", self._client.get_object, **request)
        except StorageError as error:
            if _error_code(error.__cause__) != "InvalidRange":
                raise
            raise RangeNotSatisfiable(self._size_after_invalid_range(key, error)) from error
        body = response["Body"]
        return ChunkStream(_reader(body.read), response["ContentLength"], body.close)

    def size(self, key: str) -> int | None:
        """None also when the bucket is missing: HEAD answers 404 without saying which;
        `check()` tells the two apart."""
        if not is_valid_key(key):
            return None
        head = self._head(self.object_key(key))
        return None if head is None else int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> None:
        if is_valid_key(key):
            # S3 answers 204 for a missing object too.
            self._delete_object(self.object_key(key))

    def describe(self) -> str:
        where = _without_credentials(self.endpoint_url) if self.endpoint_url else "AWS"
        prefix = f" prefix {self.prefix}/" if self.prefix else ""
        return f"S3 bucket {self.bucket}{prefix} at {where}"

    def check(self) -> None:
        from botocore.exceptions import ClientError

        with _translated("bucket check"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                status = _http_status(exc)
                if status == 404:
                    message = f"bucket {self.bucket} does not exist"
                    raise StorageError("unavailable", message) from exc
                if status == 403:
                    message = f"access to bucket {self.bucket} denied"
                    raise StorageError("unavailable", message) from exc
                raise

    def _head(self, object_key: str) -> Mapping[str, Any] | None:
        from botocore.exceptions import ClientError

        with _translated("lookup"):
            try:
                return self._client.head_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                # HEAD has no body, so no error code: 404 is all a missing object says.
                if _http_status(exc) == 404:
                    return None
                raise

    def _delete_object(self, object_key: str) -> None:
        self._call("delete", self._client.delete_object, Bucket=self.bucket, Key=object_key)

    def _call(self, action: str, operation: Callable[..., Any], **params: Any) -> Any:
        with _translated(action):
            return operation(**params)

    def _size_after_invalid_range(self, key: str, error: StorageError) -> int:
        reported = _error_details(error.__cause__).get("ActualObjectSize")
        if reported is not None and str(reported).isdigit():
            return int(reported)
        return self.size(key) or 0


def _holds(head: Mapping[str, Any], size: int, md5_hex: str) -> bool:
    """Whether an existing object already holds these bytes, so the upload can be skipped.
    A damaged object of the right length is caught by its ETag where that is an MD5."""
    return int(head.get("ContentLength", -1)) == size and _etag_agrees(head, md5_hex)


def _etag_agrees(response: Mapping[str, Any], md5_hex: str) -> bool:
    """False only when the ETag is known to be the MD5 of the stored bytes and differs.

    With server-side encryption (KMS, customer keys, and on some servers any encryption)
    the ETag is not an MD5, so it proves nothing either way."""
    if response.get("ServerSideEncryption") or response.get("SSECustomerAlgorithm"):
        return True
    match = _PLAIN_MD5_ETAG.fullmatch(str(response.get("ETag", "")))
    return match is None or match.group(1).lower() == md5_hex


def _reader(read: Callable[[int], bytes]) -> Callable[[int], bytes]:
    def read_chunk(amount: int) -> bytes:
        with _translated("download"):
            return read(amount)

    return read_chunk


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn boto3's failures into StorageError; anything else (a bug) passes unchanged."""
    try:
        yield
    except Exception as exc:
        error = _storage_error(exc, action)
        if error is None:
            raise
        raise error from exc


def _storage_error(exc: Exception, action: str) -> StorageError | None:
    """The StorageError a boto3 failure means; None for anything else (a bug to surface)."""
    from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

    if isinstance(exc, ClientError):
        code = _error_code(exc)
        message = f"S3 {action} failed: {code} {_error_details(exc).get('Message', '')}".rstrip()
        if code in _CORRUPT_CODES:
            return StorageError("corrupt", message)
        if code in {"NoSuchKey", "NotFound", "404"}:
            return StorageError("not_found", message)
        return StorageError("unavailable", message)
    if isinstance(exc, FlexibleChecksumError):
        return StorageError("corrupt", f"S3 {action} failed: {exc}")
    if isinstance(exc, (BotoCoreError, OSError)):
        return StorageError("unavailable", f"S3 {action} failed: {exc}")
    return None


def _error_details(exc: BaseException | None) -> Mapping[str, Any]:
    response = getattr(exc, "response", None)
    return response.get("Error", {}) if isinstance(response, Mapping) else {}


def _error_code(exc: BaseException | None) -> str:
    return str(_error_details(exc).get("Code", ""))


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host_and_port = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host_and_port}{parts.path}"
