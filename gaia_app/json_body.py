"""Request bodies as JSON, read one way everywhere: bounded, finite, storable.

Every JSON body (through the schemas' parser and through `/v1`) is read by `read_json`:
- nesting deeper than MAX_DEPTH is refused (400) before anything recurses on it: a 2 KB body
  nested a thousand levels deep would otherwise raise RecursionError inside the parser;
- NaN, Infinity and numbers beyond a double's range are refused (400): they are not JSON,
  PostgreSQL refuses them, and stored in SQLite they would make every later read invalid JSON;
  so are integers beyond 64 bits, which no column stores (and thousands of digits would cost
  the parser quadratic time before Python's own digit limit raised);
- an object with the same key twice is refused (400): one of the two values would be dropped
  without a word;
- a string (or key) with NUL or a lone surrogate is refused as a field error (422, 400 under
  `/v1`) naming its path, since no database or provider stores it.
A body that is not JSON at all raises `json.JSONDecodeError`, which each caller answers in its
own shape (problem+json's malformed-json, OpenAI's invalid request).
"""

from __future__ import annotations

import json
import math

from werkzeug.exceptions import RequestEntityTooLarge

from gaia_app.errors import InvalidField, InvalidRequest
from gaia_app.schemas import text_problem

MAX_DEPTH = 32
INT_LIMIT = 2**63
_INT_MAX_CHARS = len(str(INT_LIMIT)) + 1  # a sign and the digits


class _NotFinite(ValueError):
    pass


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _no_constant(name: str):
    raise _NotFinite(name)


def _bounded_int(text: str) -> int:
    if len(text) > _INT_MAX_CHARS:
        raise _NotFinite(text)
    value = int(text)
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise _NotFinite(text)
    return value


def _object_without_duplicates(pairs: list) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def request_body(request) -> bytes:
    """The body's bytes. A chunked body (no Content-Length) is cut at MAX_CONTENT_LENGTH while
    it is read; one that reached the limit is refused as too large, not parsed as cut JSON."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    return data


def loads(data: bytes | str, *, openai_paths: bool = False):
    """Parse and check one body; see the module docstring for what is refused."""
    # Text decoded here from UTF-8 holds no lone surrogate; text given as str might.
    decoded_here = isinstance(data, bytes)
    if decoded_here:
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not UTF-8: {exc.reason}", repr(data[:40]), exc.start) from None
    try:
        value = json.loads(data, parse_float=_finite_float, parse_int=_bounded_int,
                           parse_constant=_no_constant, object_pairs_hook=_object_without_duplicates)
    except _NotFinite:
        raise InvalidRequest(
            "Numbers must be finite: NaN, Infinity, numbers beyond about 1.8e308 and integers "
            "beyond 64 bits are not accepted."
        ) from None
    except _DuplicateKey as exc:
        raise InvalidRequest(f"The key {json.dumps(exc.key)} appears twice in one object.") from None
    except RecursionError:
        raise _too_deep() from None
    if decoded_here and "\\u" not in data:
        # JSON text has no raw control characters inside strings, so NUL and lone surrogates
        # can only come as \u escapes: without any, only the depth is left to check.
        _check_depth(value)
    else:
        _check(value, openai_paths)
    return value


def _too_deep() -> InvalidRequest:
    return InvalidRequest(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).")


def _check(value, openai_paths: bool) -> None:
    """Depth and text of every node, without recursion."""
    pending = [(value, (), 1)]
    while pending:
        node, path, depth = pending.pop()
        if isinstance(node, str):
            _check_text(node, path, openai_paths)
        elif isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise _too_deep()
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str):
                    _check_text(key, path + (key,), openai_paths)
                pending.append((child, path + (key,), depth + 1))


def _check_depth(value) -> None:
    """The depth alone (as `_check` counts it), visiting only arrays and objects."""
    if not isinstance(value, (dict, list)):
        return
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                pending.append((child, depth + 1))


def _check_text(text: str, path: tuple, openai_paths: bool) -> None:
    problem = text_problem(text)
    if problem:
        raise InvalidField(_path_name(path, openai_paths), problem)


def _path_name(path: tuple, openai_paths: bool) -> str | None:
    """`tags.1` (as the schemas name fields), or `messages[0].content` (as OpenAI does)."""
    if not path:
        return None
    if not openai_paths:
        return ".".join(str(part) for part in path)
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name
