"""Asset files in a local folder: `<root>/<hash[0:2]>/<hash[2:4]>/<hash>`.

Writes go to a temporary file in the destination folder, are fsynced, then renamed over the
final name with `os.replace`, so the final name only ever holds complete files, even after a
crash or power loss. A temporary file a crashed writer left behind is removed by a later
write into the same folder once it is old enough that no live writer can still own it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path

from gaia_app.storage.base import ChunkStream, StorageError, StoredFile, bytes_wanted, is_valid_key

TEMP_PREFIX = ".partial-"
TEMP_SUFFIX = ".tmp"
# A 50 MB write takes seconds; a temporary file this old belongs to a writer that died.
STALE_TEMP_SECONDS = 3600
# mkstemp creates files 0600; assets are meant to be served, and a static file server or
# backup job running as another user must be able to read them.
FILE_MODE = 0o644


class LocalAssetStorage:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / key[0:2] / key[2:4] / key

    def put(self, data: bytes, content_type: str) -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        stored = StoredFile(key=digest, sha256=digest, size=len(data), content_type=content_type)
        final = self.path_for(digest)
        try:
            if _file_size(final) == len(data):
                return stored
            final.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(final.parent)
            _write_atomically(final, data)
        except OSError as exc:
            raise StorageError("unavailable", f"cannot write {final}: {_reason(exc)}") from exc
        return stored

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> ChunkStream:
        if not is_valid_key(key):
            raise StorageError("not_found", "no asset file under that key")
        path = self.path_for(key)
        try:
            file = open(path, "rb")  # noqa: SIM115 - ChunkStream closes it
        except FileNotFoundError as exc:
            raise StorageError("not_found", f"no asset file {key}") from exc
        except OSError as exc:
            raise StorageError("unavailable", f"cannot read {path}: {_reason(exc)}") from exc
        try:
            length = bytes_wanted(start, end, os.fstat(file.fileno()).st_size)
            file.seek(start)
        except BaseException:
            file.close()
            raise
        return ChunkStream(file.read, length, file.close)

    def size(self, key: str) -> int | None:
        if not is_valid_key(key):
            return None
        try:
            return _file_size(self.path_for(key))
        except OSError as exc:
            raise StorageError("unavailable", f"cannot read {self.root}: {_reason(exc)}") from exc

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return
        # Empty hash folders stay: removing one could race a writer about to create its
        # temporary file there.
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError("unavailable", f"cannot delete {key}: {_reason(exc)}") from exc

    def describe(self) -> str:
        return f"local folder {self.root}"

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError("unavailable", f"cannot use {self.root}: {_reason(exc)}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError("unavailable", f"cannot write to {self.root}")


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _write_atomically(final: Path, data: bytes) -> None:
    fd, temp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), FILE_MODE)
            os.fsync(temp.fileno())
        os.replace(temp_name, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_folder(final.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable: without this a power loss can forget it."""
    if not hasattr(os, "O_DIRECTORY"):
        return  # not possible on every platform; the file's own fsync still holds
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder: Path) -> None:
    oldest_live = time.time() - STALE_TEMP_SECONDS
    with os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX)):
                continue
            # Another writer may sweep the same file at the same moment.
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < oldest_live:
                    os.unlink(entry.path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
