"""The one small interface every asset file store implements, the data and errors it speaks
in, and the HTTP byte-range helper the download endpoint uses.

Files are addressed by content: a file's key is the SHA-256 hex digest of its bytes, the same
on every backend, so the same bytes are stored once and moving files from one backend to
another needs no database change. Nothing here imports a backend, Flask or boto3.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

# Big enough that a 50 MB file is a few hundred reads, small enough that a download never
# holds more than this in memory per request.
CHUNK_SIZE = 64 * 1024

_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass(frozen=True)
class StoredFile:
    key: str  # what `open_range`, `size`, `exists` and `delete` take
    sha256: str  # hex digest of the bytes
    size: int
    content_type: str


class StorageError(Exception):
    """The store failed. `kind` says how:

    "unavailable" (cannot reach the backend, permission refused, bucket or folder missing),
    "not_found" (no file under that key) and "corrupt" (the bytes stored or read are not the
    bytes that were written, or an upload was refused for a checksum mismatch).
    """

    KINDS = frozenset({"unavailable", "not_found", "corrupt"})

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown StorageError kind {kind!r}")
        super().__init__(message)
        self.kind = kind


class RangeNotSatisfiable(Exception):
    """A byte range that starts past the end of the file (HTTP 416). `size` is the file's
    length, for the `Content-Range: bytes */<size>` header the response must carry."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for a file of {size} bytes")
        self.size = size


class AssetStorage(Protocol):
    def put(self, data: bytes, content_type: str) -> StoredFile:
        """Store `data` under its SHA-256; storing the same bytes again changes nothing."""

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start..end` (inclusive; `end=None` is to the end) in chunks of at most
        CHUNK_SIZE. Raises at once, before the first chunk: StorageError("not_found") when
        there is no such file, RangeNotSatisfiable when `start` is past its end. The iterator
        has `close()`; call it (or exhaust the iterator) to release the file or connection."""

    def size(self, key: str) -> int | None:
        """The file's length in bytes, None when there is no such file."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the file; a missing file is not an error."""

    def describe(self) -> str:
        """Where files go, for /health and logs. Never contains a secret."""

    def check(self) -> None:
        """Raise StorageError when the backend cannot be used right now."""


def is_valid_key(key: str) -> bool:
    """Only a SHA-256 hex digest is a key, so a key taken from a URL can never name a path
    or object outside the store."""
    return isinstance(key, str) and _KEY_PATTERN.fullmatch(key) is not None


def check_range_arguments(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range {start}-{end}")


def bytes_wanted(start: int, end: int | None, size: int) -> int:
    """How many bytes `open_range(start, end)` yields from a file of `size` bytes; raises
    RangeNotSatisfiable when the range starts past the end (reading a whole empty file is
    fine: zero bytes)."""
    check_range_arguments(start, end)
    if start == 0 and end is None:
        return size
    if start >= size:
        raise RangeNotSatisfiable(size)
    last = size - 1 if end is None else min(end, size - 1)
    return last - start + 1


class ChunkStream:
    """An iterator of chunks read from an open file or response body, closed when exhausted,
    on error or by `close()` (which a WSGI server calls on a response iterable)."""

    def __init__(
        self, read: Callable[[int], bytes], length: int, close: Callable[[], None]
    ) -> None:
        self._read = read
        self._remaining = length
        self._close = close
        self._closed = False

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> bytes:
        if self._closed or self._remaining <= 0:
            self.close()
            raise StopIteration
        try:
            chunk = self._read(min(CHUNK_SIZE, self._remaining))
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StorageError("corrupt", f"file ended {self._remaining} bytes early")
        self._remaining -= len(chunk)
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range a `Range` header asks of a representation of `size` bytes, as
    inclusive `(first, last)` offsets (RFC 9110 section 14).

    Returns None when the whole file should be sent with 200: no header, a unit other than
    bytes, several ranges (allowed by the RFC to be ignored; multipart answers are not worth
    it here), or a header that does not parse (the RFC lets a server ignore an invalid one).
    Raises RangeNotSatisfiable (416) when the one range asks for nothing that exists: a first
    byte at or past the end, or a zero-length suffix.
    """
    if not header:
        return None
    unit, separator, range_set = header.partition("=")
    if not separator or unit.strip().lower() != "bytes":
        return None
    # Empty list elements ("bytes=0-1,") are allowed by the list syntax and mean nothing.
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    match = _BYTE_RANGE.fullmatch(specs[0])
    if match is None or match.group(0) == "-":
        return None
    first_text, last_text = match.groups()
    if not first_text:
        return _suffix_range(int(last_text), size)
    first = int(first_text)
    last = int(last_text) if last_text else None
    if last is not None and last < first:
        return None  # an invalid range-spec, not an unsatisfiable one
    if first >= size:
        raise RangeNotSatisfiable(size)
    return first, size - 1 if last is None else min(last, size - 1)


def _suffix_range(length: int, size: int) -> tuple[int, int] | None:
    if length == 0:
        raise RangeNotSatisfiable(size)
    if size == 0:
        # The RFC calls a non-zero suffix satisfiable, yet an empty file has no byte range
        # to name in Content-Range: send the (empty) whole with 200.
        return None
    return max(size - length, 0), size - 1
