"""Where generated asset files are kept: `storage_from_url` turns the ASSET_STORAGE_URL
setting into an `AssetStorage` (a local folder by default, or an S3-compatible bucket).

The S3 backend module, and with it boto3, is imported only when an s3:// URL is given, so a
process that stores files locally never loads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from gaia_app.storage.base import (
    CHUNK_SIZE,
    AssetStorage,
    RangeNotSatisfiable,
    StorageError,
    StoredFile,
    parse_range,
)
from gaia_app.storage.local import LocalAssetStorage

if TYPE_CHECKING:
    from gaia_app.storage.s3 import S3AssetStorage

__all__ = [
    "CHUNK_SIZE",
    "AssetStorage",
    "LocalAssetStorage",
    "RangeNotSatisfiable",
    "StorageError",
    "StoredFile",
    "parse_range",
    "storage_from_url",
]

DEFAULT_FOLDER = "assets"  # under the instance folder
_SETTING = "ASSET_STORAGE_URL"
_ACCEPTED = "use file:///absolute/path, a plain path or s3://bucket/prefix"
# S3's rule for bucket names (3 to 63 lower-case letters, digits, dots and hyphens).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def storage_from_url(
    url: str | None, *, instance_path: str, endpoint_url: str | None = None
) -> AssetStorage:
    """The store `url` names. None or "" is `<instance_path>/assets`; a relative plain path
    is taken relative to `instance_path` (not the working directory, which differs between
    a shell, gunicorn and celery). `endpoint_url` (S3_ENDPOINT_URL) is only used for s3://.

    Raises ValueError with a one-line message for a URL that names no store. Messages never
    repeat the whole URL, which could hold a secret.
    """
    if not url or not url.strip():
        return LocalAssetStorage(Path(instance_path) / DEFAULT_FOLDER)
    url = url.strip()
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # "C:\..." is a path, not a scheme
        return LocalAssetStorage(Path(instance_path) / Path(url).expanduser())
    if parts.scheme == "file":
        return LocalAssetStorage(_file_url_path(parts.netloc, parts.path))
    if parts.scheme == "s3":
        return _s3_storage(parts.netloc, parts.path, parts.query, endpoint_url)
    raise ValueError(f"{_SETTING} has an unsupported scheme {parts.scheme!r}: {_ACCEPTED}")


def _file_url_path(host: str, path: str) -> Path:
    if host not in ("", "localhost"):
        raise ValueError(f"{_SETTING} names a file on another host ({host!r}): {_ACCEPTED}")
    if not path.startswith("/"):
        raise ValueError(f"{_SETTING} file:// URL needs an absolute path: {_ACCEPTED}")
    return Path(unquote(path))


def _s3_storage(
    netloc: str, path: str, query: str, endpoint_url: str | None
) -> S3AssetStorage:
    if "@" in netloc:
        raise ValueError(
            f"{_SETTING} must not hold credentials; give them as AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        )
    if not _BUCKET_NAME.fullmatch(netloc):
        raise ValueError(f"{_SETTING} needs a valid bucket name after s3://: {_ACCEPTED}")
    if query:
        raise ValueError(f"{_SETTING} takes no query string: {_ACCEPTED}")
    if endpoint_url:
        _check_endpoint(endpoint_url)
    prefix = "/".join(part for part in unquote(path).split("/") if part)
    from gaia_app.storage.s3 import S3AssetStorage

    return S3AssetStorage(netloc, prefix, endpoint_url=endpoint_url or None)


def _check_endpoint(endpoint_url: str) -> None:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("S3_ENDPOINT_URL must be an http:// or https:// URL")
    # boto3 repeats the endpoint in its error messages, which end up in logs.
    if "@" in parts.netloc:
        raise ValueError(
            "S3_ENDPOINT_URL must not hold credentials; give them as AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        )
